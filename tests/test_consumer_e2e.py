"""End to end: simulator -> local KVS -> consumer (real pose model) -> KDS + S3 + checkpoints.

Assertions are on what a user reads back: the records in the data stream, the objects in the
bucket, the checkpoint item, and how the process exits.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from PIL import Image

from consumer.config import load_config
from consumer.demo import read_all_records
from consumer.fleet.lease_table import LeaseTable
from consumer.formats.pose_sequence import read_pose_sequence
from consumer.formats.records import load_schema
from consumer.run import build_processor
from consumer.streams.supervisor import StreamSupervisor
from infra.local.limits import Limits
from infra.local.stack import LocalStack

from .conftest import CAPTURES, MODELS, REPO

# The slowest tests here are marked slow (left out of a plain `python -m pytest`; .ci/run runs them)
TABLE = "checkpoints"
CLIP = CAPTURES / "vogels_330.mkv"
CLIP_FRAGMENTS = 6  # what producer_sim makes of vogels_330.mkv with 2 s fragments


@pytest.fixture(scope="module")
def stack(captures, models):
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as local:
        LeaseTable(local.client("dynamodb"), TABLE, "reader").ensure_table()
        yield local


def push(stack, stream: str, clip: Path = CLIP) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "producer_sim", "push", "--source", str(clip), "--stream", stream,
         "--endpoint-url", stack.endpoints["kinesisvideo"], "--create-stream"],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def config_data(stack, streams: list[str], data_stream: str, bucket: str, **extra) -> dict:
    endpoints = {k: v for k, v in stack.endpoints.items() if k != "region"}
    data = {
        "aws": {"region": stack.region, "endpoints": endpoints},
        "streams": {"names": streams, "start": "EARLIEST", "relist_seconds": 1,
                    "defaults": {"sampling": {"mode": "fps", "fps": 2}, "frames": "persons"}},
        "processing": {"pose": {"models_dir": str(MODELS), "download": False}},
        "outputs": {"kinesis": {"stream": data_stream, "linger_ms": 50},
                    "s3": {"bucket": bucket}},
        "checkpoint": {"table": TABLE, "worker_id": "test-worker", "min_interval_seconds": 0.2},
        "logging": {"level": "INFO", "status_seconds": 2},
        "shutdown_seconds": 8,
    }
    data.update(extra)
    return data


def make_outputs(stack, data_stream: str, bucket: str) -> None:
    stack.client("s3").create_bucket(Bucket=bucket)
    stack.client("kinesis").create_stream(StreamName=data_stream, ShardCount=1)


def stream_arn(stack, name: str) -> str:
    return stack.client("kinesisvideo").describe_stream(StreamName=name)["StreamInfo"]["StreamARN"]


def last_fragment(stack, name: str) -> int:
    fragments = stack.client("kinesis-video-archived-media").list_fragments(
        StreamName=name)["Fragments"]
    return max(int(f["FragmentNumber"]) for f in fragments)


def checkpoint(stack, name: str) -> int | None:
    lease = LeaseTable(stack.client("dynamodb"), TABLE, "reader").lease(stream_arn(stack, name))
    return lease.checkpoint if lease else None


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def consume_until_checkpointed(stack, config, cameras: list[str],
                               timeout: float = 120) -> StreamSupervisor:
    """A consumer (the real processor) run until each camera's last fragment is checkpointed,
    then shut down: the supervisor, for its figures."""
    processor = build_processor(config)
    service = StreamSupervisor(config, processor).start()
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        for camera in cameras:
            final = last_fragment(stack, camera)
            wait_for(lambda camera=camera, final=final: checkpoint(stack, camera) == final,
                     timeout, f"{camera}'s last checkpoint")
    finally:
        stop.set()
        runner.join(10)
        assert service.shutdown()
        processor.close()
    return service


def objects(stack, bucket: str) -> list[str]:
    pages = stack.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def test_end_to_end_with_the_real_pose_model(stack):
    push(stack, "e2e-cam")
    make_outputs(stack, "e2e-records", "e2e-bucket")
    config = load_config(data=config_data(stack, ["e2e-cam"], "e2e-records", "e2e-bucket"),
                         environ={})
    service = consume_until_checkpointed(stack, config, ["e2e-cam"])

    records = read_all_records(stack.client("kinesis"), "e2e-records")
    analysed = service.frames_analysed
    assert len(records) == analysed > 30  # a record for every analysed frame (2 fps of ~30 s)
    schema = load_schema()
    for record in records:
        jsonschema.validate(record, schema)
    assert len({r["RecordId"] for r in records}) == len(records)
    fragments = {r["InputInformation"]["KinesisVideo"]["FragmentNumber"] for r in records}
    assert len(fragments) == CLIP_FRAGMENTS
    with_persons = [r for r in records if r["Persons"]]
    assert len(with_persons) >= 10  # the clip shows a person on stage
    assert all(len(p["Landmarks"]) == 33 for r in with_persons for p in r["Persons"])

    keys = objects(stack, "e2e-bucket")
    jpegs = [k for k in keys if k.endswith(".jpg")]
    poses = [k for k in keys if k.endswith(".parquet")]
    assert len(jpegs) == len(with_persons)  # frames: persons
    s3 = stack.client("s3")
    for key in jpegs[:5]:
        image = Image.open(io.BytesIO(s3.get_object(Bucket="e2e-bucket", Key=key)["Body"].read()))
        assert image.size == (640, 330)
    linked = {f["Key"] for r in with_persons for f in r.get("Frames", [])}
    assert linked == set(jpegs)
    assert len(poses) == CLIP_FRAGMENTS
    rows = 0
    for key in poses:
        sequence = read_pose_sequence(s3.get_object(Bucket="e2e-bucket", Key=key)["Body"].read())
        assert sequence.landmarks.shape[1:] == (33, 5)
        rows += sequence.landmarks.shape[0]
    assert rows >= len(records)  # a row per frame (no person) or per person


def write_config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "consumer.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_consumer(config: Path, log: Path, stats: Path | None = None) -> subprocess.Popen:
    extra = ["--stats-file", str(stats)] if stats else []
    return subprocess.Popen([sys.executable, "-m", "consumer", "run", "--config", str(config),
                             *extra],
                            stdout=log.open("a"), stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_sigkill_then_restart_loses_nothing_and_repeats_no_record_id(stack, tmp_path):
    push(stack, "kill-cam")
    make_outputs(stack, "kill-records", "kill-bucket")
    config = write_config(tmp_path, config_data(stack, ["kill-cam"], "kill-records",
                                                "kill-bucket"))
    log = tmp_path / "consumer.log"
    final = last_fragment(stack, "kill-cam")
    first = start_consumer(config, log)
    try:
        wait_for(lambda: checkpoint(stack, "kill-cam") is not None, 90, "a first checkpoint")
        assert checkpoint(stack, "kill-cam") != final, "too late to kill mid-stream"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    killed_at = checkpoint(stack, "kill-cam")
    before = read_all_records(stack.client("kinesis"), "kill-records")
    second = start_consumer(config, log)
    try:
        wait_for(lambda: checkpoint(stack, "kill-cam") == final, 120, "the last checkpoint")
        second.send_signal(signal.SIGTERM)
        assert second.wait(15) == 0
    finally:
        second.kill()
    records = read_all_records(stack.client("kinesis"), "kill-records")
    ids = [r["RecordId"] for r in records]
    assert len(ids) == len(set(ids)), "a record id was delivered twice"
    assert len(records) > len(before)
    # Nothing lost: every fragment has records, and the frames match a clean decode.
    per_fragment = {}
    for record in records:
        video = record["InputInformation"]["KinesisVideo"]
        per_fragment.setdefault(int(video["FragmentNumber"]), set()).add(video["FrameIndex"])
    assert len(per_fragment) == CLIP_FRAGMENTS and max(per_fragment) == final
    assert min(per_fragment) <= killed_at < final
    expected = expected_frames(stack, "kill-cam")
    assert per_fragment == expected
    assert "records already delivered" in log.read_text()


def expected_frames(stack, name: str) -> dict[int, set[int]]:
    """The frames a clean run analyses: decode every fragment with the same sampling."""
    from consumer.config import Sampling
    from consumer.pipeline.decode import StreamDecoder
    from consumer.wire import iter_fragments
    response = stack.client("kinesis-video-media").get_media(
        StreamName=name, StartSelector={"StartSelectorType": "EARLIEST"})
    decoder = StreamDecoder(name, "arn", Sampling(mode="fps", fps=2))
    return {fragment.fragment_number: {f.source.frame_index for f in decoder.decode(fragment)}
            for fragment in iter_fragments(response["Payload"])}


def test_sigterm_exits_cleanly_within_10_s_with_the_checkpoint_at_the_last_durable_fragment(
        stack, tmp_path):
    push(stack, "term-cam")
    make_outputs(stack, "term-records", "term-bucket")
    config = write_config(tmp_path, config_data(stack, ["term-cam"], "term-records",
                                                "term-bucket"))
    process = start_consumer(config, tmp_path / "consumer.log", tmp_path / "stats.json")
    try:
        wait_for(lambda: checkpoint(stack, "term-cam") is not None, 90, "a first checkpoint")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 10
    finally:
        process.kill()
    saved = checkpoint(stack, "term-cam")
    records = read_all_records(stack.client("kinesis"), "term-records")
    expected = expected_frames(stack, "term-cam")
    # every fragment up to the checkpoint is fully delivered ...
    for number, frames in expected.items():
        if number <= saved:
            got = {r["InputInformation"]["KinesisVideo"]["FrameIndex"] for r in records
                   if int(r["InputInformation"]["KinesisVideo"]["FragmentNumber"]) == number}
            assert got == frames, number
    # ... and the checkpoint is the last of the fragments delivered completely, in order
    got: dict[int, set[int]] = {}
    for record in records:
        video = record["InputInformation"]["KinesisVideo"]
        got.setdefault(int(video["FragmentNumber"]), set()).add(video["FrameIndex"])
    durable_prefix = []
    for number in sorted(expected):
        if got.get(number, set()) != expected[number]:
            break
        durable_prefix.append(number)
    assert saved == durable_prefix[-1]
    assert "shut down" in (tmp_path / "consumer.log").read_text()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["streams"]["term-cam"]["frames_analysed"] == len(records)
    calls = stats["api_calls"]
    assert calls["kinesis-video-media:GetMedia"] >= 1 and calls["kinesis:PutRecords"] >= 1
    assert calls["dynamodb:UpdateItem"] >= 1 and calls.get("s3:PutObject", 0) >= 1


@pytest.mark.slow
def test_undecodable_and_deleted_streams_do_not_disturb_the_others(stack, tmp_path, capture):
    from consumer.wire import read_fragments

    from .kvs_wire_helpers import producer_mkv, put_media
    push(stack, "ok-cam")
    control = stack.client("kinesisvideo")
    control.create_stream(StreamName="junk-cam")
    junk = read_fragments(capture("test_mixed_tags.mkv"))  # V_MS/VFW/FOURCC: undecodable
    for fragment in junk:
        fragment.tracks = (fragment.tracks[0],)
    status, _, acks = put_media(stack.endpoints["kinesisvideo"], "junk-cam",
                                producer_mkv(junk, int(time.time() * 1000) - 60_000))
    assert status == 200 and sum(a["EventType"] == "PERSISTED" for a in acks) == len(junk)
    push(stack, "gone-cam")
    make_outputs(stack, "mixed-records", "mixed-bucket")
    config = write_config(tmp_path, config_data(stack, ["ok-cam", "junk-cam", "gone-cam"],
                                                "mixed-records", "mixed-bucket"))
    log = tmp_path / "consumer.log"
    process = start_consumer(config, log)
    try:
        wait_for(lambda: checkpoint(stack, "gone-cam") is not None, 90, "gone-cam started")
        control.delete_stream(StreamARN=stream_arn(stack, "gone-cam"))
        final = last_fragment(stack, "ok-cam")
        wait_for(lambda: checkpoint(stack, "ok-cam") == final, 120, "ok-cam's last checkpoint")
        junk_final = last_fragment(stack, "junk-cam")
        wait_for(lambda: checkpoint(stack, "junk-cam") == junk_final, 30,
                 "junk-cam's checkpoint past its undecodable fragments")
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    finally:
        process.kill()
    text = log.read_text()
    assert "V_MS/VFW/FOURCC" in text and "skipping the fragment" in text
    assert "stream gone-cam: deleted; let go and its lease removed" in text
    leases = LeaseTable(stack.client("dynamodb"), TABLE, "reader").snapshot().leases
    assert "gone-cam" not in {lease.stream_name for lease in leases}
    records = read_all_records(stack.client("kinesis"), "mixed-records")
    streams = {r["InputInformation"]["KinesisVideo"]["StreamName"] for r in records}
    assert "ok-cam" in streams and "junk-cam" not in streams
    ok_fragments = {r["InputInformation"]["KinesisVideo"]["FragmentNumber"] for r in records
                    if r["InputInformation"]["KinesisVideo"]["StreamName"] == "ok-cam"}
    assert len(ok_fragments) == CLIP_FRAGMENTS


def test_a_legal_name_with_dots_is_read_keyed_and_checkpointed(stack):
    """`evil..cam` is a legal KVS name: its frames go under `stream=evil..cam/`, its records
    are sent and it checkpoints its last fragment (it used to raise on every frame)."""
    push(stack, "evil..cam")
    make_outputs(stack, "dots-records", "dots-bucket")
    data = config_data(stack, ["evil..cam"], "dots-records", "dots-bucket",
                       processing={"processor": "none"})
    data["streams"]["defaults"]["frames"] = "all"
    config = load_config(data=data, environ={})
    service = StreamSupervisor(config, build_processor(config)).start()
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        final = last_fragment(stack, "evil..cam")
        wait_for(lambda: checkpoint(stack, "evil..cam") == final, 90, "the last checkpoint")
    finally:
        stop.set()
        runner.join(10)
        assert service.shutdown()
    records = read_all_records(stack.client("kinesis"), "dots-records")
    keys = objects(stack, "dots-bucket")
    assert len(records) == len(keys) > 30
    assert all(key.startswith("frames/stream=evil..cam/date=") for key in keys)
    assert {r["InputInformation"]["KinesisVideo"]["StreamName"] for r in records} == {"evil..cam"}
