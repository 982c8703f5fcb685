"""Test helpers that speak PutMedia at the byte level, so tests can send exactly the MKV they mean
(including broken MKV) to the local service over real HTTP."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from urllib.parse import urlparse

from consumer.wire import Fragment, Frame, writer


def producer_mkv(fragments: list[Fragment], start_ms: int) -> bytes:
    """Re-time source fragments to absolute timecodes from start_ms and write one PutMedia body."""
    parts = [writer.stream_header(fragments[0].tracks)]
    origin = fragments[0].cluster_timecode or 0
    for fragment in fragments:
        timecode = start_ms + (fragment.cluster_timecode or 0) - origin
        frames = [Frame(f.track, f.timecode - origin + start_ms, f.keyframe, f.data)
                  for f in fragment.frames]
        parts.append(writer.cluster(timecode, frames))
    return b"".join(parts)


def put_media(endpoint_url: str, stream: str, body: bytes | Iterable[bytes],
              headers: dict[str, str] | None = None, chunk: int = 64 * 1024):
    """POST /putMedia with a chunked body; returns (status, response headers, acks or error)."""
    url = urlparse(endpoint_url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    if isinstance(body, bytes):
        body = [body[i:i + chunk] for i in range(0, len(body), chunk)]
    all_headers = {"x-amzn-stream-name": stream, "x-amzn-fragment-timecode-type": "ABSOLUTE",
                   "Content-Type": "application/octet-stream", **(headers or {})}
    try:
        connection.request("POST", "/putMedia", body=iter(body), headers=all_headers,
                           encode_chunked=True)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the service ended the session early; its answer is still readable
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    if response.status != 200:
        return response.status, dict(response.getheaders()), json.loads(raw or b"{}")
    acks = [json.loads(line) for line in raw.splitlines() if line.strip()]
    return response.status, dict(response.getheaders()), acks
