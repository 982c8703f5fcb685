"""Camera sources: encoded H.264 video packets with millisecond timestamps, and the track they need.

A source is an iterable of `Packet`s (pts in ms from the source's own start, keyframe flag, AVCC
payload) with a `track` (CodecPrivate avcC, width, height) that is known once the first packet has
been yielded. H.264 inputs are re-muxed untouched; any other codec (or `reencode=True`) is decoded
and re-encoded with libx264 with a fixed GOP. Packet timestamps always increase (keyframes
strictly): a source whose own timestamps repeat or go back is put on a `Timeline`, and the packet
where that happened is marked `discontinuity` (re-encoded, it is made a keyframe); `discontinuities`
counts them. Sources:

* `FileSource`: any file PyAV can read, once or in a loop;
* `TestPatternSource`: colour bars, a moving subject and a burned-in clock (see `pattern`);
* `LiveSource`: an RTSP URL or a local webcam device, opened with `av.open` (thin by design).

`open_source(spec)` turns a command-line source string into one of these.

Modules: `base` (the `Source` interface, `Packet`, `SourceError`, `video_track`), `codec`
(`H264Encoder`, `decode_packets`), `container` (one pass over a PyAV container, shared by the file
and live sources), `file`, `testpattern`, `live` (the sources), `spec` (`open_source`). Import from
this package; the names below are its public API.
"""

from .base import (
    CODEC_ID_H264,
    DEFAULT_FPS,
    DEFAULT_KEYFRAME_INTERVAL_S,
    VIDEO_TRACK_NUMBER,
    Packet,
    Source,
    SourceError,
    video_track,
)
from .codec import H264Encoder, decode_packets
from .file import FileSource
from .live import LiveSource, webcam_format
from .spec import open_source, parse_size_rate
from .testpattern import TestPatternSource

__all__ = [
    "CODEC_ID_H264",
    "DEFAULT_FPS",
    "DEFAULT_KEYFRAME_INTERVAL_S",
    "VIDEO_TRACK_NUMBER",
    "FileSource",
    "H264Encoder",
    "LiveSource",
    "Packet",
    "Source",
    "SourceError",
    "TestPatternSource",
    "decode_packets",
    "open_source",
    "parse_size_rate",
    "video_track",
    "webcam_format",
]
