"""GetMedia for one stream, for as long as the consumer runs: fragments out, reconnects hidden.

Starts after the stream's checkpoint (FRAGMENT_NUMBER), else at NOW or EARLIEST; a dropped
connection or an ended response resumes with the last continuation token; the connection is
renewed before AWS's 45-minute limit; ClientLimitExceeded / ConnectionLimitExceeded and network
errors back off with jitter; GetDataEndpoint is cached and refreshed after an error. A deleted
stream ends the iteration with StreamGone. `stop()` interrupts a blocked read from another thread.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError

from consumer.cloud.aws import AwsContext
from consumer.cloud.backoff import Backoff
from consumer.wire import Fragment, FragmentReader, MkvError, iter_fragments

log = logging.getLogger(__name__)

RENEW_AFTER_SECONDS = 40 * 60  # AWS closes GetMedia connections at 45 minutes
THROTTLED = {"ClientLimitExceededException", "ConnectionLimitExceededException"}


class StreamGone(Exception):
    """The stream no longer exists (deleted): stop reading it."""


class MediaSource:
    def __init__(self, aws: AwsContext, stream_name: str, stream_arn: str, start: str = "NOW",
                 after_fragment: int | None = None, backoff: Backoff | None = None,
                 renew_after: float = RENEW_AFTER_SECONDS):
        self.aws = aws
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.start = start
        self.after_fragment = after_fragment
        self.backoff = backoff or Backoff(base=0.5, cap=10.0)
        self.renew_after = renew_after
        self.continuation_token: str | None = None
        self.connections = 0
        self.state = "starting"
        self._endpoint: str | None = None
        self._payload = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            payload = self._payload
        if payload is not None:
            _interrupt(payload)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def selector(self) -> dict:
        if self.continuation_token:
            return {"StartSelectorType": "CONTINUATION_TOKEN",
                    "ContinuationToken": self.continuation_token}
        if self.after_fragment is not None:
            return {"StartSelectorType": "FRAGMENT_NUMBER",
                    "AfterFragmentNumber": str(self.after_fragment)}
        return {"StartSelectorType": self.start}

    def fragments(self) -> Iterator[Fragment]:
        failures = 0
        while not self._stopping.is_set():
            try:
                got_any = False
                for fragment in self._one_connection():
                    got_any = True
                    failures = 0
                    yield fragment
                # The response ended (caught up and idle, or renewal): reconnect.
                if not got_any:
                    self._wait(self.backoff.delay(1))
            except StreamGone:
                self.state = "gone"
                raise
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                if code == "ResourceNotFoundException":
                    self.state = "gone"
                    raise StreamGone(f"stream {self.stream_name} not found") from None
                failures += 1
                self._endpoint = None
                level = logging.INFO if code in THROTTLED else logging.WARNING
                log.log(level, "stream %s: GetMedia %s; retrying", self.stream_name, code)
                self.state = f"backing off ({code})"
                self._wait(self.backoff.delay(failures))
            except (BotoCoreError, OSError, MkvError) as err:
                failures += 1
                self._endpoint = None
                if not self._stopping.is_set():
                    log.warning("stream %s: GetMedia connection failed (%s); resuming from %s",
                                self.stream_name, err, self.continuation_token or self.start)
                    self.state = "reconnecting"
                    self._wait(self.backoff.delay(failures))
        self.state = "stopped"

    def _one_connection(self) -> Iterator[Fragment]:
        client = self.aws.client("kinesis-video-media", endpoint_url=self._data_endpoint(),
                                 read_timeout=120)
        selector = self.selector()
        payload = client.get_media(StreamARN=self.stream_arn, StartSelector=selector)["Payload"]
        with self._lock:
            self._payload = payload
        if self._stopping.is_set():
            payload.close()
            return
        self.connections += 1
        self.state = "connected"
        log.info("stream %s: GetMedia connected (%s)", self.stream_name,
                 selector["StartSelectorType"])
        opened = time.monotonic()
        try:
            for fragment in iter_fragments(payload, reader=FragmentReader()):
                if fragment.error is not None:
                    log.warning("stream %s: %s", self.stream_name, fragment.error)
                    if not fragment.error.retryable:
                        raise StreamGone(str(fragment.error))
                    return
                if fragment.fragment_number is None:
                    continue
                yield fragment
                self.continuation_token = (fragment.continuation_token
                                           or str(fragment.fragment_number))
                if time.monotonic() - opened > self.renew_after:
                    log.info("stream %s: renewing GetMedia before the 45-minute limit",
                             self.stream_name)
                    return
        except (ValueError, AttributeError, HTTPError) as err:
            if self._stopping.is_set():
                return  # stop() shut the connection under the read
            # a dropped connection (urllib3's ProtocolError, ReadTimeoutError): reconnect
            raise OSError(str(err)) from None
        finally:
            with self._lock:
                self._payload = None
            payload.close()

    def _data_endpoint(self) -> str:
        if self._endpoint is None:
            control = self.aws.client("kinesisvideo")
            self._endpoint = control.get_data_endpoint(
                StreamARN=self.stream_arn, APIName="GET_MEDIA")["DataEndpoint"]
        return self._endpoint

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


def _interrupt(payload) -> None:
    """Wake a thread blocked reading `payload` from another thread.

    Closing the response would wait for the reader (the buffered reader holds its lock while
    blocked in recv), so shut the socket down instead: the blocked recv returns at once, and the
    reading thread closes the response itself.
    """
    raw = getattr(payload, "_raw_stream", payload)  # botocore StreamingBody -> urllib3 response
    connection = getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is None:
        # A "Connection: close" response has left its connection: its socket is reached through
        # http.client's reader (BufferedReader -> SocketIO -> socket).
        reader = getattr(getattr(raw, "_fp", None), "fp", None)
        sock = getattr(getattr(reader, "raw", None), "_sock", None)
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
        else:
            payload.close()
    except OSError:
        pass  # already closed: nothing left to wake

