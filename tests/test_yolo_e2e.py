"""End to end with the YOLO processor (random weights from Ultralytics' architecture file, the
real code path; no weights can be downloaded here): two simulated cameras -> local KVS -> the
consumer, one YOLO model batching both cameras' frames -> records and checkpoints. It must run
cleanly to the last fragment of both streams; what a random network detects is meaningless.

Without Ultralytics (the `yolo` extra) this skips with the reason; under CI it fails instead."""

from __future__ import annotations

import os
import threading

import jsonschema
import pytest

from consumer.config import load_config
from consumer.demo import read_all_records
from consumer.formats.records import load_schema
from consumer.run import build_processors
from consumer.streams.supervisor import StreamSupervisor

from .test_consumer_e2e import (
    checkpoint,
    config_data,
    last_fragment,
    make_outputs,
    push,
    stack,  # noqa: F401 (stack is a fixture)
    wait_for,
)

pytestmark = pytest.mark.slow
CAMERAS = ("yolo-cam-1", "yolo-cam-2")


@pytest.fixture(scope="module")
def yolo_installed(tmp_path_factory):
    from processors.yolo import YoloNotInstalledError, import_ultralytics
    try:
        import_ultralytics(tmp_path_factory.mktemp("yolo-config"))
    except YoloNotInstalledError as err:
        if os.environ.get("CI"):
            pytest.fail(str(err))
        pytest.skip(str(err))


def test_two_cameras_through_one_random_weights_yolo_pose_model(stack, yolo_installed,
                                                                 tmp_path):
    for camera in CAMERAS:
        push(stack, camera)
    make_outputs(stack, "yolo-records", "yolo-bucket")
    data = config_data(stack, list(CAMERAS), "yolo-records", "yolo-bucket",
                       events={"cameras": {"yolo-cam-*": {"rules": [
                           {"type": "zone", "name": "all",
                            "polygon": [[0, 0], [1, 0], [1, 1.1], [0, 1.1]]}]}}})
    data["processing"] = {"processor": "yolo", "batch_size": 8, "batch_wait_ms": 100,
                          "yolo": {"weights": "yolov8n-pose.yaml", "models_dir": str(tmp_path),
                                   "image_size": 320}}
    config = load_config(data=data, environ={})
    processors = build_processors(config)
    assert len(processors) == 1  # one model serves every camera
    service = StreamSupervisor(config, processors).start()
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        finals = {camera: last_fragment(stack, camera) for camera in CAMERAS}
        wait_for(lambda: all(checkpoint(stack, c) == finals[c] for c in CAMERAS), 300,
                 "the last checkpoint of both cameras")
    finally:
        stop.set()
        runner.join(10)
        assert service.shutdown()
        processors[0].close()

    records = read_all_records(stack.client("kinesis"), "yolo-records")
    frames = [r for r in records if r["RecordType"] == "Frame"]
    assert len(frames) == service.frames_analysed > 60  # both cameras, 2 fps of ~30 s each
    schema = load_schema()
    for record in frames:
        jsonschema.validate(record, schema)
    assert {r["Processor"]["Name"] for r in frames} == {"yolo"}
    assert {r["Processor"]["Model"] for r in frames} == {"yolov8n-pose.yaml"}
    streams = {r["InputInformation"]["KinesisVideo"]["StreamName"] for r in frames}
    assert streams == set(CAMERAS)
    stats = service.stats()["analysis"]
    assert stats["workers"] == 1 and stats["batches"] < stats["frames"]  # frames were batched
    assert stats["mixed_batches"] > 0  # ... with both cameras' frames in one forward pass
