"""A scriptable PutMedia endpoint for the camera simulator's tests: real HTTP on loopback.

It speaks the same protocol as AWS (and the local service), parses the body with consumer.wire's
FragmentReader, and misbehaves on demand, one script entry per connection: refuse with an AWS
error, answer a fragment with an ERROR ack, drop the connection after some fragments, or stay
silent. It runs in the test's own event loop.

An ERROR ack ends the session, as with AWS (the producer SDK: "an error ACK also means that the
inlet host has terminated the connection") and the local service (infra/local/ingest.py): nothing
after the failed fragment is stored, the response ends, and the rest of the body is read and
discarded. Only a rejection of one fragment (`FRAGMENT_REJECTIONS`) lets the session go on.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Self

from consumer.wire import Fragment, FragmentReader

# Error ids that reject one fragment while the session goes on (the local service's `_reject`).
FRAGMENT_REJECTIONS = frozenset({4002, 4004, 4007})


@dataclass
class Script:
    """How one connection behaves (defaults: a well-behaved service)."""

    refuse: tuple[int, str, str] | None = None  # (status, x-amzn-ErrorType, message)
    error_acks: dict[int, tuple[int, str]] = field(default_factory=dict)  # nth fragment -> error;
    # the session ends there unless the id is in FRAGMENT_REJECTIONS
    drop_after: int | None = None  # acknowledge this many fragments, then reset the connection
    silent: bool = False  # read everything, acknowledge nothing


@dataclass
class Connection:
    headers: dict[str, str]
    fragments: list[Fragment] = field(default_factory=list)
    raw_body: bytearray = field(default_factory=bytearray)
    chunk_sizes: list[int] = field(default_factory=list)


class FakePutMedia:
    def __init__(self, scripts: list[Script] | None = None):
        self.scripts = list(scripts or [])
        self.connections: list[Connection] = []
        self.persisted: list[Fragment] = []
        self.server: asyncio.AbstractServer | None = None
        self.url = ""

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def persisted_timecodes(self) -> list[int]:
        return [f.cluster_timecode for f in self.persisted]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0] == "POST /putMedia HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        conn = Connection(headers)
        self.connections.append(conn)
        script = self.scripts.pop(0) if self.scripts else Script()
        if script.refuse:
            status, error_type, message = script.refuse
            body = json.dumps({"message": message}).encode()
            writer.write(f"HTTP/1.1 {status} Error\r\nx-amzn-ErrorType: {error_type}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        await writer.drain()

        def ack(**body):
            data = json.dumps(body).encode() + b"\n"
            writer.write(b"%x\r\n" % len(data) + data + b"\r\n")

        parser = FragmentReader()
        count = 0
        ended = False  # an ERROR ack ended the session: the rest of the body is discarded

        def handle(fragments):
            nonlocal count, ended
            for fragment in fragments:
                conn.fragments.append(fragment)
                count += 1
                if script.drop_after is not None and count > script.drop_after:
                    return True
                if script.silent:
                    continue
                timecode = fragment.cluster_timecode
                ack(EventType="BUFFERING", FragmentTimecode=timecode, FragmentNumber=str(count))
                if count in script.error_acks:
                    error_id, code = script.error_acks[count]
                    ack(EventType="ERROR", FragmentTimecode=timecode, FragmentNumber=str(count),
                        ErrorId=error_id, ErrorCode=code)
                    if error_id not in FRAGMENT_REJECTIONS:
                        ended = True
                        writer.write(b"0\r\n\r\n")  # end the response; store nothing more
                        return False
                    continue
                ack(EventType="RECEIVED", FragmentTimecode=timecode, FragmentNumber=str(count))
                ack(EventType="PERSISTED", FragmentTimecode=timecode, FragmentNumber=str(count))
                self.persisted.append(fragment)
            return False

        while True:
            line = await reader.readline()
            if not line:
                return
            size = int(line.strip(), 16)
            if size == 0:
                await reader.readline()
                break
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            if ended:
                continue
            conn.raw_body += data
            conn.chunk_sizes.append(size)
            if handle(parser.feed(data)):
                writer.transport.abort()  # a reset, not a clean end of the response
                return
            await writer.drain()
        if ended:
            return
        handle(parser.close())
        if script.silent:  # hold the response open, say nothing
            await reader.read()
            return
        writer.write(b"0\r\n\r\n")
        await writer.drain()
