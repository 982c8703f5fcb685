"""`python -m bench.fleet --part leases --smoke`: the lease-scale benchmark runs end to end on the
local stack and writes well-formed outputs (shapes only, never a speed: those depend on the
machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("fleet") / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSA_")}
    done = subprocess.run(
        [sys.executable, "-m", "bench.fleet", "--part", "leases", "--smoke", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "total time:" in done.stdout
    return out, done.stdout


@pytest.mark.slow
def test_results_have_convergence_takeover_and_call_rates(smoke_outputs):
    out, _ = smoke_outputs
    results = json.loads((out / "results.json").read_text())
    assert results["parameters"]["smoke"] is True
    assert "processes" not in results
    leases = results["leases"]
    assert leases["converged"] is True
    assert isinstance(leases["convergence_seconds"], float) and leases["convergence_seconds"] > 0
    assert isinstance(leases["takeover_seconds"], float) and leases["takeover_seconds"] > 0
    assert isinstance(leases["rebalance_seconds"], float)
    per_hour = leases["calls_per_stream_hour"]
    assert per_hour["UpdateItem"] > 0 and per_hour["Scan"] > 0
    assert per_hour["total"] == pytest.approx(per_hour["UpdateItem"] + per_hour["Scan"]
                                              + sum(v for k, v in per_hour.items()
                                                    if k not in ("UpdateItem", "Scan", "total")))
    requested = leases["requested"]
    assert requested["parameters"]["workers"] == 3
    assert requested["killed"]["streams"] > 0
    assert requested["items"]["lease_item_bytes_mean"] > 0
    projection = leases["projection"]
    assert projection["cameras"] == 10_000 and projection["workers"] == 200
    assert projection["leases_only"]["usd_per_month"]["total"] > 0


@pytest.mark.slow
def test_markdown_and_stdout_show_the_figures(smoke_outputs):
    out, stdout = smoke_outputs
    text = (out / "report.md").read_text()
    assert "| (a) start -> balanced |" in text
    assert "10,000-camera arithmetic" in text
    assert "per million WRU" in stdout


def test_help_describes_both_parts():
    done = subprocess.run([sys.executable, "-m", "bench.fleet", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    for word in ("--part", "--smoke", "--out", "leases", "processes", "--workers"):
        assert word in done.stdout
