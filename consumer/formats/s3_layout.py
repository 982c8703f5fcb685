"""Where the consumer's objects live in S3, and the metadata they carry.

Keys use Hive-style partitions so Athena, Glue, Spark and DuckDB prune by stream and date
without a crawler (`WHERE stream = 'cam-1' AND date = '2024-05-01'` reads one folder):

    {prefix}/frames/stream={stream}/date={YYYY-MM-DD}/{fragment_number}/{frame_index:05d}.jpg
    {prefix}/frames/stream={stream}/date={YYYY-MM-DD}/{fragment_number}/{frame_index:05d}-annotated.jpg
    {prefix}/poses/stream={stream}/date={YYYY-MM-DD}/{fragment_number}.parquet
    {prefix}/poses/stream={stream}/date={YYYY-MM-DD}/{YYYYMMDDTHHMMSSZ}-{seconds}s.parquet (windows)
    {prefix}/clips/stream={stream}/date={YYYY-MM-DD}/{fragment_number}.{ext}
    {prefix}/events/stream={stream}/date={YYYY-MM-DD}/{event_id}/highlight.jpg
    {prefix}/events/stream={stream}/date={YYYY-MM-DD}/{event_id}/clip.mp4

Batch mode (consumer.batch) keys a recorded file by its video id in place of the stream name, and
adds per video its records (when they do not go to a data stream), a summary written last (its
presence means the video is done), and the batch's manifest:

    {prefix}/records/stream={video_id}/records.jsonl
    {prefix}/videos/{video_id}.json
    {prefix}/manifest.json

Keys are pure functions of (stream, fragment number, frame index), so a replay after a crash
overwrites the same objects instead of adding copies. The date is the fragment's producer
timestamp in UTC (not the frame's), so every object of one fragment shares a folder even when
the fragment spans midnight. Fragment numbers are written in decimal, as AWS prints them.

Every external name is validated before it becomes part of a key. A stream name is any legal
Kinesis Video name, [a-zA-Z0-9_.-]{1,256}, used as it is: it only ever appears after `stream=`,
so no key segment can be `.` or `..` (names such as `..` or `evil..cam` are legal in KVS and
safe here, in S3 and in a local copy of the bucket alike); anything else is refused once, when
the stream is discovered (`consumer.cloud.discovery`). The prefix must be a safe key prefix.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from consumer.config import KEY_PREFIX, STREAM_NAME
from processors.frames import FrameSource

_MAX_FRAGMENT_NUMBER = 10 ** 64  # far above KVS's ~47 digits; a bigger one is not a fragment
_EVENT_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
EVENT_OBJECTS = {"highlight": "highlight.jpg", "clip": "clip.mp4"}


def check_stream_name(name: str) -> str:
    """Return `name` if it is a legal Kinesis Video stream name, else raise ValueError naming
    it (see the module doc for why every legal name is safe after `stream=`).

    fullmatch, not match: the config's patterns end in `$`, which also matches before a
    trailing newline.
    """
    if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
        raise ValueError(f"not a Kinesis Video stream name (1-256 of a-z A-Z 0-9 _ . -): "
                         f"{name!r}")
    return name


def check_prefix(prefix: str) -> str:
    """Return `prefix` without surrounding slashes if safe, else raise ValueError."""
    if not isinstance(prefix, str) or not KEY_PREFIX.fullmatch(prefix) or ".." in prefix \
            or "//" in prefix.strip("/"):
        raise ValueError(f"unsafe S3 key prefix: {prefix!r}")
    return prefix.strip("/")


def partition(prefix: str, kind: str, stream_name: str, producer_timestamp: float) -> str:
    """`{prefix}/{kind}/stream={stream}/date={YYYY-MM-DD}` (no trailing slash)."""
    day = datetime.fromtimestamp(producer_timestamp, UTC).strftime("%Y-%m-%d")
    parts = [check_prefix(prefix), kind, f"stream={check_stream_name(stream_name)}",
             f"date={day}"]
    return "/".join(p for p in parts if p)


def frame_key(prefix: str, source: FrameSource, *, annotated: bool = False) -> str:
    """Key of a frame's JPEG (or its annotated copy)."""
    suffix = "-annotated" if annotated else ""
    if source.frame_index < 0:
        raise ValueError(f"negative frame index {source.frame_index}")
    return (f"{partition(prefix, 'frames', source.stream_name, source.producer_timestamp)}/"
            f"{_fragment(source.fragment_number)}/{source.frame_index:05d}{suffix}.jpg")


