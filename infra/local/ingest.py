"""PutMedia as AWS does it: a chunked MKV body in, newline-separated JSON acknowledgements out.

Each Cluster becomes a fragment. A fragment is acknowledged BUFFERING when its cluster begins,
then RECEIVED and PERSISTED once complete and stored; a bad fragment gets an ERROR ack with AWS's
error id. Invalid MKV, an oversized fragment or a deleted stream end the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from consumer.wire import FragmentReader, MkvError, writer
from consumer.wire.model import Fragment

from .errors import ConnectionLimitExceeded, InvalidArgument
from .http import Request, Response
from .limits import Limits
from .store import StoredFragment, Stream, StreamStore

log = logging.getLogger(__name__)

# AWS's PutMedia error ids.
STREAM_READ_ERROR = (4000, "STREAM_READ_ERROR")
MAX_FRAGMENT_SIZE_REACHED = (4001, "MAX_FRAGMENT_SIZE_REACHED")
MAX_FRAGMENT_DURATION_REACHED = (4002, "MAX_FRAGMENT_DURATION_REACHED")
MAX_CONNECTION_DURATION_REACHED = (4003, "MAX_CONNECTION_DURATION_REACHED")
FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS = (4004, "FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS")
INVALID_MKV_DATA = (4006, "INVALID_MKV_DATA")
INVALID_PRODUCER_TIMESTAMP = (4007, "INVALID_PRODUCER_TIMESTAMP")
STREAM_NOT_ACTIVE = (4008, "STREAM_NOT_ACTIVE")


class SessionEnded(Exception):
    """The session cannot go on; the ERROR ack has been sent."""


@dataclass
class _Timing:
    relative: bool
    start_ms: int = 0


class PutMediaSession:
    def __init__(self, stream: Stream, response: Response, timing: _Timing, limits: Limits):
        self.stream = stream
        self.response = response
        self.timing = timing
        self.limits = limits
        self.reader = FragmentReader(cluster_ends_fragment=True)
        self.started = time.monotonic()
        self.announced: tuple[int, int, int] | None = None  # (number, timecode, server ms)
        self.last_producer_ms: int | None = None
        self.last_ack = time.monotonic()
        self.persisted = 0

    def ack(self, event: str, timecode: int | None = None, number: int | None = None,
            error: tuple[int, str] | None = None) -> None:
        body: dict = {"EventType": event}
        if timecode is not None:
            body["FragmentTimecode"] = timecode
        if number is not None:
            body["FragmentNumber"] = str(number)
        if error is not None:
            body["ErrorId"], body["ErrorCode"] = error
        self.response.write_chunk(json.dumps(body).encode() + b"\n")
        self.last_ack = time.monotonic()

    def fail(self, error: tuple[int, str], detail: str, timecode: int | None = None) -> None:
        number = self.announced[0] if self.announced else None
        log.info("PutMedia %s: %s %s", self.stream.info.name, error[1], detail)
        self.ack("ERROR", timecode, number, error)
        raise SessionEnded(detail)

    async def run(self, request: Request) -> None:
        idle = asyncio.create_task(self._idle_acks())
        try:
            async for chunk in request.iter_body():
                self._check_session()
                try:
                    fragments = self.reader.feed(chunk)
                except MkvError as err:
                    for fragment in getattr(err, "fragments", []):
                        self._complete(fragment)
                    self.fail(INVALID_MKV_DATA, str(err))
                for fragment in fragments:
                    self._complete(fragment)
                self._announce_pending()
                await self.response.writer.drain()
            try:
                fragments = self.reader.close()
            except MkvError as err:
                self.fail(INVALID_MKV_DATA, str(err))
            for fragment in fragments:
                self._complete(fragment)
        except SessionEnded:
            pass
        finally:
            idle.cancel()
        await self.response.end_stream()

    def _check_session(self) -> None:
        if self.stream.deleted:
            self.fail(STREAM_NOT_ACTIVE, "stream was deleted")
        if time.monotonic() - self.started > self.limits.putmedia_max_connection_seconds:
            self.fail(MAX_CONNECTION_DURATION_REACHED, "connection open too long")

    def _announce_pending(self) -> None:
        pending_size = self.reader.offset - (self.reader.pending_offset or self.reader.offset)
        if pending_size > self.limits.max_fragment_bytes:
            self.fail(MAX_FRAGMENT_SIZE_REACHED, f"fragment over {self.limits.max_fragment_bytes} "
                      "bytes", self.reader.pending_timecode)
        timecode = self.reader.pending_timecode
        if timecode is not None and self.announced is None:
            self._announce(timecode)

    def _announce(self, timecode: int) -> None:
        server_ms = int(time.time() * 1000)
        number = self.stream.next_fragment_number(server_ms)
        self.announced = (number, timecode, server_ms)
        self.ack("BUFFERING", timecode, number)

    def _complete(self, fragment: Fragment) -> None:
        if fragment.cluster_timecode is None:
            return  # tags with no cluster: nothing to store
        timecode = fragment.cluster_timecode
        if self.announced is None:
            self._announce(timecode)
        number, _, server_ms = self.announced
        scale_ms = fragment.timecode_scale / 1e6
        if fragment.size > self.limits.max_fragment_bytes:
            self.fail(MAX_FRAGMENT_SIZE_REACHED, f"fragment of {fragment.size} bytes", timecode)
        duration_ms = int(fragment.duration * 1000)
        if duration_ms > self.limits.max_fragment_ms:
            self._reject(MAX_FRAGMENT_DURATION_REACHED, timecode, number)
            return
        producer_ms = int(timecode * scale_ms) + (self.timing.start_ms if self.timing.relative else 0)
        if producer_ms < 0:
            self._reject(INVALID_PRODUCER_TIMESTAMP, timecode, number)
            return
        if self.last_producer_ms is not None and producer_ms <= self.last_producer_ms:
            self._reject(FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS, timecode, number)
            return
        self.last_producer_ms = producer_ms
        self.ack("RECEIVED", timecode, number)
        self.stream.append(_stored(fragment, number, server_ms, producer_ms, duration_ms))
        self.persisted += 1
        self.ack("PERSISTED", timecode, number)
        self.announced = None

    def _reject(self, error: tuple[int, str], timecode: int, number: int) -> None:
        log.info("PutMedia %s: fragment %s rejected: %s", self.stream.info.name, number, error[1])
        self.ack("ERROR", timecode, number, error)
        self.announced = None

    async def _idle_acks(self) -> None:
        """AWS sends IDLE acks while a session has nothing else to acknowledge."""
        while True:
            await asyncio.sleep(self.limits.idle_ack_seconds)
            if time.monotonic() - self.last_ack >= self.limits.idle_ack_seconds:
                self.ack("IDLE")


def _stored(fragment: Fragment, number: int, server_ms: int, producer_ms: int,
            duration_ms: int) -> StoredFragment:
    head = writer.ebml_header() + writer.segment_start() + writer.info(fragment.timecode_scale)
    head += writer.tracks(fragment.tracks)
    media = writer.cluster(fragment.cluster_timecode, fragment.frames)
    if fragment.tags:
        media += writer.tags(fragment.tags)
    return StoredFragment(number, server_ms, producer_ms, duration_ms,
                          size=len(head) + len(media), head=head, media=media)


async def put_media(store: StreamStore, limits: Limits, request: Request,
                    response: Response) -> None:
    headers = request.headers
    stream = store.get(headers.get("x-amzn-stream-name"), headers.get("x-amzn-stream-arn"))
    timing = _timing(headers)
    limits.check_call_rate(stream.calls["PutMedia"], "PutMedia", stream.info.name)
    if stream.putmedia_active >= 1:
        raise ConnectionLimitExceeded(
            f"Stream {stream.info.name} already has a PutMedia connection; one is allowed.")
    stream.putmedia_active += 1
    try:
        await response.start_stream("application/json")
        await PutMediaSession(stream, response, timing, limits).run(request)
    finally:
        stream.putmedia_active -= 1


def _timing(headers: dict[str, str]) -> _Timing:
    kind = headers.get("x-amzn-fragment-timecode-type", "ABSOLUTE").upper()
    if kind not in ("ABSOLUTE", "RELATIVE"):
        raise InvalidArgument(
            f"x-amzn-fragment-timecode-type must be ABSOLUTE or RELATIVE, not {kind!r}")
    if kind == "ABSOLUTE":
        return _Timing(relative=False)
    raw = headers.get("x-amzn-producer-start-timestamp")
    try:
        start = float(raw)
    except (TypeError, ValueError):
        raise InvalidArgument("RELATIVE timecodes need x-amzn-producer-start-timestamp "
                              f"in seconds since the epoch, got {raw!r}") from None
    return _Timing(relative=True, start_ms=int(start * 1000))
