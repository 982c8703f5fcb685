"""Helpers for the pose tests: real frames from vogels_330.mkv and KVS-like provenance."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import av
import numpy as np

from processors.frames import FrameSource, VideoFrame

POSE_MODEL = "pose_landmarker_full.task"
FRAGMENT = 91343852333181432392682062622220590765191907586  # 47 digits, beyond int64
ON_STAGE = 300  # vogels_330.mkv: the speaker, small, on the stage
CLOSE_UP = 600  # the speaker in close-up


def decode_frames(path: Path, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """RGB arrays of the video frames at `indices` (positions in decode order)."""
    wanted = set(indices)
    frames: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if len(frames) == len(wanted):
                break
    return frames


def source(stream: str = "cam-a", index: int = 0, fragment: int = FRAGMENT) -> FrameSource:
    arn = f"arn:aws:kinesisvideo:us-east-1:123456789012:stream/{stream}/1700000000000"
    return FrameSource(stream, arn, fragment, 1_700_000_000.25, 1_700_000_000.0,
                       round(index / 30, 3), index)


def video_frame(image: np.ndarray, stream: str = "cam-a", index: int = 0) -> VideoFrame:
    return VideoFrame(source(stream, index), image, keyframe=index == 0)
