"""One camera against a scriptable PutMedia endpoint: acks, resends, backoff, renewal, pacing."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from botocore.credentials import Credentials

from consumer.media.fragmenter import fragment_packets
from consumer.media.sources import FileSource, TestPatternSource
from producer_sim.camera import Camera, CameraConfig
from producer_sim.control import StreamTarget

from .putmedia_fake import FakePutMedia, Script

FAST = {"realtime": False, "backoff_initial_s": 0.02, "backoff_max_s": 0.1, "ack_timeout_s": 5}


def target(url: str, done_event: str = "PERSISTED") -> StreamTarget:
    return StreamTarget("cam-1", url, "us-east-1", Credentials("AKID", "SECRET"), done_event)


def push(source, scripts=(), **config):
    """Run one camera against a fake endpoint; returns (result, fake)."""
    async def scenario():
        async with FakePutMedia(list(scripts)) as fake:
            camera = Camera("cam", source, target(fake.url), CameraConfig(**{**FAST, **config}))
            result = await asyncio.wait_for(camera.run(), 30)
            return result, fake

    return asyncio.run(scenario())


@pytest.fixture
def vogels(captures):
    return FileSource(captures / "vogels_330.mkv")


@pytest.fixture(scope="module")
def expected(captures):
    """What the fragmenter makes of vogels_330.mkv: (offset from the first timecode, frames)."""
    fragments = fragment_packets(FileSource(captures / "vogels_330.mkv"), None, 2000)
    return [(f.cluster_timecode, len(f.frames)) for f in fragments]


def shape(fragments):
    first = fragments[0].cluster_timecode
    return [(f.cluster_timecode - first, len(f.video_frames())) for f in fragments]


def test_push_persists_every_fragment_with_wall_clock_timecodes(vogels, expected):
    before = time.time() * 1000
    result, fake = push(vogels)
    after = time.time() * 1000
    assert result.ok, result.summary()
    s = result.status
    assert (s.fragments, s.frames, s.sent, s.persisted, s.errors, s.connections) == \
        (6, 909, 6, 6, 0, 1)
    assert shape(fake.persisted) == expected
    # As fast as possible, the recording is placed on the wall clock so that it ends now.
    first = fake.persisted[0].cluster_timecode
    assert before - 30_400 - 50 <= first <= after - 30_400
    assert fake.persisted[-1].video_frames()[-1].timecode <= after
    assert "6/6 fragments (909 frames) persisted" in result.summary()


def test_reset_connection_resends_what_was_not_persisted(vogels, expected):
    result, fake = push(vogels, [Script(drop_after=2)])
    assert result.ok, result.summary()
    assert result.status.connections == 2 and result.status.errors == 1
    assert result.status.resent >= 1
    assert shape(fake.persisted) == expected  # each fragment stored once, in order
    second = fake.connections[1].fragments
    assert second[0].cluster_timecode == fake.persisted[2].cluster_timecode


def test_transient_error_ack_reconnects_and_resends(vogels, expected):
    result, fake = push(vogels, [Script(error_acks={3: (5000, "INTERNAL_ERROR")})])
    assert result.ok, result.summary()
    assert result.status.errors == 1 and result.status.connections == 2
    assert result.status.resent >= 1
    assert shape(fake.persisted) == expected  # each fragment stored once, in order
    # The error ended the first session: the second starts again at the failed fragment.
    assert fake.connections[1].fragments[0].cluster_timecode == fake.persisted[2].cluster_timecode


def test_rejected_fragment_is_dropped_reported_and_fails_the_push(vogels, expected, caplog):
    result, fake = push(vogels, [Script(error_acks={2: (4002, "MAX_FRAGMENT_DURATION_REACHED")})])
    assert not result.ok
    assert (result.status.rejected, result.status.persisted, result.status.connections) == (1, 5, 1)
    [rejection] = result.rejections
    assert (rejection.error_id, rejection.error_code) == (4002, "MAX_FRAGMENT_DURATION_REACHED")
    assert rejection.timecode == fake.connections[0].fragments[1].cluster_timecode
    assert "ErrorId 4002" in caplog.text and "MAX_FRAGMENT_DURATION_REACHED" in caplog.text
    assert "1 rejected" in result.summary()


def test_fatal_refusal_is_not_retried(vogels):
    result, fake = push(vogels, [Script(refuse=(404, "ResourceNotFoundException",
                                                "The requested stream is not found"))])
    assert not result.ok
    assert len(fake.connections) == 1
    assert "ResourceNotFoundException" in result.error
    assert "The requested stream is not found" in result.error


def test_limits_are_retried_with_backoff(vogels, expected):
    limit = Script(refuse=(400, "ConnectionLimitExceededException", "one connection at a time"))
    result, fake = push(vogels, [limit, limit])
    assert result.ok, result.summary()
    assert len(fake.connections) == 3 and result.status.errors == 2
    assert shape(fake.persisted) == expected


def test_gives_up_after_max_retries(vogels):
    busy = Script(refuse=(503, "ServiceUnavailableException", "try later"))
    result, fake = push(vogels, [busy] * 5, max_retries=2)
    assert not result.ok
    assert len(fake.connections) == 3
    assert "giving up after 3 failed attempts" in result.error and "try later" in result.error


def test_silent_service_times_out_and_reconnects(vogels, expected):
    result, fake = push(vogels, [Script(silent=True)], ack_timeout_s=0.5)
    assert result.ok, result.summary()
    assert result.status.connections == 2
    assert "no acknowledgement for 0.5 s" in result.status.last_error
    assert shape(fake.persisted) == expected


def test_received_is_enough_for_a_stream_without_retention(vogels):
    async def scenario():
        async with FakePutMedia() as fake:
            camera = Camera("cam", vogels, target(fake.url, done_event="RECEIVED"),
                            CameraConfig(**FAST))
            return await camera.run()

    assert asyncio.run(scenario()).status.persisted == 6


def test_real_time_pacing_renewal_and_producer_clock():
    # 2.4 s of test pattern, a keyframe every 0.4 s, 0.4 s fragments; connections renewed
    # every 0.9 s (AWS's limit is 45 minutes; the mechanism is the same).
    source = TestPatternSource(96, 64, fps=10, frames=24, keyframe_interval_s=0.4)
    started = time.time()
    result, fake = push(source, realtime=True, fragment_duration_ms=400, max_connection_s=0.9)
    elapsed = time.time() - started
    assert result.ok, result.summary()
    assert elapsed >= 2.2  # the source is paced on the wall clock
    assert result.status.connections >= 2
    timecodes = fake.persisted_timecodes
    assert len(timecodes) == 6 and timecodes == sorted(timecodes)
    assert [b - a for a, b in itertools.pairwise(timecodes)] == [400] * 5
    # Producer timestamps are the wall clock at capture: the first frame was "now" at the start,
    # and the burned-in clock (the source's epoch) shows the same time.
    assert abs(timecodes[0] - started * 1000) < 300
    assert source.epoch_ms == timecodes[0]


def test_stop_delivers_what_was_captured():
    source = TestPatternSource(64, 48, fps=10, keyframe_interval_s=0.5)  # endless

    async def scenario():
        async with FakePutMedia() as fake:
            camera = Camera("cam", source, target(fake.url),
                            CameraConfig(realtime=True, fragment_duration_ms=500))
            task = asyncio.create_task(camera.run())
            await asyncio.sleep(1.3)
            camera.stop()
            return await asyncio.wait_for(task, 10), fake

    result, fake = asyncio.run(scenario())
    assert result.ok, result.summary()
    assert result.status.persisted == len(fake.persisted) >= 2
    assert result.status.frames == sum(len(f.frames) for f in fake.persisted)


def test_source_failure_is_reported():
    class Broken(TestPatternSource):
        def __iter__(self):
            yield from list(super().__iter__())[:12]
            raise OSError("camera unplugged")

    result, _ = push(Broken(64, 48, fps=10, frames=30, keyframe_interval_s=0.5),
                        fragment_duration_ms=500)
    assert not result.ok
    assert "camera unplugged" in result.error
    assert result.status.persisted == 3  # what came before the failure still went out
