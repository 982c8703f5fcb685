"""bench.sweep and bench.metrics on synthetic probes: the search and the bounded-lag judgement."""

from __future__ import annotations

import time

import pytest

from bench import sweep as sweep_module
from bench.metrics import summarise
from bench.sweep import Runner, doubling


def fake_probe(capacities: dict[tuple[str, float], int], ran: list):
    def run(probe) -> dict:
        ran.append((probe.kind, probe.fps, probe.cameras))
        return {"bounded": probe.cameras <= capacities[(probe.kind, probe.fps)],
                "cameras": probe.cameras, "analysed_fps": 1.0, "analysed_fps_target": 1.0,
                "delivered_ratio": 1.0, "latency_s": {"p50": 1.0}, "cores": {"consumer": 1.0}}
    return run


def sweep(capacities, max_cameras=16, budget=1000.0):
    ran: list = []
    runner = Runner(fake_probe(capacities, ran), duration=0.0, max_cameras=max_cameras,
                    deadline=time.monotonic() + budget, log=lambda _: None)
    return {(s.kind, s.fps): s for s in runner.run(["ours", "naive"], [1.0, 2.0])}, ran


def test_doubling_clips_the_last_step():
    assert doubling(1, 16) == [1, 2, 4, 8, 16]
    assert doubling(1, 12) == [1, 2, 4, 8, 12]
    assert doubling(12, 16) == [12, 16]


def test_doubling_then_bisection_to_one_camera_highest_fps_first():
    sweeps, ran = sweep({("ours", 2.0): 11, ("ours", 1.0): 14,
                         ("naive", 2.0): 5, ("naive", 1.0): 7})
    assert ran[:8] == [("ours", 2.0, k) for k in (1, 2, 4, 8, 16, 12, 10, 11)]
    assert sweeps[("ours", 2.0)].capacity == 11
    assert [k for kind, fps, k in ran if (kind, fps) == ("naive", 2.0)] == [1, 2, 4, 8, 6, 5]
    assert sweeps[("naive", 2.0)].capacity == 5
    # at S=1 the doubling continues from the capacity at S=2, then bisects between 11 and 16
    assert [k for kind, fps, k in ran if (kind, fps) == ("ours", 1.0)] == [16, 13, 14, 15]
    assert sweeps[("ours", 1.0)].capacity == 14
    assert sweeps[("ours", 1.0)].inferred == [1, 2, 4, 8, 11]
    assert [k for kind, fps, k in ran if (kind, fps) == ("naive", 1.0)] == [10, 7, 8]
    assert sweeps[("naive", 1.0)].capacity == 7


@pytest.mark.parametrize("high", range(17))
def test_every_capacity_is_found_exactly(high):
    """Whatever the capacities (the lower S's at least the higher S's), no halving, no guess."""
    for low in sorted({high, min(16, high + 1), min(16, high + 5), 16}):
        sweeps, ran = sweep({("ours", 2.0): high, ("ours", 1.0): low,
                             ("naive", 2.0): high, ("naive", 1.0): low})
        for kind in ("ours", "naive"):
            assert sweeps[(kind, 2.0)].capacity == high
            assert sweeps[(kind, 1.0)].capacity == low
            assert sweeps[(kind, 2.0)].at_cap == (high == 16)
            # every capacity was measured at its own S
            assert not high or (kind, 2.0, high) in ran
            assert not low or (kind, 1.0, low) in ran
        assert len(ran) <= 2 * (5 + 4 + 5 + 4)  # doubling + bisection, twice per consumer


def test_a_capacity_from_a_higher_fps_is_probed_when_nothing_larger_is_bounded():
    sweeps, ran = sweep({("ours", 2.0): 8, ("ours", 1.0): 8,
                         ("naive", 2.0): 0, ("naive", 1.0): 0})
    assert [k for kind, fps, k in ran if (kind, fps) == ("ours", 1.0)] == [16, 12, 10, 9, 8]
    assert sweeps[("ours", 1.0)].capacity == 8 and sweeps[("ours", 1.0)].inferred == [1, 2, 4]
    assert sweeps[("naive", 2.0)].capacity == 0 and ("naive", 2.0, 2) not in ran


def test_an_unexpected_failure_at_a_lower_fps_bisects_below_instead_of_halving():
    sweeps, ran = sweep({("ours", 2.0): 6, ("ours", 1.0): 5,
                         ("naive", 2.0): 6, ("naive", 1.0): 6})
    assert [k for kind, fps, k in ran if (kind, fps) == ("ours", 2.0)] == [1, 2, 4, 8, 6, 7]
    # 6 was bounded at S=2 and is not at S=1: bisect between 4 (inferred) and 6
    assert [k for kind, fps, k in ran if (kind, fps) == ("ours", 1.0)] == [12, 9, 7, 6, 5]
    assert sweeps[("ours", 1.0)].capacity == 5 and sweeps[("ours", 1.0)].inferred == [1, 2, 4]
    assert sweeps[("naive", 1.0)].capacity == 6


