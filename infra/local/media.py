"""GetMedia, GetMediaForFragmentList and ListFragments over the stored fragments.

GetMedia sends each fragment as a standalone MKV, the way AWS does: EBML header, unknown-size
Segment, Info, Tracks, Tags (fragment number, server and producer timestamps), the Cluster, then
Tags with MILLIS_BEHIND_NOW and CONTINUATION_TOKEN. A live reader waits on the stream's event and
gets each fragment as soon as it is persisted.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

from consumer.wire import model as tag
from consumer.wire import writer

from .errors import ConnectionLimitExceeded, InvalidArgument, ResourceNotFound
from .http import Request, Response
from .limits import Limits
from .store import StoredFragment, Stream, StreamStore

TOKEN = re.compile(r"^[0-9]{1,128}$")
CONTENT_TYPE = "video/webm"


def _opening_tags(fragment: StoredFragment, side: str = "") -> bytes:
    return writer.tags({
        tag.FRAGMENT_NUMBER: str(fragment.number),
        f"AWS_KINESISVIDEO_SERVER{side}_TIMESTAMP": f"{fragment.server_timestamp_ms / 1000:.3f}",
        f"AWS_KINESISVIDEO_PRODUCER{side}_TIMESTAMP": f"{fragment.producer_timestamp_ms / 1000:.3f}",
    })


def _closing_tags(fragment: StoredFragment) -> bytes:
    behind = max(0, int(time.time() * 1000) - fragment.server_timestamp_ms)
    return writer.tags({tag.MILLIS_BEHIND_NOW: str(behind),
                        tag.CONTINUATION_TOKEN: str(fragment.number)})


def _timestamp_ms(value, name: str) -> int:
    if isinstance(value, (int, float)):
        return int(value * 1000)
    if isinstance(value, str):
        try:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            pass
    raise InvalidArgument(f"{name} must be a timestamp, got {value!r}")


def _fragment_number(value, name: str) -> int:
    if not isinstance(value, str) or not TOKEN.match(value):
        raise InvalidArgument(f"{name} must be a decimal fragment number, got {value!r}")
    return int(value)


def start_seq(stream: Stream, selector: dict) -> int:
    """Where a GetMedia call starts, per AWS's StartSelector."""
    if not isinstance(selector, dict):
        raise InvalidArgument("StartSelector is required")
    kind = selector.get("StartSelectorType")
    if kind == "NOW":
        return stream.end_seq
    if kind == "EARLIEST":
        return stream.first_seq
    if kind == "FRAGMENT_NUMBER":
        return stream.seq_after(_fragment_number(selector.get("AfterFragmentNumber"),
                                                 "AfterFragmentNumber"))
    if kind == "CONTINUATION_TOKEN":
        return stream.seq_after(_fragment_number(selector.get("ContinuationToken"),
                                                 "ContinuationToken"))
    if kind in ("SERVER_TIMESTAMP", "PRODUCER_TIMESTAMP"):
        at = _timestamp_ms(selector.get("StartTimestamp"), "StartTimestamp")
        server = kind == "SERVER_TIMESTAMP"
        for seq, fragment in enumerate(stream.fragments, stream.first_seq):
            start = fragment.server_timestamp_ms if server else fragment.producer_timestamp_ms
            if start + fragment.duration_ms >= at:
                return seq
        return stream.end_seq
    raise InvalidArgument(
        "StartSelectorType must be one of NOW, EARLIEST, FRAGMENT_NUMBER, SERVER_TIMESTAMP, "
        f"PRODUCER_TIMESTAMP, CONTINUATION_TOKEN; got {kind!r}")


async def get_media(store: StreamStore, limits: Limits, request: Request,
                    response: Response) -> None:
    body = await request.json()
    stream = store.get(body.get("StreamName"), body.get("StreamARN"))
    seq = start_seq(stream, body.get("StartSelector"))
    limits.check_call_rate(stream.calls["GetMedia"], "GetMedia", stream.info.name)
    if stream.getmedia_active >= limits.getmedia_connections_per_stream:
        raise ConnectionLimitExceeded(
            f"Stream {stream.info.name} already has {stream.getmedia_active} GetMedia "
            f"connections; {limits.getmedia_connections_per_stream} are allowed.")
    stream.getmedia_active += 1
    try:
        await response.start_stream(CONTENT_TYPE)
        await _send_live(stream, seq, limits, response)
    finally:
        stream.getmedia_active -= 1


async def _send_live(stream: Stream, seq: int, limits: Limits, response: Response) -> None:
    idle_since = time.monotonic()
    while not stream.deleted:
        seq = max(seq, stream.first_seq)  # retention dropped what this reader had not read
        if seq < stream.end_seq:
            fragment = stream.fragment_at(seq)
            seq += 1
            head, media = stream.load(fragment)
            response.write_chunk(head, _opening_tags(fragment), media, _closing_tags(fragment))
            await response.writer.drain()
            idle_since = time.monotonic()
            continue
        remaining = limits.getmedia_idle_seconds - (time.monotonic() - idle_since)
        if remaining <= 0:
            break
        await stream.wait_for_change(remaining)
    await response.end_stream()


async def get_media_for_fragment_list(store: StreamStore, limits: Limits, request: Request,
                                      response: Response) -> None:
    body = await request.json()
    stream = store.get(body.get("StreamName"), body.get("StreamARN"))
    numbers = body.get("Fragments")
    if not isinstance(numbers, list) or not 1 <= len(numbers) <= 1000:
        raise InvalidArgument("Fragments must be a list of 1 to 1000 fragment numbers")
    fragments = []
    for raw in numbers:
        seq = stream.seq_of(_fragment_number(raw, "Fragments"))
        if seq is None:
            raise ResourceNotFound(f"Fragment {raw} is not found in stream {stream.info.name}.")
        fragments.append(stream.fragment_at(seq))
    await response.start_stream(CONTENT_TYPE)
    for fragment in fragments:
        head, media = stream.load(fragment)
        response.write_chunk(head, _opening_tags(fragment, "_SIDE"), media)
        await response.writer.drain()
    await response.end_stream()


async def list_fragments(store: StreamStore, limits: Limits, request: Request,
                         response: Response) -> None:
    body = await request.json()
    stream = store.get(body.get("StreamName"), body.get("StreamARN"))
    limit = body.get("MaxResults", 1000)
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise InvalidArgument(f"MaxResults must be an integer from 1 to 1000, got {limit!r}")
    fragments = stream.fragments
    selector = body.get("FragmentSelector")
    if selector is not None:
        kind = selector.get("FragmentSelectorType")
        if kind not in ("PRODUCER_TIMESTAMP", "SERVER_TIMESTAMP"):
            raise InvalidArgument("FragmentSelectorType must be PRODUCER_TIMESTAMP or "
                                  f"SERVER_TIMESTAMP, got {kind!r}")
        span = selector.get("TimestampRange") or {}
        low = _timestamp_ms(span.get("StartTimestamp"), "StartTimestamp")
        high = _timestamp_ms(span.get("EndTimestamp"), "EndTimestamp")
        attr = "server_timestamp_ms" if kind == "SERVER_TIMESTAMP" else "producer_timestamp_ms"
        fragments = [f for f in fragments if low <= getattr(f, attr) <= high]
    start = 0
    if body.get("NextToken"):
        try:
            start = int(body["NextToken"])
        except ValueError:
            raise InvalidArgument("NextToken is not one this service returned") from None
    page = fragments[start:start + limit]
    result: dict = {"Fragments": [f.listing() for f in page]}
    if start + limit < len(fragments):
        result["NextToken"] = str(start + limit)
    await response.send_json(result)
