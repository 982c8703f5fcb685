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


def parse_tracks(payload) -> tuple[Track, ...]:
    tracks = []
    for entry_id, entry in ebml.iter_children(payload):
        if entry_id != ebml.TRACK_ENTRY:
            continue
        fields: dict = {"number": 0, "type": 0, "codec_id": ""}
        for child_id, value in ebml.iter_children(entry):
            if child_id == ebml.TRACK_NUMBER:
                fields["number"] = ebml.read_uint(value)
            elif child_id == ebml.TRACK_TYPE:
                fields["type"] = ebml.read_uint(value)
            elif child_id == ebml.CODEC_ID:
                fields["codec_id"] = ebml.read_string(value).strip()
            elif child_id == ebml.CODEC_PRIVATE:
                fields["codec_private"] = bytes(value)
            elif child_id == ebml.TRACK_UID:
                fields["uid"] = ebml.read_uint(value)
            elif child_id == ebml.TRACK_NAME:
                fields["name"] = ebml.read_string(value)
            elif child_id == ebml.DEFAULT_DURATION:
                fields["default_duration_ns"] = ebml.read_uint(value)
            elif child_id == ebml.VIDEO:
                for video_id, video_value in ebml.iter_children(value):
                    if video_id == ebml.PIXEL_WIDTH:
                        fields["width"] = ebml.read_uint(video_value)
                    elif video_id == ebml.PIXEL_HEIGHT:
                        fields["height"] = ebml.read_uint(video_value)
            elif child_id == ebml.AUDIO:
                for audio_id, audio_value in ebml.iter_children(value):
                    if audio_id == ebml.SAMPLING_FREQUENCY:
                        fields["sampling_frequency"] = ebml.read_float(audio_value)
                    elif audio_id == ebml.CHANNELS:
                        fields["channels"] = ebml.read_uint(audio_value)
        tracks.append(Track(**fields))
    return tuple(tracks)


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
