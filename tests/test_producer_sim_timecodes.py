"""Cameras whose timecodes repeat or go backwards: pushed as a KVS producer SDK would push them.

The sources are real H.264 in MKV files whose cluster timecodes restart at 0 every cluster, or jump
back 3 s mid-file (`timecode_sources`). `python -m producer_sim push` runs as a user runs it,
against the local Kinesis Video Streams service; what it stored is read back with ListFragments
and GetMedia. The timeline and fragmenter rules are checked directly too.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import av
import numpy as np
import pytest

from consumer.media.fragmenter import Fragmenter
from consumer.media.sources import FileSource, Source, SourceError, decode_packets
from consumer.media.timeline import Mapped, Timeline
from consumer.wire import iter_fragments
from infra.local.kvs_service import LocalKvsService
from infra.local.limits import Limits
from producer_sim.camera import Camera, CameraConfig
from producer_sim.control import AwsContext, prepare_stream

from .producer_sim_helpers import client, simulator
from .timecode_sources import (
    FPS,
    backwards_cluster_starts,
    real_duration_ms,
    repeating_cluster_starts,
    write_timecode_source,
)

CLUSTERS = 11
FRAMES = CLUSTERS * 30
FRAME_MS = 1000 / FPS


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    """The two sources: each cluster restarting at 0 (10 resets), and one jump back by 3 s."""
    folder = tmp_path_factory.mktemp("timecodes")
    return {
        "repeating": write_timecode_source(folder / "repeating.mkv",
                                           repeating_cluster_starts(CLUSTERS)),
        "backwards": write_timecode_source(folder / "backwards.mkv",
                                           backwards_cluster_starts(CLUSTERS)),
    }


DISCONTINUITIES = {"repeating": CLUSTERS - 1, "backwards": 1}


@pytest.fixture
def kvs():
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=0.5)) as service:
        yield service


def list_fragments(kvs, stream: str) -> list[dict]:
    archive = client(kvs, "kinesis-video-archived-media", "LIST_FRAGMENTS", stream)
    fragments = archive.list_fragments(StreamName=stream)["Fragments"]
    return sorted(fragments, key=lambda f: int(f["FragmentNumber"]))


def get_media(kvs, stream: str) -> list:
    media = client(kvs, "kinesis-video-media", "GET_MEDIA", stream)
    response = media.get_media(StreamName=stream, StartSelector={"StartSelectorType": "EARLIEST"})
    return list(iter_fragments(response["Payload"]))


@pytest.mark.parametrize("reencode", [False, True], ids=["remux", "reencode"])
@pytest.mark.parametrize("kind", ["repeating", "backwards"])
def test_push_keeps_timecodes_increasing_and_time_intact(kvs, sources, kind, reencode):
    # Repeating: every keyframe is a discontinuity, so 2-second fragments still cut at each one.
    # Backwards: one discontinuity; 1-second fragments make the 11 clusters 11 fragments.
    args = ["push", "--source", str(sources[kind]), "--stream", kind, "--endpoint-url",
            kvs.endpoint_url, "--create-stream"]
    if kind == "backwards":
        args += ["--fragment-duration", "1"]
    if reencode:
        args.append("--reencode")
    started = time.time()
    done = simulator(*args)
    finished = time.time()

    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"done: push: {CLUSTERS}/{CLUSTERS} fragments ({FRAMES} frames) "
                              f"persisted to {kind}"), summary
    assert "0 error(s)" in summary
    assert (f"timecodes repeated or went back {DISCONTINUITIES[kind]} time(s): kept increasing, "
            "a new fragment at each") in summary
    # Said once when it happens, not once per discontinuity.
    assert done.stderr.count("the source's clock repeated or went back") == 1, done.stderr

    listed = list_fragments(kvs, kind)
    assert len(listed) == CLUSTERS
    producer = [f["ProducerTimestamp"].timestamp() for f in listed]
    assert all(b > a for a, b in itertools.pairwise(producer)), producer

    got = get_media(kvs, kind)
    assert len(got) == CLUSTERS
    frames = [frame for fragment in got for frame in fragment.video_frames()]
    assert len(frames) == FRAMES
    assert [len(f.video_frames()) for f in got] == [30] * CLUSTERS
    assert all(f.video_frames()[0].keyframe for f in got)
    # Every frame one frame interval after the one before: not crushed, no gap, never back.
    times = [frame.timecode for frame in frames]
    steps = np.diff(times)
    assert steps.min() >= FRAME_MS - 1 and steps.max() <= FRAME_MS + 1, sorted(set(steps))
    assert abs((times[-1] - times[0]) - (real_duration_ms(CLUSTERS) - FRAME_MS)) <= 2
    # The recording is placed so that it ends at push time (no future timestamps).
    assert started - 12 <= got[0].producer_timestamp <= got[-1].producer_timestamp <= finished
    # And every frame still decodes.
    track = got[0].video_track
    assert len(decode_packets(track, [frame.data for frame in frames], format=None)) == FRAMES


def test_rejected_fragments_are_counted_as_errors_and_exit_1(sources):
    # Fragments of about 1 s against a service that allows 0.5 s: AWS's 4002 for each one.
    with LocalKvsService(limits=Limits(max_fragment_ms=500, getmedia_idle_seconds=0.5)) as kvs:
        done = simulator("push", "--source", str(sources["repeating"]), "--stream", "strict",
                         "--endpoint-url", kvs.endpoint_url, "--create-stream")
        assert done.returncode == 1, done.stdout + done.stderr
        summary = done.stdout.strip().splitlines()[-1]
        assert summary.startswith(f"failed: push: 0/{CLUSTERS} fragments"), summary
        assert f"{CLUSTERS} error(s), {CLUSTERS} rejected" in summary
        assert done.stderr.count("rejected: 4002 MAX_FRAGMENT_DURATION_REACHED") == CLUSTERS
        assert list_fragments(kvs, "strict") == []


class DroppingCamera(Source):
    """A live camera whose connection drops after `packets` packets, as an RTSP camera's does."""

    live = True

    def __init__(self, path: Path, packets: int):
        self.name = "rtsp://camera.local/stream"
        self._file = FileSource(path)
        self._packets = packets

    def __iter__(self):
        for index, packet in enumerate(self._file):
            if index == self._packets:
                raise SourceError(f"{self.name}: connection reset by peer")
            self.track = self._file.track
            yield packet


