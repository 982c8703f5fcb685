"""Parsing of complete elements: Tracks, Tags, and laced block payloads.

The reader hands these functions an element's whole payload once it has arrived.
"""

from __future__ import annotations

from . import ebml
from .model import Track


def unlace(payload: memoryview, lacing: int) -> list[memoryview]:
    count = payload[0] + 1
    pos = 1
    sizes: list[int] = []
    if lacing == 1:  # Xiph
        for _ in range(count - 1):
            size = 0
            while payload[pos] == 255:
                size += 255
                pos += 1
            size += payload[pos]
            pos += 1
            sizes.append(size)
    elif lacing == 3 and count > 1:  # EBML: first size, then signed differences
        size, length = ebml.read_size(payload, pos)
        pos += length
        sizes.append(size)
        for _ in range(count - 2):
            raw, length = ebml.read_size(payload, pos)
            pos += length
            size += raw - ((1 << (7 * length - 1)) - 1)
            sizes.append(size)
    elif lacing == 2:  # fixed
        total = len(payload) - pos
        if total % count:
            raise ValueError("fixed lacing does not divide the block evenly")
        sizes = [total // count] * (count - 1)
    frames = []
    for size in sizes:
        if size < 0 or pos + size > len(payload):
            raise ValueError("laced frame overruns its block")
        frames.append(payload[pos:pos + size])
        pos += size
    frames.append(payload[pos:])
    return frames


def _string(value) -> str:
    return ebml.read_string(value).strip()


# TrackEntry children (and those of its Video and Audio masters) -> Track field and reader.
_TRACK_FIELDS = {
    ebml.TRACK_NUMBER: ("number", ebml.read_uint),
    ebml.TRACK_TYPE: ("type", ebml.read_uint),
    ebml.CODEC_ID: ("codec_id", _string),
    ebml.CODEC_PRIVATE: ("codec_private", bytes),
    ebml.TRACK_UID: ("uid", ebml.read_uint),
    ebml.TRACK_NAME: ("name", ebml.read_string),
    ebml.DEFAULT_DURATION: ("default_duration_ns", ebml.read_uint),
    ebml.PIXEL_WIDTH: ("width", ebml.read_uint),
    ebml.PIXEL_HEIGHT: ("height", ebml.read_uint),
    ebml.SAMPLING_FREQUENCY: ("sampling_frequency", ebml.read_float),
    ebml.CHANNELS: ("channels", ebml.read_uint),
}


def parse_tracks(payload) -> tuple[Track, ...]:
    tracks = []
    for entry_id, entry in ebml.iter_children(payload):
        if entry_id != ebml.TRACK_ENTRY:
            continue
        fields: dict = {"number": 0, "type": 0, "codec_id": ""}
        _read_fields(entry, fields)
        tracks.append(Track(**fields))
    return tuple(tracks)


def _read_fields(payload, fields: dict) -> None:
    for child_id, value in ebml.iter_children(payload):
        if child_id in (ebml.VIDEO, ebml.AUDIO):
            _read_fields(value, fields)
        elif child_id in _TRACK_FIELDS:
            name, read = _TRACK_FIELDS[child_id]
            fields[name] = read(value)


def parse_tags(payload) -> dict[str, str]:
    tags: dict[str, str] = {}
    for tag_id, tag in ebml.iter_children(payload):
        if tag_id == ebml.TAG:
            for child_id, value in ebml.iter_children(tag):
                if child_id == ebml.SIMPLE_TAG:
                    _parse_simple_tag(value, tags)
    return tags


def _parse_simple_tag(payload, tags: dict[str, str]) -> None:
    name = None
    value = ""
    for child_id, child in ebml.iter_children(payload):
        if child_id == ebml.TAG_NAME:
            name = ebml.read_string(child)
        elif child_id == ebml.TAG_STRING:
            value = ebml.read_string(child)
        elif child_id == ebml.TAG_BINARY:
            value = bytes(child).hex()
        elif child_id == ebml.SIMPLE_TAG:
            _parse_simple_tag(child, tags)
    if name:
        tags[name] = value
