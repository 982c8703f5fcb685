"""The YOLO processor with real Ultralytics models: one forward pass a batch, results routed back.

No weights can be downloaded here, so the models are built from Ultralytics' architecture files
(yolov8n.yaml, yolov8n-pose.yaml) with random weights. Freshly built, such a network answers the
same for every input: PyTorch's default initialisation shrinks the signal layer by layer, so what
reaches the head is ~0 and every score is the head's bias (no detections at all for the detector;
1/81 everywhere for the pose model), whatever the seed. The `calibrated` fixture therefore
recomputes the BatchNorm statistics from the test frames (one forward pass in training mode,
weights still random) and saves that as a .pt: its answers then depend on the frame, which is
what checking that each result lands on its own frame needs.

Without Ultralytics (the `yolo` extra) these tests skip with the reason; under CI (CI set) they
fail instead.
"""

from __future__ import annotations

import hashlib
import os
import queue
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from consumer.config import ConfigError, ProcessorKind, Yolo, load_config
from consumer.formats.annotate import COCO_CONNECTIONS, draw_persons
from consumer.formats.pose_sequence import pose_sequence_parquet, read_pose_sequence
from consumer.pipeline.analysis import Analysed, AnalysisRequest, Analyzer
from processors.base import FrameResult
from processors.frames import VideoFrame
from processors.models import ModelNotFoundError
from processors.yolo import (
    INSTALL_HINT,
    RELEASES_URL,
    YoloNotInstalledError,
    YoloProcessor,
    coco_names,
    import_ultralytics,
)
from tests.conftest import _require
from tests.pose_helpers import decode_frames, source

IMAGE_SIZE = 320  # fast on a CPU; the benchmark (bench/yolo_batch.py) measures 640
STREAMS = ("cam-a", "cam-b", "cam-c")
TOLERANCE = 1e-3  # batched vs alone: same letterbox, only float summation order differs
# The random detector's scores are tiny (~1e-5..1e-2: its class biases start at Ultralytics'
# prior of a few objects an image over 80 classes), hence a threshold far below any real one.
CONFIDENCE = 1e-5


@pytest.fixture(scope="module")
def ultra(tmp_path_factory):
    """(ultralytics, torch), imported the processor's way (offline, config dir not in $HOME)."""
    try:
        return import_ultralytics(tmp_path_factory.mktemp("yolo-models"))
    except YoloNotInstalledError as err:
        if os.environ.get("CI"):
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def frames(captures) -> list[VideoFrame]:
    """Three real decoded frames and three synthetic ones (other sizes), over three streams."""
    clip = _require(captures / "vogels_330.mkv", "capture vogels_330.mkv")
    real = decode_frames(clip, [0, 300, 600])
    rng = np.random.default_rng(5)
    gradient = np.zeros((240, 320, 3), np.uint8)
    gradient[..., 0] = np.linspace(0, 255, 320, dtype=np.uint8)
    gradient[..., 2] = np.linspace(255, 0, 240, dtype=np.uint8)[:, None]
    images = [real[0], real[300], real[600], gradient,
              rng.integers(0, 256, (480, 360, 3), np.uint8),
              np.full((330, 640, 3), (90, 140, 60), np.uint8)]
    return [VideoFrame(source(STREAMS[i % 3], index=i), image, keyframe=i == 0)
            for i, image in enumerate(images)]


