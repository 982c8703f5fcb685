"""`TestPatternSource`: the synthetic camera, drawn by `pattern` and encoded with libx264.

Colour bars, a moving subject and a burned-in producer clock (epoch_ms + pts), endless or a fixed
number of frames, with a keyframe every `keyframe_interval_s`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import av

from ..pattern import draw_frame
from .base import DEFAULT_FPS, DEFAULT_KEYFRAME_INTERVAL_S, Packet, Source, SourceError
from .codec import H264Encoder


class TestPatternSource(Source):
    """Synthetic camera: colour bars, a bouncing subject, the producer clock burned in.

    `epoch_ms` is the wall-clock time of pts 0 (now, by default); the clock on each frame is
    epoch_ms + pts, which is the producer timestamp the camera gives that frame. `frames` limits
    the length (None: endless). A keyframe comes every `keyframe_interval_s`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, width: int = 640, height: int = 480, fps: float = DEFAULT_FPS,
                 frames: int | None = None, epoch_ms: int | None = None,
                 keyframe_interval_s: float = DEFAULT_KEYFRAME_INTERVAL_S):
        if width < 16 or height < 16 or width > 4096 or height > 4096:
            raise SourceError(f"test pattern size {width}x{height} is out of range (16..4096)")
        if not 1 <= fps <= 120:
            raise SourceError(f"test pattern frame rate {fps} is out of range (1..120)")
        self.name = f"testpattern:{width}x{height}@{fps:g}"
        self.width, self.height, self.fps = width - width % 2, height - height % 2, fps
        self.frames = frames
        self.epoch_ms = epoch_ms
        self.keyframe_interval_s = keyframe_interval_s
        if frames is not None:
            self.duration_ms = int(frames * 1000 / fps)

    def frame_pts(self, index: int) -> int:
        return round(index * 1000 / self.fps)

    def __iter__(self) -> Iterator[Packet]:
        if self.epoch_ms is None:
            self.epoch_ms = int(time.time() * 1000)
        encoder = H264Encoder(self.width, self.height, self.fps, self.keyframe_interval_s)
        self.track = encoder.track
        index = 0
        while self.frames is None or index < self.frames:
            pts = self.frame_pts(index)
            rgb = draw_frame(self.width, self.height, pts, self.epoch_ms, index)
            yield from encoder.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24"), pts)
            index += 1
        yield from encoder.flush()
