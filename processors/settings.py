"""Settings of the processors (pose, YOLO, tracking), typed and validated: the consumer's
configuration embeds them (`processing.pose`, `processing.yolo`, `processing.tracking`), and the
processors take them as they are. Unknown keys are errors (`extra="forbid"`)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from processors.models import POSE_VARIANTS, model_file_name


class ConfigError(ValueError):
    """The configuration is invalid; the message names the key."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class Pose(Model):
    """MediaPipe PoseLandmarker. `model`: `lite`, `full` or `heavy` (Google's bundle
    pose_landmarker_{variant}.task, downloaded once when missing and allowed; offline, build lite
    and heavy with `python -m processors.pose_bundles`), or a .task file name in models_dir."""

    enabled: bool = True
    model: str = "pose_landmarker_full.task"
    models_dir: Path = Path("~/.cache/kvs-analytics/models")
    num_poses: int = Field(4, ge=1, le=32)
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    min_presence_confidence: float = Field(0.5, ge=0, le=1)
    min_tracking_confidence: float = Field(0.5, ge=0, le=1)
    download: bool = True  # fetch a missing model from Google's published URL once

    @field_validator("model")
    @classmethod
    def _model(cls, model: str) -> str:
        """A shorthand becomes its file name (processors.models.model_file_name, as everywhere)."""
        name = model_file_name(model)
        if not name.endswith(".task"):
            raise ValueError(f"{model!r}: expected {', '.join(POSE_VARIANTS)} or the file name of "
                             "a MediaPipe pose landmarker bundle (*.task)")
        return name


class Yolo(Model):
    """Ultralytics YOLO. `weights`: a .pt, or an exported .onnx / TensorRT .engine, loaded by
    Ultralytics' own loaders; an architecture .yaml (e.g. yolov8n.yaml) builds the model with
    random weights (for tests: no download). A bare file name is looked up in models_dir."""

    weights: str = "yolov8n-pose.pt"
    models_dir: Path = Path("~/.cache/kvs-analytics/models")
    device: str = Field("auto", description="auto (cuda:0 when present, else cpu), cpu, cuda:N")
    half: bool | None = Field(None, description="FP16; default: on a GPU only")
    classes: list[str] = Field(default_factory=lambda: ["person"],
                               description="class names to keep, as in the model's names")
    confidence: float = Field(0.25, ge=0, le=1)
    iou: float = Field(0.7, ge=0, le=1, description="non-maximum suppression IoU threshold")
    image_size: int = Field(640, ge=32, le=4096)
    max_detections: int = Field(100, ge=1, le=1000)

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?|[0-9]+", device):
            raise ValueError(f"{device!r}: expected auto, cpu, mps, cuda or cuda:N")
        return device


class Tracking(Model):
    """ByteTrack (supervision) per stream, across fragments: stable track ids in the records."""

    enabled: bool = True
    lost_track_seconds: float = Field(3.0, gt=0, description="a lost track is kept this long")
    activation_threshold: float = Field(0.25, ge=0, le=1,
                                        description="confidence that starts a track")
    min_iou: float = Field(0.1, ge=0, le=1,
                           description="overlap with a track's predicted box to continue it")


class FaceSearchSettings(Model):
    """Search of each face against face collections (consumer.faces), as Rekognition's stream
    processors did: FaceMatchThreshold and MaxFaces per face."""

    collections: list[str] = Field(default_factory=list,
                                   description="collections searched; none: faces not searched")
    match_threshold: float = Field(80.0, ge=0, le=100, description="FaceMatchThreshold, 0-100")
    max_matches: int = Field(1, ge=1, le=100, description="MaxFaces: matches kept per face")
    table: str = Field("kvs-analytics-faces", pattern=r"^[A-Za-z0-9_.\-]{3,255}$",
                       description="the collections' DynamoDB table")
    refresh_seconds: float = Field(30.0, ge=1, le=600,
                                   description="how often a changed collection is reloaded")


class Faces(Model):
    """Faces in analysed frames (processors.faces): MediaPipe's detector (or dlib's HOG, for
    smaller faces, slower), each face embedded (dlib, extra `faces`) when it is searched, and
    linked to the person whose box holds it."""

    enabled: bool = False
    detector: str = Field("mediapipe", pattern="^(mediapipe|dlib)$")
    min_confidence: float = Field(0.5, ge=0, le=1)
    max_faces: int = Field(10, ge=1, le=100, description="largest faces kept per frame")
    search: FaceSearchSettings = FaceSearchSettings()


class Hands(Model):
    """Hand landmarks (processors.hands): 21 per hand, with handedness, linked to persons."""

    enabled: bool = False
    max_hands: int = Field(4, ge=1, le=32)
    min_confidence: float = Field(0.5, ge=0, le=1)
