"""A minimal asyncio HTTP/1.1 server: enough for botocore clients and PutMedia's full duplex.

Why not a framework: PutMedia streams a chunked request body while the server streams chunked
acknowledgements back on the same connection, which WSGI servers cannot do and which needs no more
than this.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from .errors import ApiError

log = logging.getLogger(__name__)
LINGER_SECONDS = 2.0  # how long a closing connection still reads what the client sends
LINGER_BYTES = 16 * 1024 * 1024

MAX_HEADER_BYTES = 64 * 1024
MAX_JSON_BODY = 1024 * 1024


class BadRequest(Exception):
    pass


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    reader: asyncio.StreamReader
    _remaining: int | None = None  # Content-Length left; None for chunked
    _chunked: bool = False
    _done: bool = False

    @property
    def unread(self) -> bool:
        """Some of the body may still be on its way (the handler stopped reading early)."""
        return not self._done and (self._chunked or bool(self._remaining))

    async def iter_body(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives (chunked or Content-Length)."""
        while not self._done:
            if self._chunked:
                line = await self.reader.readline()
                if not line:
                    raise ConnectionResetError("client closed inside a chunked body")
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise BadRequest(f"bad chunk size line {line[:40]!r}") from None
                if size == 0:
                    while (await self.reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    return
                data = await self.reader.readexactly(size)
                await self.reader.readexactly(2)
                yield data
            else:
                if not self._remaining:
                    self._done = True
                    return
                data = await self.reader.read(min(self._remaining, 256 * 1024))
                if not data:
                    raise ConnectionResetError("client closed inside the body")
                self._remaining -= len(data)
                yield data

    async def json(self) -> dict:
        body = bytearray()
        async for chunk in self.iter_body():
            body += chunk
            if len(body) > MAX_JSON_BODY:
                raise ApiError("request body too large")
        if not body:
            return {}
        try:
            value = json.loads(body)
        except ValueError:
            raise ApiError("request body is not JSON") from None
        if not isinstance(value, dict):
            raise ApiError("request body must be a JSON object")
        return value


@dataclass
class Response:
    writer: asyncio.StreamWriter
    started: bool = False
    chunked: bool = False
    keep_alive: bool = True
    headers: dict[str, str] = field(default_factory=dict)

    def _head(self, status: int, headers: dict[str, str]) -> bytes:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
                  401: "Unauthorized", 403: "Forbidden"}.get(status, "Status")
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, status: int, body: bytes, content_type: str = "application/json",
                   extra: dict[str, str] | None = None) -> None:
        headers = {"Content-Type": content_type, "Content-Length": str(len(body)),
                   "x-amzn-RequestId": "local", **(extra or {})}
        if not self.keep_alive:
            headers["Connection"] = "close"
        self.writer.write(self._head(status, headers) + body)
        self.started = True
        await self.writer.drain()

    async def send_json(self, value: dict, status: int = 200) -> None:
        await self.send(status, json.dumps(value).encode())

    async def send_error(self, err: ApiError) -> None:
        body = json.dumps({"message": err.message, "Message": err.message}).encode()
        await self.send(err.status, body, extra={"x-amzn-ErrorType": err.error_type})

    async def start_stream(self, content_type: str) -> None:
        """Begin a chunked 200 response; the connection closes after it."""
        self.keep_alive = False
        self.chunked = True
        self.writer.write(self._head(200, {
            "Content-Type": content_type, "Transfer-Encoding": "chunked",
            "x-amzn-RequestId": "local", "Connection": "close"}))
        self.started = True
        await self.writer.drain()

    def write_chunk(self, *parts: bytes) -> None:
        size = sum(len(p) for p in parts)
        if size:
            self.writer.writelines((f"{size:x}\r\n".encode(), *parts, b"\r\n"))

    async def end_stream(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()


Handler = Callable[[Request, Response], Awaitable[None]]


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           route: Callable[[str, str], Handler | None]) -> None:
    request = None
    try:
        while True:
            request = await _read_request(reader)
            if request is None:
                return
            response = Response(writer)
            response.keep_alive = request.headers.get("connection", "").lower() != "close"
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            handler = route(request.method, request.path)
            try:
                if handler is None:
                    raise ApiError(f"no operation at {request.method} {request.path}")
                await handler(request, response)
            except ApiError as err:
                if response.started:
                    raise
                await response.send_error(err)
            if not response.keep_alive:
                return
            async for _ in request.iter_body():  # drain an unread body before the next request
                pass
    except (ConnectionError, asyncio.IncompleteReadError, BadRequest) as err:
        log.debug("connection ended: %s", err)
    except asyncio.CancelledError:
        writer.close()
        return
    except Exception:  # a bug in a handler must not take the server down
        log.exception("request failed")
    if request is not None and request.unread:
        await _lingering_close(reader, writer)
    else:
        writer.close()


async def _lingering_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           seconds: float = LINGER_SECONDS, limit: int = LINGER_BYTES) -> None:
    """Close after the client has stopped sending: half-close, then read and throw away what
    still comes, for a bounded time and size. A socket closed with unread input is reset by the
    kernel, and the reset can destroy the response the client has not read yet (a PutMedia
    ended early with an error ack, while the camera is still sending): Apache's lingering
    close."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        if writer.can_write_eof():
            writer.write_eof()
        read = 0
        while read < limit and (left := deadline - loop.time()) > 0:
            chunk = await asyncio.wait_for(reader.read(64 * 1024), left)
            if not chunk:
                break
            read += len(chunk)
    except (ConnectionError, OSError, TimeoutError):
        pass
    finally:
        writer.close()


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as err:
        if err.partial.strip():
            raise BadRequest("connection closed inside request headers") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest("request headers too large") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, _version = lines[0].split(" ", 2)
    except ValueError:
        raise BadRequest(f"bad request line {lines[0][:80]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    length = None if chunked else int(headers.get("content-length", "0") or 0)
    return Request(method, target.split("?", 1)[0], headers, reader, length, chunked)


async def start_server(route: Callable[[str, str], Handler | None],
                       sock: socket.socket) -> asyncio.AbstractServer:
    """Serve on `sock`, bound and listening already (infra.local.ports.listen)."""
    return await asyncio.start_server(
        lambda r, w: serve_connection(r, w, route), sock=sock, limit=MAX_HEADER_BYTES)
