"""A decoded frame and where it came from: the unit that flows from the decoder to every output.

Every output derived from a frame carries its provenance (stream, fragment number, server and
producer timestamps, offset in the fragment), so any record can be joined back to the video the
way Rekognition Video's stream-processor records were. Ids and keys derive from the same fields,
so a replay after a crash produces the same ids and overwrites the same objects.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

_RECORD_NAMESPACE = uuid.UUID("6b3f7c2e-8f0c-4d8e-9a55-0d6f2f5a7c11")


@dataclass(frozen=True, slots=True)
class FileOrigin:
    """A recorded file a frame came from (batch mode), instead of a Kinesis video stream."""

    path: str  # relative to the folder searched, or the name given
    sha256: str  # of the file's bytes: its identity
    start: float  # producer time of the file's first frame (FrameSource.producer_time's base)


@dataclass(frozen=True, slots=True)
class FrameSource:
    """Where a frame sits in Kinesis Video Streams, or in a recorded file (`origin`: then
    `stream_name` is the file's video id, `stream_arn` "file:sha256:<hex>" and the fragment a
    part of the file cut at keyframes)."""

    stream_name: str
    stream_arn: str
    fragment_number: int
    server_timestamp: float  # seconds since the epoch, of the fragment
    producer_timestamp: float  # seconds since the epoch, of the fragment
    frame_offset: float  # seconds from the start of the fragment (FrameOffsetInSeconds)
    frame_index: int  # position among the fragment's video frames, from 0
    origin: FileOrigin | None = None

    @property
    def record_id(self) -> str:
        """Deterministic: the same frame gives the same id on every replay."""
        return str(uuid.uuid5(_RECORD_NAMESPACE,
                              f"{self.stream_arn}|{self.fragment_number}|{self.frame_index}"))

    @property
    def producer_time(self) -> float:
        """The frame's own producer time, in seconds since the epoch."""
        return self.producer_timestamp + self.frame_offset


@dataclass(frozen=True, slots=True)
class VideoFrame:
    source: FrameSource
    image: np.ndarray  # height x width x 3, RGB, uint8
    keyframe: bool

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])
