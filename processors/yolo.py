"""YOLO processor: Ultralytics detection or pose models, one forward pass per batch of frames.

Frames from every camera go through the model together (up to `max_batch` a forward pass; a
longer list is cut into chunks of `max_batch`), and result i is routed back to frame i.

Weights (`processing.yolo.weights`) are loaded by Ultralytics' own loader, `ultralytics.YOLO`: a
.pt checkpoint, an exported .onnx or TensorRT .engine (export with `dynamic=True`, or a fixed
`batch` of at least `max_batch`, and `imgsz` equal to `image_size`), or an architecture .yaml
(e.g. yolov8n.yaml, bundled with Ultralytics), which builds the network with random weights and
no download: for tests and benchmarks only (same compute as the trained model, meaningless
output). A bare file name is looked up in `models_dir`; a path with a folder is used as given.
Weights are never downloaded here: a missing file raises ModelNotFoundError naming the file, the
folder and where to get it.

Before Ultralytics is first imported, YOLO_OFFLINE=1 (no network probes), YOLO_AUTOINSTALL=false
(no pip installs at run time) and YOLO_CONFIG_DIR (a folder beside the models instead of the home
folder) are set, each only when the user has not set it.

Every frame is letterboxed to the same `image_size` x `image_size` square (Ultralytics' rect=False),
whatever else is in the batch: a frame's result does not depend on which cameras' frames shared
its batch (a replay gives the same records), and exported models with a fixed input shape work.

Results:
  persons           detections of class "person" (every detection of a pose model), as Person:
                    bbox (left, top, right, bottom) normalised to the frame, confidence the box
                    score; for a pose model 17 Landmarks in COCO's keypoint order (x, y normalised,
                    z 0.0, visibility = presence = the keypoint's score).
  extra["objects"]  other classes, as [{"label", "confidence", "bbox": [left, top, right,
                    bottom]}], present only when there is at least one.
`landmark_set` is "coco-17" for a pose model and "" for a detection-only model (no landmarks,
so no pose sequences).

`classes` (config) are class names, mapped to the model's ids through its `names`; an empty list
keeps every class. A model built from a .yaml has numeric names ("0", "1", ...); it is given the
COCO dataset's names (from Ultralytics' coco.yaml / coco-pose.yaml) when its class count matches,
like the trained yolov8n(-pose).pt.
ultralytics and torch are imported when a processor is built, not at package import.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from processors.base import FrameResult, Landmark, Person
from processors.frames import VideoFrame
from processors.models import ModelNotFoundError
from processors.settings import ConfigError, Yolo

log = logging.getLogger(__name__)

RELEASES_URL = "https://github.com/ultralytics/assets/releases"
INSTALL_HINT = "pip install 'kvs-analytics[yolo]'"
COCO_17 = "coco-17"
ARCHITECTURE_SUFFIXES = (".yaml", ".yml")
_HASH_CHUNK = 1 << 20


class YoloNotInstalledError(ConfigError):
    """processing.processor is yolo but Ultralytics (or torch) cannot be imported."""


class YoloProcessor:
    """The Processor for Ultralytics YOLO models; see the module docstring."""

    name = "yolo"

    def __init__(self, config: Yolo, *, max_batch: int):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        models_dir = Path(config.models_dir).expanduser()
        source, digest = _resolve_weights(config.weights, models_dir)
        self.model = Path(config.weights).name
        self.max_batch = max_batch
        self.config = config
        ultralytics, torch = import_ultralytics(models_dir)
        self.model_version = (f"random-init:{self.model}" if digest is None
                              else f"ultralytics-{ultralytics.__version__}+{digest[:12]}")
        try:
            self._yolo = ultralytics.YOLO(source)
        except FileNotFoundError as err:
            raise ModelNotFoundError(f"YOLO weights {config.weights}: {err}",
                                     Path(source), None) from err
        self.task = self._yolo.task
        if self.task not in ("detect", "pose"):
            raise ConfigError(f"processing.yolo.weights: {config.weights} is a {self.task!r} "
                              "model; only detect and pose models are supported")
        if str(source).endswith(ARCHITECTURE_SUFFIXES):
            _name_like_coco(self._yolo, self.task)
        self.names: dict[int, str] = {int(k): str(v) for k, v in self._yolo.names.items()}
        self.device = _device(config.device, torch)
        self.half = config.half if config.half is not None else self.device.startswith("cuda")
        self.class_ids = _class_ids(config.classes, self.names)
        self._predict_args: dict[str, Any] = {
            "conf": config.confidence, "iou": config.iou, "imgsz": config.image_size,
            "classes": self.class_ids, "max_det": config.max_detections, "device": self.device,
            "rect": False, "verbose": False, "save": False, "stream": False}
        self._predict_args.update(_precision_args(self.half))
        self._lock = threading.Lock()  # the predictor is not thread-safe
        # One prediction on a blank frame: an exported model (.onnx, .engine) is only opened by
        # its first predict, and its keypoint shape is only known then; and the first cameras'
        # frames do not pay for loading the backend.
        self._yolo.predict([np.zeros((64, 64, 3), np.uint8)], **self._predict_args)
        self.landmark_set = self._landmark_set()

    def _landmark_set(self) -> str:
        if self.task != "pose":
            return ""
        count = _keypoint_count(self._yolo)
        if count != 17:
            raise ConfigError(f"processing.yolo.weights: {self.config.weights} has {count} "
                              "keypoints a person; only COCO's 17 are supported")
        return COCO_17

    def process(self, frames: Sequence[VideoFrame]) -> list[FrameResult]:
        """One FrameResult per frame, in order: one forward pass per `max_batch` frames."""
        results: list[FrameResult] = []
        for start in range(0, len(frames), self.max_batch):
            results.extend(self._batch(frames[start:start + self.max_batch]))
        return results

    def _batch(self, frames: Sequence[VideoFrame]) -> list[FrameResult]:
        images = [_bgr(frame.image) for frame in frames]
        with self._lock:
            if self._yolo is None:
                raise RuntimeError("YoloProcessor is closed")
            outputs = self._yolo.predict(images, **self._predict_args)
        if len(outputs) != len(frames):
            raise RuntimeError(f"Ultralytics returned {len(outputs)} results for "
                               f"{len(frames)} frames")
        return [self._result(output) for output in outputs]

    def _result(self, output) -> FrameResult:
        boxes = output.boxes
        if boxes is None or len(boxes) == 0:
            return FrameResult()
        xyxyn = boxes.xyxyn.cpu().numpy().astype(np.float64)
        scores = boxes.conf.cpu().numpy().astype(np.float64)
        classes = boxes.cls.cpu().numpy().astype(np.int64)
        points = scores_of_points = None
        if self.landmark_set and output.keypoints is not None:
            points = output.keypoints.xyn.cpu().numpy().astype(np.float64)
            conf = output.keypoints.conf
            scores_of_points = (conf.cpu().numpy().astype(np.float64) if conf is not None
                                else np.repeat(scores[:, None], points.shape[1], axis=1))
        persons: list[Person] = []
        objects: list[dict[str, Any]] = []
        for i, (box, score, cls) in enumerate(zip(xyxyn, scores, classes, strict=True)):
            bbox = tuple(_unit(v) for v in box)
            label = self.names.get(int(cls), str(int(cls)))
            if label == "person" or self.task == "pose":
                landmarks = () if points is None else tuple(
                    Landmark(x=float(x), y=float(y), z=0.0, visibility=_unit(s), presence=_unit(s))
                    for (x, y), s in zip(points[i], scores_of_points[i], strict=True))
                persons.append(Person(bbox=bbox, confidence=_unit(score), landmarks=landmarks))
            else:
                objects.append({"label": label, "confidence": _unit(score), "bbox": list(bbox)})
        return FrameResult(persons=tuple(persons), extra={"objects": objects} if objects else {})

    def close(self) -> None:
        """Release the model; idempotent. process() after close() raises RuntimeError."""
        with self._lock:
            model, self._yolo = self._yolo, None
        if model is not None and self.device.startswith("cuda"):
            import torch
            del model
            torch.cuda.empty_cache()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _resolve_weights(weights: str, models_dir: Path) -> tuple[str, str | None]:
    """(what to give ultralytics.YOLO, the weights' sha256, None for an architecture .yaml).

    Raises ModelNotFoundError."""
    given = Path(weights).expanduser()
    bare = given.parent == Path(".")
    path = models_dir / given.name if bare else given
    if given.suffix in ARCHITECTURE_SUFFIXES:
        # a bare name not in models_dir is one of Ultralytics' bundled architectures
        source = str(path) if path.exists() or not bare else weights
        return source, None
    if not path.exists():
        where = "models_dir" if bare else "the path given"
        message = (f"YOLO weights {path.name} not found in {path.parent} ({where}); weights are "
                   f"not downloaded automatically. To fix: download {path.name} from the "
                   f"Ultralytics releases ({RELEASES_URL}) or export your own (`yolo export`), "
                   f"and put it into {path.parent} (or point processing.yolo.models_dir, env "
                   f"KVSA_PROCESSING__YOLO__MODELS_DIR, at a folder that holds it).")
        raise ModelNotFoundError(message, path, None)
    return str(path), _digest(path)


def _digest(path: Path) -> str:
    """sha256 of a weights file, or of every file of an exported folder (e.g. OpenVINO)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with file.open("rb") as stream:
            while chunk := stream.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def import_ultralytics(models_dir: Path):
    """Set Ultralytics' environment (unless the user has), then import and return (ultralytics,
    torch); YoloNotInstalledError when they cannot be imported."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = str(_config_dir(models_dir))
    try:
        import torch
        import ultralytics
    except ImportError as err:
        raise YoloNotInstalledError(
            f"processing.processor is yolo but {err.name or 'ultralytics'} cannot be imported "
            f"({err}). To fix: {INSTALL_HINT}") from err
    return ultralytics, torch


def _config_dir(models_dir: Path) -> Path:
    """A writable folder for Ultralytics' settings: beside the models, else a temp folder."""
    for folder in (models_dir / "ultralytics-config",
                   Path(tempfile.gettempdir()) / "kvs-analytics-ultralytics"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    return Path(tempfile.mkdtemp(prefix="kvs-analytics-ultralytics-"))


def _device(device: str, torch) -> str:
    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.isdigit():
        return f"cuda:{device}"
    return device


def _precision_args(half: bool) -> dict[str, Any]:
    """FP16 or FP32: `quantize` in current Ultralytics, `half` before it (deprecated since)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    if "quantize" in DEFAULT_CFG_DICT:
        return {"quantize": 16 if half else None}
    return {"half": half}


def _class_ids(classes: Sequence[str], names: dict[int, str]) -> list[int] | None:
    """The model's ids of class names; None (every class) for an empty list."""
    if not classes:
        return None
    ids_by_name = {name: cls for cls, name in names.items()}
    unknown = [c for c in classes if c not in ids_by_name]
    if unknown:
        some = ", ".join(list(ids_by_name)[:8]) + (", ..." if len(ids_by_name) > 8 else "")
        raise ConfigError(f"processing.yolo.classes: {', '.join(map(repr, unknown))} not among "
                          f"the model's {len(ids_by_name)} class names ({some})")
    return sorted({ids_by_name[c] for c in classes})


def coco_names(task: str = "detect") -> dict[int, str]:
    """The class names of the COCO dataset Ultralytics trains on: its coco.yaml (80 classes), or
    coco-pose.yaml (person) for task "pose". Needs Ultralytics imported (import_ultralytics)."""
    import yaml
    from ultralytics.cfg import DEFAULT_CFG_PATH
    dataset = DEFAULT_CFG_PATH.parent / "datasets" / (
        "coco-pose.yaml" if task == "pose" else "coco.yaml")
    return {int(k): str(v) for k, v in yaml.safe_load(dataset.read_text())["names"].items()}


def _name_like_coco(yolo, task: str) -> None:
    """Give a model built from an architecture .yaml the COCO names its class count implies."""
    names = yolo.model.names
    if any(str(v) != str(k) for k, v in names.items()):
        return
    try:
        coco = coco_names(task)
    except (OSError, KeyError, TypeError, ValueError, AttributeError):
        return
    if len(coco) == len(names):
        yolo.model.names = coco


def _keypoint_count(yolo) -> int:
    module = yolo.model
    shape = getattr(module, "kpt_shape", None)
    if shape is None:
        shape = (getattr(module, "yaml", None) or {}).get("kpt_shape")
    if shape is None:
        backend = getattr(yolo.predictor, "model", None)  # exported models, set up by .names
        shape = getattr(backend, "kpt_shape", None)
    if shape is None:
        raise ConfigError("processing.yolo.weights: cannot tell the pose model's keypoints")
    return int(shape[0])


def _bgr(image: np.ndarray) -> np.ndarray:
    """Ultralytics takes BGR arrays (OpenCV's order); frames are RGB."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image[..., ::-1])


def _unit(value: float) -> float:
    return min(1.0, max(0.0, float(value)))
