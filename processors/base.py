"""The Processor interface: frames in, typed results out, one result per frame.

Batch-aware so a GPU processor can take frames from many cameras in one call; the pipeline
decides the batch (up to `max_batch` frames, or what arrived within its wait) and routes each
result back to its frame by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from processors.frames import VideoFrame


@dataclass(frozen=True, slots=True)
class Landmark:
    """A pose keypoint in normalised image coordinates (x, y in 0..1; z relative to the hips)."""

    x: float
    y: float
    z: float
    visibility: float
    presence: float


@dataclass(frozen=True, slots=True)
class Person:
    """One person found in a frame. bbox is (left, top, right, bottom), normalised 0..1."""

    bbox: tuple[float, float, float, float]
    confidence: float
    landmarks: tuple[Landmark, ...] = ()
    track_id: int | None = None


@dataclass(frozen=True, slots=True)
class FrameResult:
    persons: tuple[Person, ...] = ()
    extra: dict = field(default_factory=dict)  # processor-specific, JSON-serialisable
    faces: tuple = ()  # processors.faces.Face, each with its person's index (processing.faces)
    hands: tuple = ()  # processors.hands.Hand, likewise (processing.hands)


class Processor(Protocol):
    name: str  # e.g. "pose"
    model: str  # the model's file or id
    model_version: str
    max_batch: int
    # The landmarks a Person carries: "mediapipe-pose-33", "coco-17", or "" for none (a
    # detection-only model: no pose sequences). Read it with
    # consumer.formats.pose_sequence.landmark_set_of(), which gives MediaPipe's for a processor without it.
    landmark_set: str

    def process(self, frames: Sequence[VideoFrame]) -> list[FrameResult]:
        """Analyse `frames`; return exactly one result per frame, in the same order."""
        ...

    def close(self) -> None:
        ...
