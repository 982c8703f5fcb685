"""`python -m bench --smoke`: the benchmark runs end to end and writes well-formed outputs.

Only the shape of the outputs is checked (JSON keys and types, a Markdown row per consumer, a
PNG of sane size), never a speed, a capacity or a latency: those depend on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory, captures, models) -> Path:
    out = tmp_path_factory.mktemp("bench") / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSA_")}
    env["KVS_SHARED_DIR"] = str(captures.parent)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--models-dir", str(models)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "total time:" in done.stdout
    return out


@pytest.mark.slow
def test_results_json_is_well_formed(smoke_outputs):
    results = json.loads((smoke_outputs / "results.json").read_text())
    for key in ("parameters", "machine", "clip", "micro", "sweeps", "rows", "ratios",
                "total_seconds", "definitions", "breakdown"):
        assert key in results, key
    assert results["parameters"]["smoke"] is True
    assert isinstance(results["machine"]["cores"], int) and results["machine"]["cpu_model"]
    assert isinstance(results["total_seconds"], float)
    assert {row["kind"] for row in results["rows"]} == {"ours", "naive"}
    for row in results["rows"]:
        assert isinstance(row["capacity"], int) and isinstance(row["fps"], float)
    for sweep in results["sweeps"]:
        assert sweep["probes"], sweep["kind"]
        for probe in sweep["probes"]:
            assert isinstance(probe["bounded"], bool)
            assert set(probe["latency_s"]) >= {"p50", "p95", "p99"}
            assert isinstance(probe["analysed_fps"], float)
            assert isinstance(probe["api_calls_per_camera_hour"], dict)
            assert isinstance(probe["cost_per_camera_day_usd"], float)
            assert isinstance(probe["lag_series"], dict)
            assert probe["raw"]["arrivals"] is not None
    micro = results["micro"]
    assert micro["errors"] == {}, micro["errors"]
    assert micro["decode"]["every_frame"]["frames_per_cpu_second"] > 0
    assert micro["reader"]["chunked_64kib_mb_per_s"] > 0
    assert "parquet_bytes_per_frame" in micro["pose_sequence"]["per_fragment"]
    assert micro["unit_costs"]["cpu_seconds"]["pose_frame"] > 0
    for row in results["rows"]:  # the physical limit beside each capacity
        assert row["limit"]["cameras"] > 0 and row["capacity_to_limit"] > 0
    # where the latency goes: both consumers measured their stages in the probe compared
    (compared,) = results["breakdown"].values()  # one S in a smoke run
    for kind, path in (("ours", ("arrival", "decode", "queue_wait", "batch_wait", "inference",
                                 "handler_wait", "record_build", "kds_linger", "kds_call")),
                       ("naive", ("arrival", "queue_wait", "inference", "record_build",
                                  "s3_call", "kds_call"))):
        stages = compared[kind]["stages"]
        assert all(stages[name]["count"] > 0 for name in path), (kind, stages)
        assert compared[kind]["latency_p50_s"] > 0 and compared[kind]["path_p50_sum_s"] > 0


@pytest.mark.slow
def test_markdown_has_a_row_per_consumer(smoke_outputs):
    text = (smoke_outputs / "report.md").read_text()
    lines = text.split("\n\n")[0].splitlines()  # the first table: capacity per consumer and S
    assert lines[0].startswith("| consumer | S (fps/camera) | capacity K |")
    columns = lines[0].count("|")
    for name in ("this project", "naive"):
        rows = [line for line in lines if line.startswith(f"| {name} |")]
        assert len(rows) == 1, name
        assert rows[0].count("|") == columns
    assert "| micro-benchmark | figure |" in text
    assert lines[0].startswith("| consumer | S (fps/camera) | capacity K | limit K | "
                               "capacity / limit |")
    assert "\nPer-stage latency at S=" in text
    assert "| **end to end p50** (measured) |" in text


@pytest.mark.slow
def test_plot_is_a_png_of_sane_size(smoke_outputs):
    path = smoke_outputs / "report.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 600 <= width <= 4000 and 300 <= height <= 3000
