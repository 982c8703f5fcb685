"""`processing.processor: none`: no model. Every sampled frame still gets its record (with its
provenance, no persons) and, per the stream's frame selection, its JPEG: frame extraction to S3,
or a fleet run whose cost is the video and the delivery alone (tests, lease benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence

from processors.base import FrameResult
from processors.frames import VideoFrame


class FramesOnlyProcessor:
    name = "none"
    model = "none"
    model_version = "0"
    landmark_set = ""  # no landmarks: no pose sequences

    def __init__(self, max_batch: int = 256):
        self.max_batch = max_batch

    def process(self, frames: Sequence[VideoFrame]) -> list[FrameResult]:
        return [FrameResult() for _ in frames]

    def close(self) -> None:
        pass
