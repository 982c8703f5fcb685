"""Faces: detection (MediaPipe BlazeFace, or dlib's HOG detector), a 128-d identity embedding
(dlib's ResNet), the link from a face to the person (pose) it belongs to, and blurring for privacy.

`FaceAnalyzer(models_dir).faces(rgb)` gives the faces of one HxWx3 uint8 RGB image, largest
first, each a `Face`:
  box         (left, top, width, height) as ratios of the image's width and height, clipped to 0..1
  confidence  0..1: MediaPipe's detection score; for dlib, the logistic of the HOG detector's SVM
              margin (0.5 is dlib's own threshold, margin 0)
  keypoints   normalised (x, y) (may fall just outside 0..1 for a face cut by the image's edge).
              MediaPipe's 6: right eye, left eye, nose tip, mouth centre, right ear tragion, left
              ear tragion ("right" is the person's right, on the viewer's left). dlib: the 5-point
              shape predictor's points: the eye on the viewer's right (outer, inner corner), the
              eye on the viewer's left (outer, inner corner), the base of the nose.
  embedding   with embed=True: 128 float32, unit length (dlib_face_recognition_resnet_model_v1 on
              the face aligned by the 5-point predictor, dlib.get_face_chip's alignment, 150 px,
              padding 0.25), read-only; else None. Cosine similarity is the dot product.

Detectors (measured on the 640x330 `vogels_330.mkv` keynote capture, 2 CPU cores):
  "mediapipe" (default)  BlazeFace short range (`face_detector.tflite` in models_dir), ~1.3 ms
      a frame at any size. It sees the whole frame squeezed into 128x128 pixels and is made for
      faces within ~2 m of the camera: it finds a face only when the face is at least ~13 % of
      the frame's width (an 85 px face at 640 px wide, at a score of only 0.5-0.65; the same face
      pasted into a 960x540 frame, or shrunk to 68 px, is not found). It misses small, far faces:
      on the wide stage shots the speaker's face (~8 px) is never found, while a lit wooden wall
      on the stage is taken for a face (0.56-0.69) on some of them. It finds faces in profile.
  "dlib"  dlib's HOG `get_frontal_face_detector()` (no model file): the option for smaller faces,
      since it scans the image at its own resolution, whatever the frame's size: it found the
      speaker's face shrunk down to ~68 px at upsample 0, ~34 px at 1 (`upsample=1`, the default)
      and ~17-21 px at 2. Slower, growing with the pixels x 4^upsample: 13 / 53 ms a 640x330
      frame at upsample 0 / 1, 50 / 215 ms at 1280x660. Frontal faces only: it misses the
      close-ups where the speaker looks aside, which MediaPipe finds.

Embeddings: the 5-point predictor (`shape_predictor_5_face_landmarks.dat`) is seeded with the
face's box: dlib's HOG box for "dlib"; for "mediapipe" the MediaPipe box shrunk to
DLIB_BOX_SCALE of its size about its centre (the HOG box is ~0.83 of MediaPipe's on the same
faces; seeding with it gave embeddings closer to the person's others). dlib's raw descriptors
have a length of ~1.25-1.45; its usual "same person" threshold, Euclidean 0.6 on raw
descriptors, is about MATCH_DISTANCE (0.45, cosine 0.9) on these unit vectors. Embeddings of
turned or blurred faces are poor: on the capture's close-ups, frontal frames of the speaker are
within 0.1-0.4 of each other and 0.57-0.65 from another person (skimage's astronaut), while
turned heads land 0.45-0.5 from both. ~62 ms of CPU a face (the ResNet), so `max_faces` bounds
the cost; only the kept faces are embedded. (Figures: `python -m bench.faces`.)

dlib is an optional extra (`pip install 'kvs-analytics[faces]'`: dlib-bin and
face-recognition-models, which ships the two .dat files); it is imported only when needed
(embed=True or detector="dlib"), and its absence then raises FacesExtraMissing. mediapipe is
imported in the constructor. The models are loaded once; close() (or the context manager)
releases them; analyzers still open at exit are closed by an atexit hook
(processors.mediapipe_task, whose task here is the MediaPipe detector).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from processors.base import Person
from processors.mediapipe_task import TaskHolder, check_rgb, mp_image
from processors.models import ModelNotFoundError

FACE_MODEL = "face_detector.tflite"
FACE_MODEL_URL = ("https://storage.googleapis.com/mediapipe-models/face_detector/"
                  "blaze_face_short_range/float16/latest/blaze_face_short_range.tflite")
EMBEDDING_SIZE = 128
MATCH_DISTANCE = 0.45  # unit-vector L2 distance: dlib's 0.6 on raw descriptors (length ~1.33)
DLIB_BOX_SCALE = 0.83  # dlib's HOG box / MediaPipe's box on the same faces (median of 17)
FACES_EXTRA = "install the faces extra: pip install 'kvs-analytics[faces]'"
Box = tuple[float, float, float, float]


class FacesExtraMissing(ImportError):
    """dlib or face_recognition_models is not installed (the `faces` extra)."""


@dataclass(frozen=True)
class Face:
    """One face in an image; see the module docstring for each field's meaning."""

    box: Box
    confidence: float
    keypoints: tuple[tuple[float, float], ...]
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)
    person: int | None = None  # the index of the person holding it in its frame (link_faces)
    quality: tuple[float, float] | None = None  # (brightness, sharpness), 0-100: face_quality


