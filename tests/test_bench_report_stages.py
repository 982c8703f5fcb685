"""bench.limit, bench.breakdown and their columns and tables in bench.report, on synthetic data."""

from __future__ import annotations

import pytest

from bench.breakdown import breakdown, breakdown_markdown, choose
from bench.limit import camera_second_cost, decoded_per_second, limit, shared_line
from bench.report import capacity_rows, markdown

UNITS = {"clip_fps": 15.0, "person_fraction": 0.5,
         "cpu_seconds": {"decode_frame": 0.004, "keyframe": 0.009, "rgb_frame": 0.001,
                         "pose_frame": 0.050, "jpeg_frame": 0.006}}


def test_a_camera_second_is_every_frame_decoded_and_s_frames_analysed():
    # 15 x 4 ms + 2 x (1 + 50 + 0.5 x 6) ms = 60 + 108 ms
    assert camera_second_cost(UNITS, 2.0) == pytest.approx(0.168)
    assert camera_second_cost(UNITS, 1.0) == pytest.approx(0.114)
    # sampling above the clip's rate analyses every frame, no more
    assert camera_second_cost(UNITS, 30.0) == camera_second_cost(UNITS, 15.0)
    bound = limit(UNITS, 2.0, cores=2)
    assert bound["cameras"] == pytest.approx(2 / 0.168) and bound["cores"] == 2
    assert limit(None, 2.0, 2) is None and limit({}, 2.0, 2) is None


def test_only_frames_up_to_each_fragments_last_sampled_one_count_as_decoded():
    # 2 s fragments of 30 frames: at S = 1 frames 0 and 15 are sampled (16 decoded per
    # fragment, 8 a second); at S = 2 frames 0, 7/8, 15, 22/23 (23 decoded: 11.5 a second)
    units = {**UNITS, "frames_per_fragment": 30}
    assert decoded_per_second(units, 1.0) == 8.0
    assert decoded_per_second(units, 2.0) == 11.5
    assert decoded_per_second(units, 15.0) == decoded_per_second(UNITS, 1.0) == 15.0
    assert camera_second_cost(units, 1.0) == pytest.approx(8 * 0.004 + 0.054)


def probe(kind, cameras, bounded, stage_p50=None, latency=1.0):
    stages = {name: {"count": 10, "mean": v, "p50": v, "p90": 2 * v, "max": 3 * v}
              for name, v in (stage_p50 or {}).items()}
    return {"kind": kind, "cameras": cameras, "bounded": bounded, "stage_times": stages,
            "latency_s": {"p50": latency, "p95": latency, "p99": latency},
            "api_calls_per_camera_hour": {}, "analysed_fps": 1.0,
            "consumer_cores_per_camera": 0.2, "peak_rss_bytes_per_camera": 2**27,
            "cost_per_camera_day_usd": 0.1, "cost_per_camera_day_by_service_usd": {},
            "cores": {"consumer": 1.0}, "errors": []}


def sweep(kind, fps, capacity, probes):
    return {"kind": kind, "fps": fps, "capacity": capacity, "at_cap": False, "inferred": [],
            "skipped": [], "probes": probes}


OURS = {"arrival": 0.3, "decode": 0.1, "queue_wait": 0.05, "inference": 0.06,
        "kds_linger": 0.2, "kds_call": 0.01, "checkpoint_wait": 0.5}
NAIVE = {"arrival": 0.25, "queue_wait": 0.2, "inference": 0.06, "s3_call": 0.01,
         "kds_call": 0.01, "decode_frame": 0.004}


def test_the_comparison_is_at_the_largest_k_both_sustained():
    ours = sweep("ours", 2.0, 6, [probe("ours", k, k <= 6, OURS) for k in (1, 2, 4, 8, 6, 7)])
    naive = sweep("naive", 2.0, 4, [probe("naive", k, k <= 4, NAIVE) for k in (1, 2, 4, 8, 6, 5)])
    basis, a, b = choose(ours, naive)
    assert (a["cameras"], b["cameras"]) == (4, 4) and "K = 4" in basis
    table = breakdown([ours, naive])["2"]
    assert table["ours"]["stages"]["arrival"] == {"p50": 0.3, "p90": 0.6, "count": 10}
    # the path: arrival, decode, queue, (batch), inference, (handler, record), linger, call
    assert table["ours"]["path_p50_sum_s"] == pytest.approx(0.3 + 0.1 + 0.05 + 0.06 + 0.2 + 0.01)
    assert table["naive"]["path_p50_sum_s"] == pytest.approx(0.25 + 0.2 + 0.06 + 0.01 + 0.01)
    assert table["ours"]["latency_p50_s"] == 1.0


