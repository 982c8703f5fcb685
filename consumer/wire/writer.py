"""MKV writing for Kinesis Video Streams: the producer-side stream and GetMedia's per-fragment MKV.

Everything is built from the element helpers in `ebml`; a frame payload is copied once, into the
bytes of its block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import ebml
from .model import Frame, Track

MUXING_APP_NAME = "kvs-analytics"


def ebml_header() -> bytes:
    return ebml.element(ebml.EBML, b"".join((
        ebml.uint_element(0x4286, 1),  # EBMLVersion
        ebml.uint_element(0x42F7, 1),  # EBMLReadVersion
        ebml.uint_element(0x42F2, 4),  # EBMLMaxIDLength
        ebml.uint_element(0x42F3, 8),  # EBMLMaxSizeLength
        ebml.string_element(ebml.DOC_TYPE, "matroska"),
        ebml.uint_element(0x4287, 2),  # DocTypeVersion
        ebml.uint_element(0x4285, 2),  # DocTypeReadVersion
    )))


def segment_start() -> bytes:
    """A Segment of unknown size, as KVS producers and GetMedia write it."""
    return ebml.unknown_size_header(ebml.SEGMENT)


def info(timecode_scale: int = 1_000_000, app: str = MUXING_APP_NAME) -> bytes:
    return ebml.element(ebml.INFO, b"".join((
        ebml.uint_element(ebml.TIMECODE_SCALE, timecode_scale),
        ebml.string_element(ebml.MUXING_APP, app),
        ebml.string_element(ebml.WRITING_APP, app),
    )))


def track_entry(track: Track) -> bytes:
    parts = [
        ebml.uint_element(ebml.TRACK_NUMBER, track.number),
        ebml.uint_element(ebml.TRACK_UID, track.uid or track.number),
        ebml.uint_element(ebml.TRACK_TYPE, track.type),
        ebml.string_element(ebml.CODEC_ID, track.codec_id),
    ]
    if track.name:
        parts.append(ebml.string_element(ebml.TRACK_NAME, track.name))
    if track.default_duration_ns:
        parts.append(ebml.uint_element(ebml.DEFAULT_DURATION, track.default_duration_ns))
    if track.codec_private:
        parts.append(ebml.element(ebml.CODEC_PRIVATE, bytes(track.codec_private)))
    if track.is_video and track.width and track.height:
        parts.append(ebml.element(ebml.VIDEO, ebml.uint_element(ebml.PIXEL_WIDTH, track.width)
                                  + ebml.uint_element(ebml.PIXEL_HEIGHT, track.height)))
    if track.is_audio and (track.sampling_frequency or track.channels):
        audio = b""
        if track.sampling_frequency:
            audio += ebml.float_element(ebml.SAMPLING_FREQUENCY, track.sampling_frequency)
        if track.channels:
            audio += ebml.uint_element(ebml.CHANNELS, track.channels)
        parts.append(ebml.element(ebml.AUDIO, audio))
    return ebml.element(ebml.TRACK_ENTRY, b"".join(parts))


def tracks(entries: Iterable[Track]) -> bytes:
    return ebml.element(ebml.TRACKS, b"".join(track_entry(t) for t in entries))


def tags(values: Mapping[str, str]) -> bytes:
    """One Tags element with one Tag (no targets) holding a SimpleTag per name."""
    simple = b"".join(
        ebml.element(ebml.SIMPLE_TAG, ebml.string_element(ebml.TAG_NAME, name)
                     + ebml.string_element(ebml.TAG_STRING, str(value)))
        for name, value in values.items()
    )
    return ebml.element(ebml.TAGS, ebml.element(ebml.TAG, ebml.element(ebml.TARGETS, b"") + simple))


def simple_block(track: int, relative_timecode: int, keyframe: bool, data) -> bytes:
    if not -32768 <= relative_timecode <= 32767:
        raise ValueError(f"block timecode {relative_timecode} is outside the cluster's 16-bit range")
    header = (ebml.encode_size(track) + relative_timecode.to_bytes(2, "big", signed=True)
              + (b"\x80" if keyframe else b"\x00"))
    return ebml.element(ebml.SIMPLE_BLOCK, header + bytes(data))


def cluster_start(timecode: int) -> bytes:
    """An unknown-size Cluster header and its Timecode: frames may follow as they are produced."""
    return ebml.unknown_size_header(ebml.CLUSTER) + ebml.uint_element(ebml.TIMECODE, timecode)


def cluster(timecode: int, frames: Iterable[Frame]) -> bytes:
    """A known-size Cluster holding `frames` (their timecodes are absolute)."""
    body = [ebml.uint_element(ebml.TIMECODE, timecode)]
    body.extend(simple_block(f.track, f.timecode - timecode, f.keyframe, f.data) for f in frames)
    return ebml.element(ebml.CLUSTER, b"".join(body))


def stream_header(track_list: Iterable[Track], timecode_scale: int = 1_000_000) -> bytes:
    """What a producer sends before its first cluster: EBML header, Segment, Info, Tracks."""
    return ebml_header() + segment_start() + info(timecode_scale) + tracks(track_list)