@pytest.fixture(scope="module")
def calibrated(ultra, frames, tmp_path_factory):
    """Function: architecture .yaml -> a .pt of it with random weights, BatchNorm statistics
    from the test frames and COCO's class names (so class 0 is "person")."""
    ultralytics, torch = ultra
    folder = tmp_path_factory.mktemp("calibrated")
    built: dict[str, Path] = {}

    def build(architecture: str) -> Path:
        if architecture not in built:
            torch.manual_seed(0)
            yolo = ultralytics.YOLO(architecture)
            network = yolo.model
            network.names = coco_names(yolo.task)
            batch = torch.stack([
                torch.nn.functional.interpolate(
                    torch.from_numpy(frame.image).permute(2, 0, 1)[None].float() / 255,
                    size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear")[0] for frame in frames])
            for module in network.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.reset_running_stats()
                    module.momentum = None  # a plain average over the batch
            network.train()
            with torch.no_grad():
                network(batch)
            network.eval()
            path = folder / architecture.replace(".yaml", "-calibrated.pt")
            yolo.save(path)
            built[architecture] = path
        return built[architecture]
    return build


@contextmanager
def forward_passes(ultra):
    """The batch size of every forward pass of a YOLO network, while the block runs."""
    _, torch = ultra
    from ultralytics.nn.tasks import DetectionModel  # PoseModel is one too
    batches: list[int] = []

    def hook(module, args, _output):
        if isinstance(module, DetectionModel):
            batches.append(int(args[0].shape[0]))
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield batches
    finally:
        handle.remove()


def config(weights, **changes) -> Yolo:
    settings = {"weights": str(weights), "confidence": CONFIDENCE, "image_size": IMAGE_SIZE,
                "max_detections": 30, "classes": []}
    return Yolo(**{**settings, **changes})


def detections(result: FrameResult) -> list[tuple[str, float, tuple, np.ndarray | None]]:
    found = [("person", p.confidence, p.bbox,
              np.array([(m.x, m.y, m.visibility) for m in p.landmarks]) if p.landmarks else None)
             for p in result.persons]
    found += [(o["label"], o["confidence"], tuple(o["bbox"]), None)
              for o in result.extra.get("objects", [])]
    return found


def same(a: FrameResult, b: FrameResult, tolerance: float = TOLERANCE) -> bool:
    """The same detections in any order: label, score (relative `tolerance`), box and
    landmarks (absolute `tolerance`)."""
    ours, theirs = detections(a), detections(b)
    if len(ours) != len(theirs):
        return False

    def match(d, e) -> bool:
        return (d[0] == e[0] and abs(d[1] - e[1]) <= tolerance * max(d[1], e[1])
                and max(abs(u - v) for u, v in zip(d[2], e[2], strict=True)) <= tolerance
                and (d[3] is None) == (e[3] is None)
                and (d[3] is None or np.abs(d[3] - e[3]).max() <= tolerance))
    return all(any(match(d, e) for e in ours) for d in theirs)


def alone(processor: YoloProcessor, frames) -> list[FrameResult]:
    return [processor.process([frame])[0] for frame in frames]


# --- batching -------------------------------------------------------------------------------------

def test_frames_of_three_streams_go_through_one_forward_pass(ultra, frames, calibrated):
    with YoloProcessor(config(calibrated("yolov8n.yaml")), max_batch=8) as processor:
        processor.process(frames[:1])  # set-up (and on a GPU, warm-up) passes
        with forward_passes(ultra) as batches:
            batched = processor.process(frames)
        assert batches == [len(frames)] == [6]
        assert len({f.source.stream_name for f in frames}) == 3
        singles = alone(processor, frames)
    assert len(batched) == len(frames)
    for index, (result, single) in enumerate(zip(batched, singles, strict=True)):
        assert detections(single), f"frame {index}: no detection to compare"
        assert same(result, single), f"frame {index}: batched result differs from its own"
    # the frames' answers differ from one another, so a result routed to the wrong frame shows
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            assert not same(singles[i], singles[j]), f"frames {i} and {j} answer alike"
    # every class kept: classes other than person go to extra["objects"]
    assert any(r.extra.get("objects") for r in batched)
    for result in batched:
        for obj in result.extra.get("objects", []):
            assert obj["label"] != "person" and obj["label"] in coco_names().values()
            left, top, right, bottom = obj["bbox"]
            assert 0 <= left <= right <= 1 and 0 <= top <= bottom <= 1


def test_persons_and_objects_follow_the_chosen_classes(ultra, frames, calibrated):
    weights = calibrated("yolov8n.yaml")
    # threshold 0: a box is kept when the chosen class is its best one (Ultralytics' filter)
    with YoloProcessor(config(weights, classes=["person"], confidence=0.0),
                       max_batch=8) as processor:
        results = processor.process(frames)
    assert sum(bool(r.persons) for r in results) >= 3
    assert not any(r.extra for r in results)
    for person in (p for r in results for p in r.persons):
        assert person.landmarks == () and 0 < person.confidence <= 1
        left, top, right, bottom = person.bbox
        assert 0 <= left <= right <= 1 and 0 <= top <= bottom <= 1
    with YoloProcessor(config(weights, classes=["car", "dog"]), max_batch=8) as processor:
        results = processor.process(frames)
    assert not any(r.persons for r in results)
    labels = {o["label"] for r in results for o in r.extra.get("objects", [])}
    assert labels == {"car", "dog"}


def test_channels_are_given_to_ultralytics_as_bgr(ultra, frames, calibrated):
    """The processor's answer for an RGB frame is Ultralytics' own for the BGR array."""
    ultralytics, _ = ultra
    weights = calibrated("yolov8n.yaml")
    frame = frames[1]
    with YoloProcessor(config(weights), max_batch=8) as processor:
        ours = processor.process([frame])[0]
        swapped = processor.process([VideoFrame(frame.source, frame.image[..., ::-1].copy(),
                                                True)])[0]
    theirs = ultralytics.YOLO(weights).predict(
        np.ascontiguousarray(frame.image[..., ::-1]), conf=CONFIDENCE, imgsz=IMAGE_SIZE,
        max_det=30,
        rect=False, device="cpu", verbose=False)[0]
    boxes = sorted(zip(theirs.boxes.conf.tolist(), theirs.boxes.xyxyn.tolist()), reverse=True)
    mine = sorted((d[1], list(d[2])) for d in detections(ours))[::-1]
    assert len(mine) == len(boxes)
    for (score, box), (their_score, their_box) in zip(mine, boxes, strict=True):
        assert score == pytest.approx(their_score, rel=TOLERANCE)
        assert box == pytest.approx(their_box, abs=TOLERANCE)
    assert not same(ours, swapped)


def test_max_batch_caps_each_forward_pass(ultra, frames, calibrated):
    with YoloProcessor(config(calibrated("yolov8n.yaml")), max_batch=2) as processor:
        assert processor.max_batch == 2
        processor.process(frames[:1])
        with forward_passes(ultra) as batches:
            results = processor.process(frames[:5])
        singles = alone(processor, frames[:5])
        assert batches == [2, 2, 1]
        assert all(same(r, s) for r, s in zip(results, singles, strict=True))
        analyzer = Analyzer(processor, queue.Queue(), lambda *_: None, batch_size=8,
                            batch_wait_ms=0)
        assert analyzer.batch_size == 2
    assert processor.process([]) == []


def test_the_analyzer_sends_three_streams_in_one_call_and_routes_each_result(
        ultra, frames, calibrated):
    with YoloProcessor(config(calibrated("yolov8n.yaml")), max_batch=8) as processor:
        singles = alone(processor, frames)
        work: queue.Queue = queue.Queue()
        for index, frame in enumerate(frames):  # a session key per stream
            work.put(AnalysisRequest(hash(frame.source.stream_arn) % 1000, frame))
        routed: list[tuple[int, Analysed]] = []
        analyzer = Analyzer(processor, work, lambda key, message: routed.append((key, message)),
                            batch_size=8, batch_wait_ms=200)
        with forward_passes(ultra) as batches:
            analyzer.start()
            try:
                assert analyzer.drain(60)
            finally:
                analyzer.stop()
    assert batches == [len(frames)]
    assert analyzer.batches == 1 and analyzer.frames == len(frames)
    assert [message.frame for _, message in routed] == frames
    expected = {frame.source.record_id: single for frame, single in zip(frames, singles,
                                                                         strict=True)}
    for key, message in routed:
        assert isinstance(message, Analysed)
        assert key == hash(message.frame.source.stream_arn) % 1000  # back to its session
        assert same(message.result, expected[message.frame.source.record_id]), \
            message.frame.source


# --- pose -----------------------------------------------------------------------------------------

def test_a_pose_model_gives_17_coco_landmarks_a_person(ultra, frames, calibrated):
    weights = calibrated("yolov8n-pose.yaml")
    with YoloProcessor(config(weights, classes=["person"]), max_batch=8) as processor:
        assert processor.landmark_set == "coco-17"
        assert processor.model == weights.name
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        assert processor.model_version.startswith("ultralytics-")
        assert processor.model_version.endswith(f"+{digest}")
        results = processor.process(frames)
        singles = alone(processor, frames)
    assert all(r.persons for r in results)
    for result, single in zip(results, singles, strict=True):
        assert same(result, single)
        assert "objects" not in result.extra
        for person in result.persons:
            assert len(person.landmarks) == 17
            for mark in person.landmarks:
                assert mark.z == 0.0 and mark.visibility == mark.presence
                assert 0 <= mark.visibility <= 1
                assert np.isfinite(mark.x) and np.isfinite(mark.y)
    assert not same(singles[0], singles[1])
    # the pose sequence of a YOLO pose model: 17 landmarks a row, the set in the metadata
    items = [(frame.source, result) for frame, result in zip(frames, results, strict=True)]
    back = read_pose_sequence(pose_sequence_parquet(items, landmark_set=processor.landmark_set))
    assert back.metadata["kvsa.pose.landmarks"] == "coco-17"
    assert back.landmarks.shape == (sum(len(r.persons) for r in results), 17, 5)
    first = results[0].persons[0].landmarks[5]
    assert back.landmarks[0, 5, 0] == pytest.approx(first.x, abs=1e-3)
    # and its skeleton is drawn with COCO's bones
    drawn = draw_persons(frames[0].image, results[0].persons[:1], min_visibility=0.0)
    assert not np.array_equal(drawn, frames[0].image)


def test_an_onnx_export_with_a_dynamic_batch_answers_like_its_pt(ultra, frames, calibrated,
                                                                 tmp_path):
    """Exported weights load through Ultralytics' own loader (ONNX Runtime here; TensorRT
    .engine files take the same path on a GPU) and batch across streams like the .pt."""
    pytest.importorskip("onnx", reason="exporting needs the onnx package (dev extra)")
    pytest.importorskip("onnxruntime", reason="an .onnx model runs on onnxruntime (dev extra)")
    ultralytics, _ = ultra
    weights = calibrated("yolov8n-pose.yaml")
    exported = Path(ultralytics.YOLO(weights).export(
        format="onnx", dynamic=True, imgsz=IMAGE_SIZE, simplify=False, verbose=False))
    with YoloProcessor(config(weights), max_batch=8) as torch_model, \
            YoloProcessor(config(exported), max_batch=8) as onnx_model:
        assert onnx_model.landmark_set == "coco-17" and onnx_model.model.endswith(".onnx")
        expected = torch_model.process(frames)
        got = onnx_model.process(frames)
    for index, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        assert detections(theirs), f"frame {index}: nothing to compare"
        assert same(ours, theirs, tolerance=5e-3), f"frame {index}: ONNX differs from .pt"


def test_a_pose_model_from_its_yaml_is_random_init_with_coco_names(ultra, frames):
    with YoloProcessor(config("yolov8n-pose.yaml", classes=["person"]), max_batch=4) as processor:
        assert processor.model_version == "random-init:yolov8n-pose.yaml"
        assert processor.names == {0: "person"} and processor.class_ids == [0]
        assert processor.landmark_set == "coco-17"
        # untrained: every score is the head's bias, 1/81, above a 0.001 threshold
        result = processor.process(frames[:1])[0]
    assert result.persons and all(len(p.landmarks) == 17 for p in result.persons)


def test_coco_skeleton_matches_ultralytics(ultra):
    from ultralytics.utils.plotting import Annotator
    theirs = Annotator(np.zeros((8, 8, 3), np.uint8)).skeleton
    assert [tuple(i - 1 for i in pair) for pair in theirs] == list(COCO_CONNECTIONS)


# --- configuration -------------------------------------------------------------------------------

def test_a_detector_from_its_yaml_defaults(ultra):
    with YoloProcessor(Yolo(weights="yolov8n.yaml", image_size=IMAGE_SIZE), max_batch=4) as proc:
        assert proc.name == "yolo" and proc.model == "yolov8n.yaml"
        assert proc.model_version == "random-init:yolov8n.yaml"
        assert proc.landmark_set == ""  # detection only: no pose sequences
        assert len(proc.names) == 80 and proc.names[0] == "person"
        assert proc.class_ids == [0]  # the default classes: ["person"]
        assert proc.device in ("cpu", "cuda:0") and proc.half == (proc.device == "cuda:0")


def test_class_names_map_to_ids_and_an_unknown_one_is_named(ultra):
    with YoloProcessor(Yolo(weights="yolov8n.yaml", classes=["car", "person", "dog"]),
                       max_batch=4) as processor:
        assert processor.class_ids == [0, 2, 16]
    with pytest.raises(ConfigError, match=r"'unicorn'.*(person|bicycle)") as caught:
        YoloProcessor(Yolo(weights="yolov8n.yaml", classes=["person", "unicorn"]), max_batch=4)
    assert "processing.yolo.classes" in str(caught.value)


def test_build_processor_chooses_yolo(ultra):
    from consumer.run import build_processor
    config = load_config(data={
        "streams": {"names": ["cam-1"]}, "outputs": {"kinesis": {"stream": "records"}},
        "processing": {"processor": "yolo", "batch_size": 12, "pose": {"enabled": False},
                       "yolo": {"weights": "yolov8n.yaml"}}}, environ={})
    assert config.processing.processor is ProcessorKind.YOLO
    processor = build_processor(config)
    try:
        assert isinstance(processor, YoloProcessor) and processor.max_batch == 12
    finally:
        processor.close()
    with pytest.raises(RuntimeError, match="closed"):
        processor.process([VideoFrame(source(), np.zeros((8, 8, 3), np.uint8), True)])


def test_missing_weights_name_the_file_and_where_to_get_them(tmp_path):
    with pytest.raises(ModelNotFoundError) as caught:
        YoloProcessor(Yolo(weights="yolov8n.pt", models_dir=tmp_path), max_batch=4)
    message = str(caught.value)
    assert "yolov8n.pt" in message and str(tmp_path) in message and RELEASES_URL in message
    assert caught.value.path == tmp_path / "yolov8n.pt"
    with pytest.raises(ModelNotFoundError, match="best.engine"):
        YoloProcessor(Yolo(weights=str(tmp_path / "sub" / "best.engine")), max_batch=4)


def test_without_ultralytics_the_error_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # import ultralytics -> ImportError
    with pytest.raises(YoloNotInstalledError, match=INSTALL_HINT.replace("[", r"\[")):
        YoloProcessor(Yolo(weights="yolov8n.yaml", models_dir=tmp_path), max_batch=4)


def test_the_module_imports_without_torch():
    code = ("import sys, processors.yolo, consumer.run; "
            "print('torch' in sys.modules, 'ultralytics' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]