def require_model(models_dir: str | Path, name: str, what: str, url: str) -> Path:
    """`models_dir/name`, or ModelNotFoundError naming the file, the folder and where to get it
    (no download: these files are put in place by hand or by the deploy)."""
    folder = Path(models_dir).expanduser()
    path = folder / name
    if path.is_file():
        return path
    raise ModelNotFoundError(
        f"model file {name} ({what}) not found in {folder}. To fix: put {name} into {folder} "
        f"(Google publishes it as {url}: save it under the name {name}), or pass a models_dir "
        "that holds it.", path, url)


def _dlib():
    """(dlib, face_recognition_models), or FacesExtraMissing."""
    try:
        import dlib
        import face_recognition_models
    except ImportError as err:
        raise FacesExtraMissing(f"{FACES_EXTRA} ({err})") from err
    return dlib, face_recognition_models


class FaceAnalyzer(TaskHolder):
    """Faces of RGB images; see the module docstring. Thread-safe (one image at a time).

    close() (TaskHolder) releases the models; idempotent. faces() after close() raises
    RuntimeError. The held task is the MediaPipe detector (None with detector="dlib")."""

    def __init__(self, models_dir: str | Path, detector: Literal["mediapipe", "dlib"] = "mediapipe",
                 min_confidence: float = 0.5, embed: bool = True, max_faces: int | None = None,
                 *, upsample: int = 1):
        """Load the models. `upsample`: dlib's HOG detector only (times the image is doubled)."""
        if detector not in ("mediapipe", "dlib"):
            raise ValueError(f"detector {detector!r}: expected 'mediapipe' or 'dlib'")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence {min_confidence}: expected 0..1")
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"max_faces {max_faces}: expected >= 1 or None")
        self.detector, self.min_confidence, self.max_faces = detector, min_confidence, max_faces
        self.embed, self.upsample = embed, upsample
        self._hog = self._shapes = self._resnet = None
        if embed or detector == "dlib":  # first: a failure then leaves no native graph open
            dlib, models = _dlib()
            self._dlib = dlib
            self._shapes = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
            if embed:
                self._resnet = dlib.face_recognition_model_v1(
                    models.face_recognition_model_location())
            if detector == "dlib":
                self._hog = dlib.get_frontal_face_detector()
        mp_detector = None
        if detector == "mediapipe":
            mp_detector = self._open_mediapipe(require_model(
                models_dir, FACE_MODEL, "MediaPipe face detector", FACE_MODEL_URL))
        self._hold(mp_detector)

    def _open_mediapipe(self, path: Path):
        """The MediaPipe face detector on the model at `path`."""
        from mediapipe.tasks.python import BaseOptions, vision

        return vision.FaceDetector.create_from_options(vision.FaceDetectorOptions(
            base_options=BaseOptions(model_asset_buffer=path.read_bytes()),
            running_mode=vision.RunningMode.IMAGE,
            min_detection_confidence=self.min_confidence))

    def faces(self, rgb: np.ndarray) -> list[Face]:
        """The faces in `rgb` (HxWx3 uint8), largest first, at most max_faces."""
        check_rgb(rgb)
        rgb = np.ascontiguousarray(rgb)
        height, width = rgb.shape[:2]
        with self._using() as mp_detector:
            # [(pixel box l, t, r, b, confidence, keypoints)]
            found = self._detect(rgb, mp_detector)
            found.sort(key=lambda f: (f[2] - f[0]) * (f[3] - f[1]), reverse=True)
            found = found[:self.max_faces]
            shapes = [self._shape(rgb, f) for f in found] if self._shapes else []
            embeddings = self._embeddings(rgb, shapes) if self.embed else [None] * len(found)
        faces = []
        for i, (left, top, right, bottom, confidence, keypoints) in enumerate(found):
            if self.detector == "dlib":
                keypoints = tuple((p.x / width, p.y / height) for p in shapes[i].parts())
            box = _box(left / width, top / height, right / width, bottom / height)
            faces.append(Face(box, confidence, keypoints, embeddings[i]))
        return faces

    def _detect(self, rgb: np.ndarray, mp_detector) -> list[tuple]:
        if self._hog is not None:
            p = min(max(self.min_confidence, 1e-9), 1 - 1e-9)  # confidence = logistic(margin)
            rects, scores, _ = self._hog.run(rgb, self.upsample, math.log(p / (1 - p)))
            return [(r.left(), r.top(), r.right() + 1, r.bottom() + 1,
                     1 / (1 + math.exp(-score)), ()) for r, score in zip(rects, scores)]
        out = []
        for d in mp_detector.detect(mp_image(rgb)).detections:
            b = d.bounding_box
            out.append((b.origin_x, b.origin_y, b.origin_x + b.width, b.origin_y + b.height,
                        float(d.categories[0].score),
                        tuple((float(k.x), float(k.y)) for k in d.keypoints)))
        return out

    def _shape(self, rgb: np.ndarray, found: tuple):
        left, top, right, bottom = found[:4]
        if self.detector == "mediapipe":  # seed the predictor with a box like dlib's own
            cx, cy = (left + right) / 2, (top + bottom) / 2
            half_w = (right - left) * DLIB_BOX_SCALE / 2
            half_h = (bottom - top) * DLIB_BOX_SCALE / 2
            left, top, right, bottom = cx - half_w, cy - half_h, cx + half_w, cy + half_h
        rect = self._dlib.rectangle(round(left), round(top), round(right) - 1, round(bottom) - 1)
        return self._shapes(rgb, rect)

    def _embeddings(self, rgb: np.ndarray, shapes: list) -> list[np.ndarray]:
        if not shapes:
            return []
        batch = self._dlib.full_object_detections()
        for shape in shapes:
            batch.append(shape)
        vectors = np.asarray(self._resnet.compute_face_descriptor(rgb, batch, 0, 0.25),
                             dtype=np.float32).reshape(len(shapes), EMBEDDING_SIZE)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors.setflags(write=False)
        return list(vectors)

    def _release(self) -> None:
        """Drop the dlib models (TaskHolder.close, under its lock)."""
        self._hog = self._shapes = self._resnet = None