def pose_sequence_key(prefix: str, stream_name: str, fragment_number: int,
                      producer_timestamp: float) -> str:
    """Key of a fragment's pose sequence (Parquet)."""
    return (f"{partition(prefix, 'poses', stream_name, producer_timestamp)}/"
            f"{_fragment(fragment_number)}.parquet")


def clip_key(prefix: str, stream_name: str, fragment_number: int, producer_timestamp: float,
             ext: str = "mkv") -> str:
    """Key of a fragment's video clip."""
    if ext not in ("mkv", "mp4"):
        raise ValueError(f"clip extension must be mkv or mp4, not {ext!r}")
    return (f"{partition(prefix, 'clips', stream_name, producer_timestamp)}/"
            f"{_fragment(fragment_number)}.{ext}")


def event_key(prefix: str, stream_name: str, event_start: float, event_id: str,
              kind: str) -> str:
    """Key of an event's `kind` ("highlight" or "clip") under the event's own prefix; the date
    is the event's start (producer time), so the records that open and close it agree."""
    if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
        raise ValueError(f"not an event id: {event_id!r}")
    if kind not in EVENT_OBJECTS:
        raise ValueError(f"event object must be one of {sorted(EVENT_OBJECTS)}, not {kind!r}")
    return f"{partition(prefix, 'events', stream_name, event_start)}/{event_id}/" \
           f"{EVENT_OBJECTS[kind]}"


def object_metadata(source: FrameSource) -> dict[str, str]:
    """S3 user metadata joining an object to its video; printable-ASCII values only.

    S3 sends user metadata as HTTP headers (x-amz-meta-*), where only ASCII survives intact.
    """
    check_stream_name(source.stream_name)
    metadata = {
        "stream": source.stream_name,
        "stream-arn": source.stream_arn,
        "fragment-number": _fragment(source.fragment_number),
        "producer-timestamp": f"{source.producer_timestamp:.3f}",
        "server-timestamp": f"{source.server_timestamp:.3f}",
        "frame-offset": f"{source.frame_offset:.3f}",
        "frame-index": str(source.frame_index),
        "record-id": source.record_id,
    }
    check_metadata(metadata)
    return metadata


def fragment_metadata(stream_name: str, stream_arn: str, fragment_number: int,
                      producer_timestamp: float, server_timestamp: float) -> dict[str, str]:
    """Metadata for a per-fragment object (pose sequence, clip)."""
    metadata = {
        "stream": check_stream_name(stream_name),
        "stream-arn": stream_arn,
        "fragment-number": _fragment(fragment_number),
        "producer-timestamp": f"{producer_timestamp:.3f}",
        "server-timestamp": f"{server_timestamp:.3f}",
    }
    check_metadata(metadata)
    return metadata


def pose_window_key(prefix: str, stream_name: str, window_start: float,
                    window_seconds: float) -> str:
    """Key of a window's pose sequence: named by its UTC start, e.g. 20240501T120000Z-60s."""
    start = datetime.fromtimestamp(window_start, UTC).strftime("%Y%m%dT%H%M%SZ")
    return (f"{partition(prefix, 'poses', stream_name, window_start)}/"
            f"{start}-{window_seconds:g}s.parquet")


def window_metadata(stream_name: str, stream_arn: str, window_start: float,
                    window_seconds: float) -> dict[str, str]:
    """Metadata for a window's pose sequence."""
    metadata = {"stream": check_stream_name(stream_name), "stream-arn": stream_arn,
                "window-start": f"{window_start:.3f}", "window-seconds": f"{window_seconds:g}"}
    check_metadata(metadata)
    return metadata


def batch_key(prefix: str, kind: str, video_id: str) -> str:
    """A batch's per-video object (`records` or `summary`), or its `manifest` (video id "")."""
    if kind != "manifest":
        check_stream_name(video_id)
    path = {"records": f"records/stream={video_id}/records.jsonl",
            "summary": f"videos/{video_id}.json", "manifest": "manifest.json"}[kind]
    prefix = check_prefix(prefix)
    return f"{prefix}/{path}" if prefix else path


def check_metadata(metadata: dict[str, str]) -> None:
    """Raise ValueError unless every name and value is printable ASCII (S3 headers)."""
    for name, value in metadata.items():
        for text in (name, value):
            if not isinstance(text, str) or not text.isascii() or not text.isprintable():
                raise ValueError(f"S3 metadata {name!r}={value!r} is not printable ASCII")


def _fragment(fragment_number: int) -> str:
    if isinstance(fragment_number, bool) or not isinstance(fragment_number, int) \
            or not 0 <= fragment_number < _MAX_FRAGMENT_NUMBER:
        raise ValueError(f"not a fragment number: {fragment_number!r}")
    return str(fragment_number)
