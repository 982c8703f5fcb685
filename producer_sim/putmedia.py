"""The PutMedia client: one full-duplex HTTP/1.1 connection that streams MKV up and reads acks down.

AWS's protocol: POST {endpoint}/putMedia with the stream name, the timecode type and a SigV4
signature (service `kinesisvideo`, payload `UNSIGNED-PAYLOAD` since the body streams) in headers,
and a chunked body holding one MKV stream (header, then a Cluster per fragment). While the body is
still going up, the service answers 200 and streams JSON acknowledgements, one per line, in a
chunked response: BUFFERING, RECEIVED, PERSISTED, ERROR (with ErrorId/ErrorCode) and IDLE
keep-alives. A non-200 answer carries `x-amzn-ErrorType` and a JSON `{"message": ...}`.

`PutMediaConnection` is the transport (asyncio streams: the caller sends, a reader task parses);
what to do with acks and errors (resend, skip, back off) is the camera's business, helped by the
explicit classification: `Ack.action` (in `acks`, with the ack model and parser) and
`PutMediaError.retryable` here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from .acks import Ack, AckParser

log = logging.getLogger(__name__)

SERVICE_NAME = "kinesisvideo"
USER_AGENT = "kvs-analytics-producer-sim/0.1"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# AWS closes a PutMedia connection after 45 minutes (error 4003); renew well before.
AWS_MAX_CONNECTION_S = 45 * 60
DEFAULT_MAX_CONNECTION_S = 40 * 60


# x-amzn-ErrorType values of a non-200 answer that pass with time; every other 4xx is fatal.
RETRYABLE_ERROR_TYPES = frozenset({
    "ConnectionLimitExceededException", "ClientLimitExceededException", "LimitExceededException",
    "ThrottlingException", "ThrottledException", "ServiceUnavailableException",
    "InternalFailure", "InternalServerError", "InternalServiceError", "ExpiredTokenException",
})
FATAL_ERROR_TYPES = frozenset({
    "ResourceNotFoundException", "InvalidArgumentException", "NotAuthorizedException",
    "AccessDeniedException", "InvalidEndpointException", "UnrecognizedClientException",
    "InvalidSignatureException", "IncompleteSignature", "MissingAuthenticationToken",
    "ResourceInUseException",
})



class PutMediaError(Exception):
    """PutMedia failed; `retryable` says whether reconnecting (with backoff) may help."""

    retryable = True


class PutMediaConnectionError(PutMediaError):
    """The connection could not be made, was reset, or ended early: always retryable."""

    retryable = True


class PutMediaHttpError(PutMediaError):
    """A non-200 answer: HTTP status, x-amzn-ErrorType and the service's message."""

    def __init__(self, status: int, error_type: str | None, message: str):
        self.status = status
        self.error_type = error_type
        self.message = message
        kind = error_type or "HTTP error"
        super().__init__(f"PutMedia refused: {status} {kind}: {message}".rstrip(": "))

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        if self.error_type in RETRYABLE_ERROR_TYPES:
            return True
        if self.error_type in FATAL_ERROR_TYPES:
            return False
        return self.status >= 500 or self.status in (408, 429)


def http_error(status: int, headers: dict[str, str], body: bytes) -> PutMediaHttpError:
    error_type = headers.get("x-amzn-errortype") or None
    if error_type:
        error_type = error_type.split(":", 1)[0].strip()
    message = ""
    try:
        obj = json.loads(body.decode("utf-8", errors="replace") or "{}")
        if isinstance(obj, dict):
            message = str(obj.get("message") or obj.get("Message") or "")
            error_type = error_type or obj.get("__type", "").split("#")[-1] or None
    except (ValueError, AttributeError):
        message = body.decode("utf-8", errors="replace").strip()[:500]
    return PutMediaHttpError(status, error_type, message)


def sign_request(url: str, headers: dict[str, str], region: str, credentials) -> dict[str, str]:
    """SigV4-sign a PutMedia request head (botocore's signer); returns the headers to send."""
    if hasattr(credentials, "get_frozen_credentials"):
        credentials = credentials.get_frozen_credentials()
    request = AWSRequest(method="POST", url=url, headers=dict(headers), data=b"")
    request.headers["X-Amz-Content-SHA256"] = UNSIGNED_PAYLOAD
    SigV4Auth(credentials, SERVICE_NAME, region).add_auth(request)
    return dict(request.headers.items())