def _unit(value: float) -> float:
    return min(1.0, max(0.0, float(value)))


def _box(left: float, top: float, right: float, bottom: float) -> Box:
    """(left, top, width, height) of a box given by its edges, clipped to the image."""
    left, top, right, bottom = _unit(left), _unit(top), _unit(right), _unit(bottom)
    return (left, top, max(0.0, right - left), max(0.0, bottom - top))


def _corners(person: Person | Box) -> Box:
    return person.bbox if isinstance(person, Person) else tuple(person)


def _inside(x: float, y: float, bbox: Box) -> bool:
    left, top, right, bottom = bbox
    return left <= x <= right and top <= y <= bottom


def _overlap(face: Face, bbox: Box) -> float:
    left, top, width, height = face.box
    w = min(left + width, bbox[2]) - max(left, bbox[0])
    h = min(top + height, bbox[3]) - max(top, bbox[1])
    return max(0.0, w) * max(0.0, h)


def _centre(face: Face) -> tuple[float, float]:
    left, top, width, height = face.box
    return left + width / 2, top + height / 2


def faces_of_person(faces: Sequence[Face], person_bbox: Box) -> list[int]:
    """Indices of the faces whose box centre lies in `person_bbox` (left, top, right, bottom,
    normalised, as processors.base.Person.bbox); with several persons, prefer link_faces."""
    return [i for i, face in enumerate(faces) if _inside(*_centre(face), person_bbox)]