def test_the_cap_and_the_time_budget():
    sweeps, _ = sweep({k: 99 for k in [("ours", 2.0), ("ours", 1.0), ("naive", 2.0),
                                       ("naive", 1.0)]}, max_cameras=4)
    assert sweeps[("ours", 2.0)].at_cap and sweeps[("ours", 2.0)].capacity == 4
    sweeps, ran = sweep({("ours", 2.0): 3, ("ours", 1.0): 3, ("naive", 2.0): 3,
                         ("naive", 1.0): 3}, budget=0.0)
    assert ran == [] and sweeps[("ours", 2.0)].skipped == [1]


def test_the_budget_stops_a_bisection_with_the_largest_k_bounded_so_far(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(sweep_module.time, "monotonic", lambda: clock[0])
    ran: list = []
    probe = fake_probe({("ours", 2.0): 2}, ran)

    def slow_probe(p):
        clock[0] += 30.0  # each probe takes 30 s; one is estimated at 14 s (duration 0)
        return probe(p)

    runner = Runner(slow_probe, duration=0.0, max_cameras=16, deadline=100.0, log=lambda _: None)
    result = runner.sweep("ours", 2.0)
    assert ran == [("ours", 2.0, k) for k in (1, 2, 4)]  # 3 would end at 104 s: skipped
    assert result.capacity == 2 and result.skipped == [3] and not result.at_cap


def synthetic_raw(cameras: int, fps: float, service_share: float, seconds: float = 21.0,
                  latency: float = 0.5) -> dict:
    """A probe where the consumer serves `service_share` of the demand, FIFO per camera."""
    t0, fragment = 1_000_000.0, 2.0
    fragments, arrivals = {}, []
    for c in range(cameras):
        stream = f"cam-{c}"
        rows = [[t0 + i * fragment, t0 + (i + 1) * fragment, fragment, 500_000]
                for i in range(int(seconds // fragment))]
        fragments[stream] = rows
        for i, (producer, server, _, _) in enumerate(rows):
            done = t0 + fragment + (server - t0 - fragment) / service_share + latency
            for n in range(int(fps * fragment)):
                arrivals.append({"stream": stream, "producer_time": producer + n / fps,
                                 "arrival": done, "polled": done + 0.1, "size": 3000,
                                 "persons": 1})
    samples = [{"time": t0 + s, "machine_cpu_seconds": s * 1.5,
                **{g: {"cpu_seconds": s * 0.5, "rss_bytes": 1, "peak_rss_bytes": 2**28,
                       "processes": 1} for g in ("consumer", "cameras", "harness")}}
               for s in range(int(seconds) + 1)]
    stats = {"api_calls": {"kinesis:PutRecords": 10, "s3:PutObject": 20,
                           "kinesis-video-media:GetMedia": cameras}}
    return {"probe": {"kind": "ours", "cameras": cameras, "fps": fps, "duration": seconds},
            "cameras_started": t0, "stopped": t0 + seconds, "ready_seconds": 1.0,
            "fragments": fragments, "arrivals": [a for a in arrivals
                                                 if a["arrival"] <= t0 + seconds + 5],
            "samples": samples, "consumers": [{"exit_status": 0, "stats": stats}],
            "s3": {"objects": 20, "bytes": 2_000_000}}


def test_a_consumer_that_keeps_up_is_bounded():
    summary = summarise(synthetic_raw(4, 2.0, service_share=1.0))
    assert summary["bounded"] and abs(summary["delay_growth_s_per_s"]) < 0.01
    assert summary["latency_s"]["p50"] == 0.5
    assert summary["delivered_ratio"] > 0.95
    assert summary["startup_api_calls"] == {"kinesis-video-media:GetMedia": 4}
    assert summary["cost_per_camera_day_usd"] > 0


def test_a_consumer_that_delivers_every_frame_is_judged_whole_whatever_the_phase():
    # 19 s at S = 1: the judged span is 6.7 s, which a fixed window filled with 6 of a
    # camera's frames (0.90, "not bounded") when every camera's fragments began in phase
    for seconds in (19.0, 20.0, 21.0):
        summary = summarise(synthetic_raw(23, 1.0, service_share=1.0, seconds=seconds))
        assert summary["delivered_ratio"] == 1.0 and summary["bounded"]
    # ListFragments' duration ends at the last frame (1.933 s of a 2 s, 15 fps fragment): the
    # length that counts is the time to the next fragment
    raw = synthetic_raw(4, 2.0, service_share=1.0)
    for rows in raw["fragments"].values():
        for row in rows:
            row[2] = 2.0 - 1 / 15
    assert summarise(raw)["delivered_ratio"] == 1.0


def test_a_consumer_that_falls_behind_is_not_bounded():
    summary = summarise(synthetic_raw(4, 2.0, service_share=0.75))
    assert not summary["bounded"]
    assert summary["delay_growth_s_per_s"] > 0.2