_END = object()


class PutMediaConnection:
    """One PutMedia request: `open()`, `send()` MKV bytes (one HTTP chunk each), `finish()`,
    and `next_ack()` until it returns None (the response ended). Always `close()`.
    """

    def __init__(self, endpoint: str, *, region: str, credentials, stream_name: str | None = None,
                 stream_arn: str | None = None, timecode_type: str = "ABSOLUTE",
                 producer_start_timestamp: float | None = None, connect_timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None):
        if bool(stream_name) == bool(stream_arn):
            raise ValueError("give exactly one of stream_name and stream_arn")
        if timecode_type not in ("ABSOLUTE", "RELATIVE"):
            raise ValueError(f"timecode type must be ABSOLUTE or RELATIVE, not {timecode_type!r}")
        if timecode_type == "RELATIVE" and producer_start_timestamp is None:
            raise ValueError("RELATIVE timecodes need producer_start_timestamp")
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"bad PutMedia endpoint {endpoint!r}: expected http(s)://host[:port]")
        self.endpoint = endpoint
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        default_port = self.port == (443 if self.secure else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.path = parts.path.rstrip("/") + "/putMedia"
        self.url = f"{parts.scheme}://{self.host_header}{self.path}"
        self.region = region
        self.credentials = credentials
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.timecode_type = timecode_type
        self.producer_start_timestamp = producer_start_timestamp
        self.connect_timeout = connect_timeout
        self.ssl_context = ssl_context
        self.status: int | None = None
        self.response_headers: dict[str, str] = {}
        self.opened_at: float | None = None
        self.bytes_sent = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._acks: asyncio.Queue = asyncio.Queue()
        self._read_task: asyncio.Task | None = None
        self._error: PutMediaError | None = None
        self._ended = False

    def request_headers(self) -> dict[str, str]:
        headers = {
            "Host": self.host_header,
            "User-Agent": USER_AGENT,
            "Content-Type": "application/octet-stream",
            "Transfer-Encoding": "chunked",
            "Connection": "keep-alive",
            "x-amzn-fragment-timecode-type": self.timecode_type,
            # The AWS producer SDKs ask for acknowledgements explicitly; so do we.
            "x-amzn-fragment-acknowledgment-required": "1",
        }
        if self.stream_name:
            headers["x-amzn-stream-name"] = self.stream_name
        else:
            headers["x-amzn-stream-arn"] = self.stream_arn
        if self.timecode_type == "RELATIVE":
            headers["x-amzn-producer-start-timestamp"] = f"{self.producer_start_timestamp:.3f}"
        return sign_request(self.url, headers, self.region, self.credentials)

    def request_head(self) -> bytes:
        lines = [f"POST {self.path} HTTP/1.1"]
        lines.extend(f"{name}: {value}" for name, value in self.request_headers().items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    @property
    def age(self) -> float:
        return 0.0 if self.opened_at is None else time.monotonic() - self.opened_at

    async def open(self) -> None:
        context = None
        if self.secure:
            context = self.ssl_context or ssl.create_default_context()
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=context,
                                        server_hostname=self.host if context else None),
                self.connect_timeout)
        except TimeoutError:
            raise PutMediaConnectionError(
                f"cannot connect to {self.endpoint}: no answer in {self.connect_timeout:g} s"
            ) from None
        except OSError as err:
            raise PutMediaConnectionError(f"cannot connect to {self.endpoint}: {err}") from None
        self.opened_at = time.monotonic()
        self._read_task = asyncio.create_task(self._read_response(), name="putmedia-reader")
        await self._write(self.request_head(), count=False)

    async def send(self, data: bytes) -> None:
        """Send bytes of the MKV stream as one HTTP chunk."""
        if not data:
            return
        await self._write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")

    async def finish(self) -> None:
        """End the request body; acks for what was sent still arrive on `next_ack`."""
        await self._write(b"0\r\n\r\n", count=False)

    async def _write(self, data: bytes, count: bool = True) -> None:
        if self._error is not None:
            raise self._error
        if self._writer is None:
            raise PutMediaConnectionError("PutMedia connection is not open")
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError) as err:
            # The answer (say, a 404 sent before the service closed) says more than the reset.
            await self._settle_reader(1.0)
            if self._error is not None:
                raise self._error from None
            raise PutMediaConnectionError(f"PutMedia connection lost while sending: {err}") from None
        if count:
            self.bytes_sent += len(data)

    async def _settle_reader(self, timeout: float) -> None:
        if self._read_task is not None and not self._read_task.done():
            await asyncio.wait({self._read_task}, timeout=timeout)

    async def next_ack(self, timeout: float | None = None) -> Ack | None:
        """The next acknowledgement; None when the response ended cleanly.

        Raises PutMediaHttpError for a non-200 answer, PutMediaConnectionError when the connection
        broke, asyncio.TimeoutError when nothing came within `timeout`.
        """
        if self._ended:
            if self._error is not None:
                raise self._error
            return None
        item = await asyncio.wait_for(self._acks.get(), timeout)
        if item is _END:
            self._ended = True
            if self._error is not None:
                raise self._error
            return None
        return item

    async def wait_status(self, timeout: float) -> int | None:
        """Wait until the response status is known (or the reader failed)."""
        deadline = time.monotonic() + timeout
        while self.status is None and self._error is None and time.monotonic() < deadline:
            if self._read_task is None or self._read_task.done():
                break
            await asyncio.sleep(0.01)
        if self._error is not None:
            raise self._error
        return self.status

    async def close(self) -> None:
        if self._read_task is not None and not self._read_task.done():
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task  # it records its own errors; only cancellation escapes
        if self._writer is not None:
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), 2.0)
            except (TimeoutError, ConnectionError, OSError, ssl.SSLError):
                pass
            self._writer = None

    # --- response --------------------------------------------------------------------------

    async def _read_response(self) -> None:
        try:
            await self._read_head()
            if self.status != 200:
                body = b""
                try:
                    async with asyncio.timeout(5.0):
                        async for chunk in self._body():
                            body += chunk
                            if len(body) > 65536:
                                break
                except (TimeoutError, PutMediaConnectionError):
                    pass
                raise http_error(self.status, self.response_headers, body)
            parser = AckParser()
            async for chunk in self._body():
                for ack in parser.feed(chunk):
                    log.debug("ack %s", ack)
                    self._acks.put_nowait(ack)
            for ack in parser.feed(b"", final=True):
                self._acks.put_nowait(ack)
        except asyncio.CancelledError:
            raise
        except PutMediaError as err:
            self._error = err
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ssl.SSLError) as err:
            self._error = PutMediaConnectionError(f"PutMedia connection lost: {err or type(err).__name__}")
        except ValueError as err:
            self._error = PutMediaConnectionError(f"bad PutMedia response: {err}")
        finally:
            self._acks.put_nowait(_END)

    async def _read_head(self) -> None:
        reader = self._reader
        assert reader is not None
        line = await reader.readline()
        if not line:
            raise PutMediaConnectionError(f"{self.endpoint} closed the connection without an answer")
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise PutMediaConnectionError(f"bad HTTP status line from {self.endpoint}: {line[:100]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if not line:
                raise PutMediaConnectionError("connection closed inside the response headers")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if status == 100:  # Continue: the real answer follows
            return await self._read_head()
        self.response_headers = headers
        self.status = status

    async def _body(self):
        reader = self._reader
        assert reader is not None
        headers = self.response_headers
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                line = await reader.readline()
                if not line:
                    raise PutMediaConnectionError("connection closed in the middle of the response")
                size_text = line.split(b";", 1)[0].strip()
                if not size_text:
                    continue
                size = int(size_text, 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return
                while size:
                    data = await reader.read(min(size, 65536))
                    if not data:
                        raise PutMediaConnectionError(
                            "connection closed in the middle of a response chunk")
                    size -= len(data)
                    yield data
                await reader.readline()
        elif "content-length" in headers:
            remaining = int(headers["content-length"])
            while remaining:
                data = await reader.read(min(remaining, 65536))
                if not data:
                    raise PutMediaConnectionError("connection closed in the middle of the response")
                remaining -= len(data)
                yield data
        else:
            while data := await reader.read(65536):
                yield data
