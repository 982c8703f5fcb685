"""bench.naive: the seed-style consumer against the local stack, read back from KDS and S3."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time

import av
import pytest
from PIL import Image

from bench.naive import PATH, Sampler, parse_args
from consumer.sinks.replay import read_all_records
from infra.local.limits import Limits
from infra.local.stack import LocalStack

from .conftest import REPO

STREAM, DATA_STREAM, BUCKET = "naive-cam", "naive-records", "naive-bucket"
FPS = 2.0


def test_sampler_takes_fps_frames_per_second_of_video():
    sampler = Sampler(2.0)
    times = [i / 15 for i in range(45)]  # 3 s at 15 fps
    taken = [t for t in times if sampler.take(t)]
    assert len(taken) == 6  # due at 0, 0.5, 1.0, ... on the grid, not drifting to 8 frames
    assert taken[:3] == pytest.approx([0, 8 / 15, 1.0])


def test_sampler_at_the_video_rate_takes_every_millisecond_rounded_frame():
    sampler = Sampler(15.0)
    times = [round(i * 1000 / 15) / 1000 for i in range(150)]  # Matroska ms timecodes
    assert all(sampler.take(t) for t in times)


def test_sampler_restarts_after_a_gap():
    sampler = Sampler(1.0)
    assert [sampler.take(t) for t in (0.0, 0.5, 1.0, 10.2, 10.7, 11.2)] == \
        [True, False, True, True, False, True]


def test_cli_defaults():
    args = parse_args(["--stream", "s", "--data-stream", "d", "--bucket", "b", "--fps", "2",
                       "--models-dir", "m"])
    assert args.start == "NOW" and args.kinesisvideo_url is None and args.num_poses == 4
    with pytest.raises(SystemExit):
        parse_args(["--stream", "s", "--data-stream", "d", "--bucket", "b", "--fps", "0",
                    "--models-dir", "m"])


def clip_frame_seconds(path) -> list[float]:
    """The clip's video frame times in seconds from its first frame, in presentation order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = sorted(p.pts for p in container.demux(stream) if p.size)
        base = pts[0]
        return [float((p - base) * stream.time_base) for p in pts]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
def test_naive_consumer_one_put_record_and_put_object_per_analysed_frame(
        captures, models, tmp_path):
    clip = captures / "vogels_330.mkv"
    seconds = clip_frame_seconds(clip)
    sampler = Sampler(FPS)
    expected = sum(sampler.take(t) for t in seconds)
    assert 55 <= expected <= 62  # 30 s of video at 2 fps

    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as stack:
        stack.client("s3").create_bucket(Bucket=BUCKET)
        stack.client("kinesis").create_stream(StreamName=DATA_STREAM, ShardCount=1)
        pushed_from = time.time()
        push = subprocess.run(
            [sys.executable, "-m", "producer_sim", "push", "--source", str(clip), "--stream",
             STREAM, "--endpoint-url", stack.endpoints["kinesisvideo"], "--create-stream"],
            check=False, capture_output=True, text=True, timeout=120, cwd=REPO)
        assert push.returncode == 0, push.stdout + push.stderr
        pushed_to = time.time()

        stats_file = tmp_path / "stats.json"
        e = stack.endpoints
        naive = subprocess.Popen(
            [sys.executable, "-m", "bench.naive", "--stream", STREAM,
             "--kinesisvideo-url", e["kinesisvideo"], "--s3-url", e["s3"],
             "--kinesis-url", e["kinesis"], "--region", stack.region,
             "--data-stream", DATA_STREAM, "--bucket", BUCKET, "--fps", str(FPS),
             "--models-dir", str(models), "--start", "EARLIEST", "--stats-file", str(stats_file)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        kinesis = stack.client("kinesis")
        try:
            wait_for(lambda: len(read_all_records(kinesis, DATA_STREAM)) >= expected, 60,
                     f"{expected} records")
            time.sleep(2.5)  # the GetMedia response ends after 1 s idle: one NOW reconnect
        finally:
            naive.send_signal(signal.SIGTERM)
            output, _ = naive.communicate(timeout=20)
        assert naive.returncode == 0, output

        raw = read_all_records(kinesis, DATA_STREAM)
        records = [json.loads(r["Data"]) for r in raw]
        keys = sorted(o["Key"] for o in stack.client("s3").list_objects_v2(
            Bucket=BUCKET).get("Contents", []))
        body = stack.client("s3").get_object(Bucket=BUCKET, Key=keys[0])["Body"].read()

    stats = json.loads(stats_file.read_text())
    assert stats["frames_decoded"] == len(seconds)  # every frame was decoded
    assert stats["frames_analysed"] == expected == len(records) == len(keys)
    calls = stats["api_calls"]
    assert calls["kinesis:PutRecord"] == expected and calls["s3:PutObject"] == expected
    assert "kinesis:PutRecords" not in calls
    assert calls["kinesis-video-media:GetMedia"] >= 2  # EARLIEST, then NOW after the end
    assert calls["kinesisvideo:GetDataEndpoint"] == calls["kinesis-video-media:GetMedia"]
    assert stats["persons"] == sum(r["PersonCount"] for r in records) > 0
    assert stats["elapsed_seconds"] > 0 and stats["cpu_seconds"] > 0
    stages = stats["stage_times"]  # the comparable per-stage breakdown
    assert {stage: stages[stage]["count"] for stage in PATH if stage != "arrival"} == \
        dict.fromkeys(PATH[1:], expected)
    assert stages["decode_frame"]["count"] == len(seconds)
    # a fragment is timed when the next one starts: every fragment but the last (6 keyframes)
    assert stages["arrival"]["count"] == stages["decode"]["count"] == 5
    assert 0 < stages["decode_frame"]["p50"] < stages["decode"]["p50"]

    assert {r["PartitionKey"] for r in raw} == {STREAM}
    times = [r["ProducerTime"] for r in records]
    assert times == sorted(times) and len(set(times)) == len(times)  # none read twice
    # the simulator's ABSOLUTE timecodes place the clip so that it ends at the push
    assert pushed_from - 35 < times[0] < times[-1] < pushed_to + 1
    assert times[-1] - times[0] == pytest.approx(seconds[-1], abs=0.6)
    assert sorted(r["S3Key"] for r in records) == keys
    for record in records:
        assert record["StreamName"] == STREAM and record["FrameIndex"] >= 1
        assert record["PersonCount"] == len(record["Persons"])
        for person in record["Persons"]:
            assert len(person) == 33 and set(person[0]) == {"x", "y", "z", "visibility",
                                                            "presence"}
    image = Image.open(io.BytesIO(body))
    assert image.format == "JPEG" and image.size == (640, 330)