def test_without_a_k_both_sustained_each_capacity_or_smallest_probe_is_used():
    ours = sweep("ours", 1.0, 2, [probe("ours", 1, True, OURS), probe("ours", 2, True, OURS)])
    naive = sweep("naive", 1.0, 0, [probe("naive", 2, False), probe("naive", 1, False)])
    basis, a, b = choose(ours, naive)
    assert (a["cameras"], b["cameras"]) == (2, 1)
    assert "capacity probe" in basis and "smallest probe, not bounded" in basis
    basis, a, b = choose(ours, None)
    assert a["cameras"] == 2 and b is None and "no probe" in basis


def test_the_report_has_the_limit_columns_and_a_stage_table_per_s():
    sweeps = [sweep("ours", 2.0, 6, [probe("ours", 6, True, OURS, 1.4)]),
              sweep("naive", 2.0, 6, [probe("naive", 6, True, NAIVE, 0.7)])]
    rows = capacity_rows(sweeps, 2, UNITS)
    assert rows[0]["limit"]["cameras"] == pytest.approx(2 / 0.168)
    assert rows[0]["capacity_to_limit"] == pytest.approx(6 / (2 / 0.168))
    assert capacity_rows(sweeps, 2)[0]["capacity_to_limit"] is None  # no unit costs
    results = {"rows": rows, "ratios": {}, "sweeps": sweeps, "breakdown": breakdown(sweeps),
               "micro": {"unit_costs": UNITS}, "machine": {"cores_usable": 2}}
    text = markdown(results)
    header, rule, *lines = text.split("\n\n")[0].splitlines()
    assert header.startswith("| consumer | S (fps/camera) | capacity K | limit K | "
                             "capacity / limit |")
    assert rule.count("|") == header.count("|") == lines[0].count("|")
    assert lines[0].startswith("| this project | 2 | 6 | 11.9 | 0.50 |")
    assert "limit K: the physical limit, the cores left to a consumer" in text
    assert "{" not in text  # every figure formatted
    stage_lines = breakdown_markdown(results["breakdown"])
    assert stage_lines[0].startswith("Per-stage latency at S=2 (K = 6, the largest both")
    assert "| arrival | both | 300.0 | 250.0 | 600.0 | 500.0 |" in stage_lines
    assert "| checkpoint_wait |  | 500.0 | - | 1,000.0 | - |" in stage_lines
    assert "| **end to end p50** (measured) | | **1,400.0** | **700.0** | | |" in stage_lines
    assert "| batch_wait |" not in text  # a stage neither measured is left out
    assert "\n".join(stage_lines) in text


def test_the_limit_leaves_the_cameras_and_the_local_stack_their_cores():
    # the cameras and the stack took 0.2 + 0.05 x K cores in the probes
    points = [(k, 0.2 + 0.05 * k) for k in (1, 2, 4, 8)]
    assert shared_line(points) == (pytest.approx(0.2), pytest.approx(0.05))
    assert shared_line([(4, 0.4), (4, 0.6)]) == (0.0, pytest.approx(0.125))  # one K
    assert shared_line([]) is None
    bound = limit(UNITS, 2.0, 2, shared=(0.2, 0.05))
    # K x 0.168 + 0.2 + 0.05 x K = 2 cores
    assert bound["cameras"] == pytest.approx(1.8 / 0.218)
    assert bound["alone"] == pytest.approx(2 / 0.168)
    ours = [dict(probe("ours", k, True), cores={"consumer": 1.0, "cameras": 0.04 * k,
                                               "harness": 0.2 + 0.01 * k}) for k in (2, 4)]
    rows = capacity_rows([sweep("ours", 2.0, 4, ours)], 2, UNITS)
    assert rows[0]["limit"]["cameras"] == pytest.approx(1.8 / 0.218)
    assert rows[0]["capacity_to_limit"] == pytest.approx(4 / (1.8 / 0.218))
