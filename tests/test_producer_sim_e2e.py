"""The camera simulator against the local Kinesis Video Streams service, over real HTTP.

`python -m producer_sim` runs as a subprocess, as a user runs it; the service runs in this process.
What a push stores is read back with GetMedia (boto3) and decoded with PyAV.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import av
import numpy as np
import pytest

from consumer.media.fragmenter import fragment_packets
from consumer.media.sources import FileSource, TestPatternSource, decode_packets
from consumer.wire import iter_fragments
from infra.local.kvs_service import LocalKvsService
from infra.local.limits import Limits
from producer_sim.camera import Camera, CameraConfig
from producer_sim.control import AwsContext, prepare_stream

from .producer_sim_helpers import client, simulator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def kvs():
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=0.5)) as service:
        yield service


@pytest.fixture
def vogels(captures):
    return captures / "vogels_330.mkv"


def get_media(kvs, stream: str) -> list:
    media = client(kvs, "kinesis-video-media", "GET_MEDIA", stream)
    response = media.get_media(StreamName=stream, StartSelector={"StartSelectorType": "EARLIEST"})
    return list(iter_fragments(response["Payload"]))


def test_push_then_get_media_returns_the_same_fragments_and_pixels(kvs, vogels):
    started = time.time()
    done = simulator("push", "--source", str(vogels), "--stream", "vogels",
                     "--endpoint-url", kvs.endpoint_url, "--create-stream")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith(f"pushing {vogels} (h264, re-muxed) to stream vogels")
    assert "fragments sent 6, persisted 6" in done.stdout
    assert lines[-1].startswith("done: push: 6/6 fragments (909 frames) persisted to vogels")

    expected = fragment_packets(FileSource(vogels), None, 2000)
    got = get_media(kvs, "vogels")
    assert len(got) == len(expected) == 6
    assert [len(f.video_frames()) for f in got] == [len(f.frames) for f in expected]
    assert len({f.fragment_number for f in got}) == 6
    first = got[0].cluster_timecode
    assert [f.cluster_timecode - first for f in got] == \
        [f.cluster_timecode - expected[0].cluster_timecode for f in expected]
    # Producer timestamps are wall-clock: the file was placed so that it ends at push time.
    assert started - 30.4 - 1 <= got[0].producer_timestamp <= time.time() - 30.4
    assert got[-1].producer_timestamp <= time.time()

    # Every frame decodes (CodecPrivate as extradata) to the pixels of the source file itself.
    track = got[0].video_track
    stored = decode_packets(track, [f.data for fragment in got for f in fragment.video_frames()],
                            format=None)  # the decoder's own YUV planes: an exact comparison
    with av.open(str(vogels)) as container:
        container.streams.video[0].thread_type = "AUTO"
        direct = [frame.to_ndarray() for frame in container.decode(video=0)]
    assert len(stored) == len(direct) == 909
    for index in range(909):
        assert np.array_equal(stored[index], direct[index]), f"frame {index} differs"


def test_unknown_stream_without_create_stream(kvs, vogels):
    done = simulator("push", "--source", str(vogels), "--stream", "ghost",
                     "--endpoint-url", kvs.endpoint_url)
    assert done.returncode == 3
    assert "error: stream 'ghost' does not exist" in done.stderr
    assert "--create-stream" in done.stderr
    assert client(kvs).list_streams()["StreamInfoList"] == []


def test_bad_inputs_are_named(kvs, tmp_path):
    missing = simulator("push", "--source", str(tmp_path / "nope.mkv"), "--stream", "s",
                        "--endpoint-url", kvs.endpoint_url)
    assert missing.returncode == 2 and "nope.mkv: no such file" in missing.stderr
    bad = simulator("push", "--source", "x.mkv", "--stream", "s", "--fragment-duration", "2 days")
    assert bad.returncode == 2 and "bad duration '2 days'" in bad.stderr
    not_video = simulator("push", "--source", str(REPO / "pyproject.toml"), "--stream", "s")
    assert not_video.returncode == 2
    assert f"error: {REPO / 'pyproject.toml'}: " in not_video.stderr


def test_help_teaches():
    done = simulator("push", "--help")
    assert done.returncode == 0
    for text in ("examples:", "--create-stream", "--endpoint-url", "exit codes:", "PERSISTED"):
        assert text in done.stdout
    assert "testpattern" in simulator("run", "--help").stdout


@pytest.mark.slow
def test_run_two_cameras_in_real_time(kvs, vogels):
    done = simulator("run", "--source", "testpattern:160x120@15", "--source", str(vogels),
                     "--cameras", "2", "--stream-prefix", "live", "--create-stream",
                     "--endpoint-url", kvs.endpoint_url, "--duration", "3.5",
                     "--fragment-duration", "1", "--status-interval", "0.5")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "cam1: testpattern:160x120@15 -> stream live-1" in out
    assert f"cam2: {vogels} -> stream live-2" in out
    status = [line for line in out.splitlines() if line.startswith("[")]
    assert len(status) >= 10  # two lines every half second
    assert any("cam1" in line and "Mbit/s" in line and "persisted" in line for line in status)
    final = [line for line in out.splitlines() if line.startswith("done: ")]
    assert len(final) == 2
    # Test pattern: a keyframe a second, so ~3 one-second fragments; vogels: keyframes at 0 and
    # 2.169 s, so 2 fragments (the last one cut short by the stop).
    pattern, clip = get_media(kvs, "live-1"), get_media(kvs, "live-2")
    assert 3 <= len(pattern) <= 5 and len(clip) == 2
    assert len(clip[0].video_frames()) == 65
    now = time.time()
    for fragments in (pattern, clip):
        assert all(now - 10 < f.producer_timestamp < now for f in fragments)
        stamps = [f.producer_timestamp for f in fragments]
        assert stamps == sorted(stamps)


def test_camera_reconnects_on_max_connection_duration():
    # The service ends sessions after 1 s with 4003 MAX_CONNECTION_DURATION_REACHED (AWS: 45 min).
    with LocalKvsService(limits=Limits(putmedia_max_connection_seconds=1.0,
                                       getmedia_idle_seconds=0.5)) as kvs:
        aws = AwsContext(kvs.endpoint_url)
        target = prepare_stream("short", aws, create=True)
        source = TestPatternSource(96, 64, fps=10, frames=30, keyframe_interval_s=0.5)
        camera = Camera("cam", source, target, CameraConfig(realtime=True,
                                                            fragment_duration_ms=500))
        result = asyncio.run(asyncio.wait_for(camera.run(), 30))
        assert result.ok, result.summary()
        assert result.status.connections >= 2 and "4003" in result.status.last_error
        got = get_media(kvs, "short")
        assert [len(f.video_frames()) for f in got] == [5] * 6
        stamps = [f.producer_timestamp for f in got]
        assert stamps == sorted(stamps) and len(set(stamps)) == 6


def test_deleted_stream_stops_the_camera_with_a_clear_error(kvs):
    aws = AwsContext(kvs.endpoint_url)
    target = prepare_stream("doomed", aws, create=True)
    source = TestPatternSource(96, 64, fps=10, keyframe_interval_s=0.5)  # endless
    camera = Camera("cam", source, target, CameraConfig(
        realtime=True, fragment_duration_ms=500, backoff_initial_s=0.05, backoff_max_s=0.2))

    async def scenario():
        task = asyncio.create_task(camera.run())
        while camera.status.persisted < 2:
            await asyncio.sleep(0.05)
        arn = client(kvs).describe_stream(StreamName="doomed")["StreamInfo"]["StreamARN"]
        client(kvs).delete_stream(StreamARN=arn)
        return await asyncio.wait_for(task, 20)

    result = asyncio.run(scenario())
    assert not result.ok
    assert "ResourceNotFoundException" in result.error
