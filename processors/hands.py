"""Hands: MediaPipe HandLandmarker (Tasks API, IMAGE mode), 21 landmarks and handedness a hand,
and the link from a hand to the person (pose) it belongs to.

`HandAnalyzer(models_dir).hands(rgb)` gives the hands of one HxWx3 uint8 RGB image, in
MediaPipe's order, at most `max_hands`, each a `Hand`:
  landmarks   21 (x, y, z) in MediaPipe's order (HAND_LANDMARK_NAMES: wrist, thumb, then index to
              pinky, base to tip): x, y normalised to the image's width and height (they may fall
              outside 0..1 for a hand cut by the edge), z the depth relative to the wrist, on about
              the scale of x (smaller: nearer the camera).
  handedness  "Left" or "Right", as the Tasks API gives it; it fits unmirrored video: the
              person's right hand (on the viewer's left when the person faces the camera) is
              "Right". (The legacy mp.solutions API assumed a mirrored selfie image and swapped
              them; see ../shared/models/README.md.)
  score       0..1, the handedness classifier's score: the Tasks API exposes no per-hand
              detection or presence score (it only filters by them).

The model is `hand_landmarker.task` in models_dir (the palm detector and hand landmark models that
the legacy hands solution ran with model_complexity=1). Every image is analysed on its own (IMAGE
mode), so frames from many streams may be mixed. CPU a 640x330 frame here (`python -m
bench.faces`): ~7 ms without a hand (the palm detector), ~12 with one, ~18 with two (the landmark
model runs once a hand); ../shared/models/README.md measured 38 / 71 / 103 ms on another run.
mediapipe is imported in the constructor; close() (or the context manager) releases the model;
analyzers still open at exit are closed by an atexit hook (processors.mediapipe_task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processors.base import Person
from processors.faces import require_model
from processors.mediapipe_task import TaskHolder

HAND_MODEL = "hand_landmarker.task"
HAND_MODEL_URL = ("https://storage.googleapis.com/mediapipe-models/hand_landmarker/"
                  "hand_landmarker/float16/latest/hand_landmarker.task")
NUM_LANDMARKS = 21
LINK_MARGIN = 0.10  # link_hands grows each person's bbox by this share of its size, each side
# MediaPipe's 21 hand landmark names and the 21 pairs its drawing joins (HandLandmark,
# HandLandmarksConnections.HAND_CONNECTIONS), copied so drawing needs no mediapipe import.
HAND_LANDMARK_NAMES = (
    "wrist", "thumb_cmc", "thumb_mcp", "thumb_ip", "thumb_tip", "index_finger_mcp",
    "index_finger_pip", "index_finger_dip", "index_finger_tip", "middle_finger_mcp",
    "middle_finger_pip", "middle_finger_dip", "middle_finger_tip", "ring_finger_mcp",
    "ring_finger_pip", "ring_finger_dip", "ring_finger_tip", "pinky_mcp", "pinky_pip",
    "pinky_dip", "pinky_tip")
HAND_CONNECTIONS = (
    (0, 1), (0, 5), (9, 13), (13, 17), (5, 9), (0, 17), (1, 2), (2, 3), (3, 4), (5, 6), (6, 7),
    (7, 8), (9, 10), (10, 11), (11, 12), (13, 14), (14, 15), (15, 16), (17, 18), (18, 19),
    (19, 20))
_POSE_WRISTS = (15, 16)  # processors.pose: left_wrist, right_wrist


@dataclass(frozen=True, slots=True)
class Hand:
    """One hand in an image; see the module docstring for each field's meaning."""

    landmarks: tuple[tuple[float, float, float], ...]
    handedness: str
    score: float
    person: int | None = None  # the index of the person holding it in its frame (link_hands)


class HandAnalyzer(TaskHolder):
    """Hands of RGB images; see the module docstring. Thread-safe (one image at a time).

    close() (TaskHolder) releases the model; idempotent. hands() after close() raises
    RuntimeError."""

    def __init__(self, models_dir: str | Path, max_hands: int = 2, min_confidence: float = 0.5):
        """Load the model. `min_confidence` is both the palm detector's and the landmark
        model's hand-presence threshold."""
        from mediapipe.tasks.python import BaseOptions, vision

        if max_hands < 1:
            raise ValueError(f"max_hands {max_hands}: expected >= 1")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence {min_confidence}: expected 0..1")
        path = require_model(models_dir, HAND_MODEL, "MediaPipe hand landmarker", HAND_MODEL_URL)
        self.max_hands, self.min_confidence = max_hands, min_confidence
        self._hold(vision.HandLandmarker.create_from_options(vision.HandLandmarkerOptions(
            base_options=BaseOptions(model_asset_buffer=path.read_bytes()),
            running_mode=vision.RunningMode.IMAGE, num_hands=max_hands,
            min_hand_detection_confidence=min_confidence,
            min_hand_presence_confidence=min_confidence)))

    def hands(self, rgb: np.ndarray) -> list[Hand]:
        """The hands in `rgb` (HxWx3 uint8), in MediaPipe's order."""
        result = self._detect_image(rgb)
        return [Hand(landmarks=tuple((float(p.x), float(p.y), float(p.z)) for p in marks),
                     handedness=str(sides[0].category_name), score=float(sides[0].score))
                for marks, sides in zip(result.hand_landmarks, result.handedness, strict=True)]


def _grown(bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    left, top, right, bottom = bbox
    dx, dy = LINK_MARGIN * (right - left), LINK_MARGIN * (bottom - top)
    return left - dx, top - dy, right + dx, bottom + dy


def _distance(x: float, y: float, person: Person | tuple) -> float:
    """From (x, y) to the person's nearer pose wrist, else to its bbox's centre."""
    if isinstance(person, Person) and len(person.landmarks) > max(_POSE_WRISTS):
        return min((person.landmarks[k].x - x) ** 2 + (person.landmarks[k].y - y) ** 2
                   for k in _POSE_WRISTS)
    left, top, right, bottom = person.bbox if isinstance(person, Person) else person
    return ((left + right) / 2 - x) ** 2 + ((top + bottom) / 2 - y) ** 2


def link_hands(hands: Sequence[Hand], persons: Sequence[Person | tuple[float, float, float, float]]
               ) -> list[int | None]:
    """Per hand, the index of its person: of the persons (Person, or its bbox: left, top, right,
    bottom, normalised) whose bbox grown by LINK_MARGIN (10 % of its width and height on each
    side) contains the hand's wrist (landmark 0), the one whose pose wrist (landmark 15 or 16)
    is nearest to it, or for a bbox without landmarks whose centre is; None when no grown bbox
    contains the wrist. Each hand is linked on its own."""
    links: list[int | None] = []
    for hand in hands:
        x, y = hand.landmarks[0][:2]
        holding = [j for j, p in enumerate(persons)
                   if _inside(x, y, _grown(p.bbox if isinstance(p, Person) else tuple(p)))]
        links.append(min(holding, key=lambda j: _distance(x, y, persons[j])) if holding else None)
    return links


def _inside(x: float, y: float, bbox: tuple[float, float, float, float]) -> bool:
    left, top, right, bottom = bbox
    return left <= x <= right and top <= y <= bottom