def link_faces(faces: Sequence[Face], persons: Sequence[Person | Box]) -> list[int | None]:
    """Per face, the index of its person: of the persons (Person, or its bbox: left, top, right,
    bottom, normalised) whose bbox contains the face box's centre, the one overlapping the face
    box most (the first of equals); None when no bbox contains the centre. Each face is linked
    on its own: two faces may name the same person. A pose bbox (processors.pose) spans the
    landmarks, eyes and ears included, so it holds the centre of its own face."""
    boxes = [_corners(p) for p in persons]
    links: list[int | None] = []
    for face in faces:
        centre = _centre(face)
        holding = [(_overlap(face, b), -j) for j, b in enumerate(boxes) if _inside(*centre, b)]
        links.append(-max(holding)[1] if holding else None)
    return links


def blur_faces(image: np.ndarray, faces: Sequence[Face], margin: float = 0.25,
               blocks: int = 6) -> np.ndarray:
    """A copy of `image` (HxW or HxWxC, any channel order) with each face pixelated: its box
    grown on every side by `margin` x its width (left, right) or height (top, bottom), clipped
    to the image, replaced by at most `blocks` x `blocks` flat blocks of the region's mean colour
    (coarse enough that no identity is left; a blur can be undone in part, this cannot)."""
    out = image.copy()
    height, width = image.shape[:2]
    for face in faces:
        left, top, w, h = face.box
        x0 = max(0, math.floor((left - margin * w) * width))
        x1 = min(width, math.ceil((left + w + margin * w) * width))
        y0 = max(0, math.floor((top - margin * h) * height))
        y1 = min(height, math.ceil((top + h + margin * h) * height))
        if x1 <= x0 or y1 <= y0:
            continue
        xs = np.linspace(x0, x1, min(blocks, x1 - x0) + 1).round().astype(int)
        ys = np.linspace(y0, y1, min(blocks, y1 - y0) + 1).round().astype(int)
        for ya, yb in itertools.pairwise(ys):
            for xa, xb in itertools.pairwise(xs):
                cell = out[ya:yb, xa:xb]
                mean = cell.mean(axis=(0, 1))
                cell[...] = mean.round() if np.issubdtype(image.dtype, np.integer) else mean
    return out


def face_quality(image: np.ndarray, box: Box) -> tuple[float, float]:
    """(brightness, sharpness) of the face's pixels, each 0-100, in the spirit of Rekognition's
    Quality (its exact measure is not published): brightness is the mean luma; sharpness
    grows with the variance of the luma's Laplacian (100 * (1 - exp(-variance / 300))): a sharp
    85-pixel face measures about 90, a blurred one under 30."""
    height, width = image.shape[:2]
    left, top, box_width, box_height = box
    x0, y0 = int(left * width), int(top * height)
    x1, y1 = int((left + box_width) * width), int((top + box_height) * height)
    crop = image[max(y0, 0):max(y1, y0 + 3), max(x0, 0):max(x1, x0 + 3)].astype(np.float32)
    if crop.shape[0] < 3 or crop.shape[1] < 3:
        return 0.0, 0.0
    luma = crop[..., 0] * 0.299 + crop[..., 1] * 0.587 + crop[..., 2] * 0.114
    laplacian = (4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1]
                 - luma[1:-1, :-2] - luma[1:-1, 2:])
    return (float(100 * luma.mean() / 255),
            float(100 * (1 - np.exp(-laplacian.var() / 300))))