def test_a_source_failure_is_counted_in_the_summary(kvs, sources):
    target = prepare_stream("dropped", AwsContext(kvs.endpoint_url), create=True)
    camera = Camera("cam", DroppingCamera(sources["backwards"], packets=100), target,
                    CameraConfig(realtime=False, fragment_duration_ms=1000))
    result = asyncio.run(asyncio.wait_for(camera.run(), 30))
    assert not result.ok
    summary = result.summary()
    assert "1 error(s)" in summary and "connection reset by peer" in summary, summary
    # 3 whole clusters, then the 10 frames of the fourth before the drop (it starts on a keyframe).
    assert result.status.persisted == 4 == len(list_fragments(kvs, "dropped"))
    assert summary.startswith("cam: 4/4 fragments (100 frames) persisted to dropped")


# --- the rules, directly ------------------------------------------------------------------------

def test_timeline_continues_one_frame_after_a_repeat_or_a_step_back():
    timeline = Timeline("cam", frame_ms=40, reordered=False)
    raw = [0, 40, 80, 0, 40, 5000, 4000, 4040]
    out = [timeline.map(pts) for pts in raw]
    assert [m.pts_ms for m in out] == [0, 40, 80, 120, 160, 5120, 5160, 5200]  # forward gap kept
    assert [m.discontinuity for m in out] == [False, False, False, True, False, False, True, False]
    assert timeline.discontinuities == 2
    # A frame's own duration, when known, is the step.
    assert timeline.map(0, duration_ms=100).pts_ms == 5300


def test_timeline_allows_b_frames_to_step_back_within_their_group():
    timeline = Timeline("cam", frame_ms=33, reordered=True)
    # Decode order of I P B B P B B, then the camera's clock restarts at 0 on the next keyframe.
    raw = [(0, True), (99, False), (33, False), (66, False), (198, False), (132, False),
           (165, False), (0, True), (99, False), (33, False)]
    out = [timeline.map(pts, keyframe) for pts, keyframe in raw]
    assert [m.discontinuity for m in out] == [False] * 7 + [True, False, False]
    assert [m.pts_ms for m in out][7:] == [231, 330, 264]
    assert timeline.discontinuities == 1


def test_timeline_restart_of_a_loop_is_not_a_discontinuity():
    timeline = Timeline("cam", frame_ms=50, reordered=False)
    for pts in (0, 50, 100):
        timeline.map(pts)
    timeline.restart()
    assert [timeline.map(0), timeline.map(50)] == [Mapped(150, False), Mapped(200, False)]
    assert timeline.discontinuities == 0


def test_fragmenter_cuts_at_the_first_keyframe_after_a_discontinuity():
    fragmenter = Fragmenter(None, fragment_duration_ms=10_000)
    cut = []
    for pts, keyframe, discontinuity in [(0, True, False), (40, False, False),
                                         (80, False, True),  # mid-group: wait for a keyframe
                                         (120, False, False), (160, True, False),
                                         (200, True, True)]:  # a keyframe: cut right there
        cut += fragmenter.add(pts, keyframe, b"x", None, discontinuity)
    cut += fragmenter.flush()
    assert [[f.timecode for f in fragment.frames] for fragment in cut] == \
        [[0, 40, 80, 120], [160], [200]]


def test_b_frame_file_is_not_taken_for_a_clock_that_goes_back(tmp_path):
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "veryfast",  # (ultrafast turns B-frames off)
                          "x264-params": "bframes=2:keyint=15:min-keyint=15:scenecut=0"}
        for index in range(45):
            picture = np.full((48, 64, 3), index * 5 % 255, np.uint8)
            picture[:, index:index + 4] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    source = FileSource(path)
    packets = list(source)
    decode_order = [p.pts_ms for p in packets]
    assert decode_order != sorted(decode_order), "expected B-frames to reorder the packets"
    assert source.discontinuities == 0 and not any(p.discontinuity for p in packets)
    assert len(packets) == 45
    assert sorted(decode_order) == [round(i * 1000 / FPS) for i in range(45)]
