"""What every source shares: the `Source` interface, the `Packet` it yields, its errors and track.

A source is an iterable of `Packet`s (pts in ms from the source's own start, keyframe flag, AVCC
payload) with a `track` (CodecPrivate avcC, width, height) that is known once the first packet has
been yielded. `video_track` builds that track; the defaults (frame rate, keyframe interval) are the
ones every source and the encoder fall back to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from consumer.wire import Track, ebml

CODEC_ID_H264 = "V_MPEG4/ISO/AVC"
VIDEO_TRACK_NUMBER = 1
DEFAULT_FPS = 30
DEFAULT_KEYFRAME_INTERVAL_S = 1.0


class SourceError(Exception):
    """A source that cannot be opened or read; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One encoded video frame: AVCC payload, presentation time in ms, keyframe flag, and whether
    the source's own timestamps repeated or went back here (a new fragment should start)."""

    pts_ms: int
    keyframe: bool
    data: bytes
    discontinuity: bool = False


def video_track(codec_private: bytes, width: int, height: int, fps: float | None = None) -> Track:
    return Track(
        number=VIDEO_TRACK_NUMBER, type=ebml.TRACK_TYPE_VIDEO, codec_id=CODEC_ID_H264,
        codec_private=codec_private, uid=VIDEO_TRACK_NUMBER, name="video", width=width,
        height=height, default_duration_ns=round(1e9 / fps) if fps else None,
    )


class Source:
    """Base class. Iterate for packets; `track` is set by the time the first packet is yielded."""

    name: str = "source"
    live: bool = False  # paced by the device itself: no real-time pacing needed
    epoch_ms: int | None = None  # wall-clock time of pts 0, when the source defines it
    duration_ms: int | None = None  # of one pass, when known
    loop: bool = False
    track: Track | None = None

    @property
    def discontinuities(self) -> int:
        """How many times the source's own timestamps repeated or went back (kept increasing)."""
        return 0

    def __iter__(self) -> Iterator[Packet]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"
