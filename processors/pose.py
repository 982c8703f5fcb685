"""Pose processor: MediaPipe PoseLandmarker (Tasks API), several persons a frame, 33 landmarks each.

The landmarker runs in IMAGE mode: every frame is analysed on its own, with no state carried from
one frame to the next, so a batch may mix frames from many cameras in any order and each result is
the same as if its frame were processed alone. (`min_tracking_confidence` therefore has no effect:
MediaPipe only uses it in VIDEO/LIVE_STREAM mode; identity across frames is a tracker's job.)
VIDEO mode per stream was measured against this (`python -m bench.pose_choice`): with fewer
persons than num_poses it still runs the detector on every frame, cost 11-33 % more CPU a frame
at S = 1 and 2 and disagreed on the person count on a quarter of the several-person frames, so it
is not offered. `config.model` may be `lite`, `full` or `heavy` (processors.models).

Each Person carries:
  landmarks   33 Landmarks in MediaPipe's order (nose, eyes, ..., feet): x, y normalised to the
              image width and height (they may fall outside 0..1 for a body part off the image),
              z the depth relative to the hips on about the scale of x, visibility and presence
              in 0..1.
  bbox        (left, top, right, bottom): the extent of the 33 landmarks, clipped to 0..1 (no
              margin: the top of the head, above the eyes and ears, is outside it).
  confidence  the mean presence of the 33 landmarks. The Tasks API does not expose the detector's
              or the landmark model's per-pose score (it only filters by them through the
              thresholds), so this is the closest honest per-person score.

Thresholds come from the `Pose` config: num_poses, min_detection_confidence (person detector),
min_presence_confidence (landmark model's pose presence). The model is loaded once, in the
constructor; call close() (or use the processor as a context manager) to release it. Processors
still open at interpreter exit are closed by an atexit hook, since mediapipe's own finaliser prints
a traceback when it runs that late (processors.mediapipe_task, shared with faces and hands).
mediapipe is imported here, not at package import, so other commands stay fast.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from processors.base import FrameResult, Landmark, Person
from processors.frames import VideoFrame
from processors.mediapipe_task import TaskHolder
from processors.models import resolve_model
from processors.settings import Pose

NUM_LANDMARKS = 33
# MediaPipe's 33 landmark names and the 35 pairs its drawing utilities join (PoseLandmark,
# PoseLandmarksConnections.POSE_LANDMARKS), copied so drawing needs no mediapipe import.
LANDMARK_NAMES = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index")
POSE_CONNECTIONS = (
    (0, 1), (1, 2), (2, 3), (3, 7), (0, 4), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13),
    (13, 15), (15, 17), (15, 19), (15, 21), (17, 19), (12, 14), (14, 16), (16, 18), (16, 20),
    (16, 22), (18, 20), (11, 23), (12, 24), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28),
    (27, 29), (28, 30), (29, 31), (30, 32), (27, 31), (28, 32))


class PoseProcessor(TaskHolder):
    """The Processor for poses; see the module docstring for the result's meaning.

    close() (TaskHolder) releases the model; idempotent. process() after close() raises
    RuntimeError."""

    name = "pose"
    landmark_set = "mediapipe-pose-33"

    def __init__(self, config: Pose, *, model_path: Path | None = None):
        """Load the model: `model_path`, else config.model found (or fetched) in models_dir."""
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        path = model_path or resolve_model(config.model, config.models_dir,
                                           download=config.download)
        data = path.read_bytes()
        self.model = path.name
        self.model_version = f"mediapipe-{mp.__version__}+{hashlib.sha256(data).hexdigest()[:12]}"
        # MediaPipe's landmarker takes one image a call: a batch would only make a frame wait
        # for the ones after it before its result goes on (nothing is gained from batching)
        self.max_batch = 1
        self.config = config
        options = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=data),
            running_mode=vision.RunningMode.IMAGE,
            num_poses=config.num_poses,
            min_pose_detection_confidence=config.min_detection_confidence,
            min_pose_presence_confidence=config.min_presence_confidence,
            min_tracking_confidence=config.min_tracking_confidence,
        )
        # one detect() at a time on the native graph (TaskHolder's lock)
        self._hold(vision.PoseLandmarker.create_from_options(options))

    def process(self, frames: Sequence[VideoFrame]) -> list[FrameResult]:
        """One FrameResult per frame, in order; a frame without persons gives empty `persons`."""
        return [self._one(frame.image) for frame in frames]

    def _one(self, image: np.ndarray) -> FrameResult:
        result = self._detect_image(image)
        return FrameResult(persons=tuple(_person(pose) for pose in result.pose_landmarks))


def _unit(value: float | None) -> float:
    return min(1.0, max(0.0, float(value or 0.0)))


def _person(pose) -> Person:
    landmarks = tuple(Landmark(x=float(p.x), y=float(p.y), z=float(p.z),
                               visibility=_unit(p.visibility), presence=_unit(p.presence))
                      for p in pose)
    xs = [p.x for p in landmarks]
    ys = [p.y for p in landmarks]
    bbox = (_unit(min(xs)), _unit(min(ys)), _unit(max(xs)), _unit(max(ys)))
    confidence = sum(p.presence for p in landmarks) / len(landmarks)
    return Person(bbox=bbox, confidence=confidence, landmarks=landmarks)
