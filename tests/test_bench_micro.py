"""bench.micro: the micro-benchmarks return plain numbers with units in their names (tiny inputs)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from bench import micro

FPS, GOP, FRAMES = 15, 15, 45  # 3 s, a keyframe every second


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    """A 160x96 H.264 clip, 15 fps, keyframe every 15 frames, no B-frames, 45 frames."""
    path = tmp_path_factory.mktemp("clip") / "tiny.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"preset": "ultrafast",
                          "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0"}
        for i in range(FRAMES):
            image = np.zeros((96, 160, 3), np.uint8)
            image[:, (i * 3) % 160:] = (200, 50, 50)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_clip_fragments_are_a_cameras_fragments(tiny_clip):
    fragments, size = micro.clip_fragments(tiny_clip)
    assert len(fragments) == 2  # cut at the first keyframe after 2 s: frames 0-29, 30-44
    assert [len(f.video_frames()) for f in fragments] == [30, 15]
    assert all(f.video_frames()[0].keyframe for f in fragments)
    assert fragments[0].cluster_timecode == micro.BASE_MS  # absolute timecodes
    assert size > 0


def test_decode_every_frame_vs_keyframes_only(tiny_clip):
    result = micro.decode_fps(tiny_clip, repeat=2)
    json.dumps(result)
    assert (result["width_px"], result["height_px"]) == (160, 96)
    assert result["frames"] == FRAMES and result["keyframes"] == 3
    assert result["video_seconds"] == pytest.approx(3.0, abs=0.01)
    assert result["video_fps"] == pytest.approx(15, abs=0.1)
    every, keys = result["every_frame"], result["keyframes_only"]
    assert every["frames_decoded"] == every["frames_rgb"] == FRAMES
    assert keys["frames_decoded"] == keys["frames_rgb"] == 3
    for run in (every, keys):
        assert run["cpu_seconds"] > 0 and run["wall_seconds"] > 0
        assert run["frames_per_cpu_second"] == pytest.approx(
            run["frames_decoded"] / run["cpu_seconds"])
        assert run["cameras_per_core"] == pytest.approx(3.0 / run["cpu_seconds"], rel=0.01)


def test_reader_throughput_on_a_capture(captures):
    result = micro.reader_throughput([captures / "vogels_330.mkv"], repeat=1, latency=False)
    json.dumps(result)
    assert result["captures"] == ["vogels_330.mkv"]
    assert result["fragments"] == 9 and result["bytes"] > 1_000_000
    assert result["whole_mb_per_s"] > 0 and result["chunked_64kib_mb_per_s"] > 0
    assert result["cameras_2mbit_per_core"] == pytest.approx(
        result["chunked_64kib_mb_per_s"] * 1e6 / 250_000)
    assert result["completion_latency_1b_median_us"] is None


def test_pose_sequence_bytes_per_fragment_and_window(captures, models):
    result = micro.pose_sequence_bytes(captures / "vogels_330.mkv", models, frames=8, fps=2)
    json.dumps(result)
    assert result["frames"] == 8 and result["sampling_fps"] == 2
    assert result["per_window"]["files"] == 1
    assert result["per_fragment"]["files"] >= 1
    for group in ("per_fragment", "per_window"):
        figures = result[group]
        assert figures["parquet_bytes_per_frame"] > 0
        assert figures["pickle_gzip_bytes_per_frame"] > 0
        assert figures["parquet_to_pickle_gzip_ratio"] == pytest.approx(
            figures["parquet_bytes_per_frame"] / figures["pickle_gzip_bytes_per_frame"])


def test_unit_costs_are_cpu_seconds_per_unit(tiny_clip, models):
    from bench.unit_costs import unit_costs

    result = unit_costs(tiny_clip, models, pose_frames=3)
    json.dumps(result)
    assert result["frames_decoded"] == FRAMES and result["keyframes"] == 3
    assert result["clip_fps"] == pytest.approx(15, abs=0.1)
    assert result["pose_frames"] == 3 and (result["width_px"], result["height_px"]) == (160, 96)
    assert 0.0 <= result["person_fraction"] <= 1.0  # stripes: nobody, most likely
    cpu = result["cpu_seconds"]
    assert set(cpu) == {"decode_frame", "keyframe", "rgb_frame", "pose_frame", "jpeg_frame"}
    assert all(0 <= value < 1.0 for value in cpu.values())
    assert cpu["pose_frame"] > 0  # the model always costs something
