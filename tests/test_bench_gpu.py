"""`python -m bench.gpu`: its help teaches the GPU run, and a `--smoke --device cpu` run writes
well-formed outputs on a machine without a GPU (this one, CI).

Only the shape of the outputs is checked, never a speed: YOLO runs on the CPU here, at a tiny
image size with random weights (yolov8n.yaml, no download), and one 1080p30 camera is more than
it keeps up with, so the probe is not bounded; that is not what is tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _env(captures: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KVSA_", "YOLO_"))}
    if captures is not None:
        env["KVS_SHARED_DIR"] = str(captures.parent)
    return env


def test_help_teaches_how_to_reproduce_the_gpu_figures():
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--help"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=60, check=True)
    text = done.stdout
    for needed in ("pip install -e '.[yolo]'", "torch.cuda.is_available()", "hwdevices_available",
                   "yolov8n.pt", "yolov8n.yaml", "random weights", "--out", "bench/results/gpu-",
                   "--max-cameras", "--budget", "--weights", "--image-size", "--device",
                   "--smoke", "bounded", "nvidia-smi", "1920x1080"):
        assert needed in text, needed


@pytest.fixture(scope="module")
def smoke_outputs(tmp_path_factory, captures) -> Path:
    folder = tmp_path_factory.mktemp("bench-gpu")
    out = folder / "out"
    yolo_config = folder / "yolo-config"  # Ultralytics writes its settings here, not at home
    env = _env(captures) | {"YOLO_CONFIG_DIR": str(yolo_config)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu", "--smoke", "--device", "cpu", "--weights",
         "yolov8n.yaml", "--image-size", "64", "--models-dir", str(folder), "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "total time:" in done.stdout
    return out


@pytest.mark.slow
def test_smoke_results_are_well_formed(smoke_outputs):
    results = json.loads((smoke_outputs / "results.json").read_text())
    for key in ("command", "parameters", "machine", "gpu", "clip", "consumer_settings", "sweep",
                "stages_probe", "definitions", "total_seconds"):
        assert key in results, key
    params = results["parameters"]
    assert params["smoke"] is True and params["device"] == "cpu"
    assert params["decode_device"] == "cpu" and params["max_cameras"] == 1
    assert (results["clip"]["width"], results["clip"]["height"], results["clip"]["fps"]) == (
        1920, 1080, 30)
    processing = results["consumer_settings"]["processing"]
    assert processing["processor"] == "yolo" and processing["yolo"]["half"] is False
    assert results["consumer_settings"]["defaults"]["sampling"] == {"mode": "all"}
    sweep = results["sweep"]
    assert sweep["kind"] == "ours" and sweep["fps"] == 30.0 and isinstance(sweep["capacity"], int)
    (probe,) = sweep["probes"]
    assert probe["cameras"] == 1 and isinstance(probe["bounded"], bool), probe.get("errors")
    assert probe["analysed_fps"] > 0 and probe["records"] > 0
    assert probe["decode_fallback"] is None  # decode.device cpu: nothing to fall back from
    stages = results["stages_probe"]["stage_times"]
    for name in ("decode", "decode_frame", "queue_wait", "batch_wait", "inference",
                 "record_build", "kds_call"):
        assert stages[name]["count"] > 0 and stages[name]["p50"] > 0, name
    gpu = results["gpu"]
    if gpu["name"] is None:  # no GPU (here, CI): said so, with why
        assert gpu["reason"] and probe["gpu"] is None
    else:
        assert probe["gpu"]["samples"] >= 0


@pytest.mark.slow
def test_smoke_report_names_the_gpu_or_says_there_is_none(smoke_outputs):
    results = json.loads((smoke_outputs / "results.json").read_text())
    text = (smoke_outputs / "report.md").read_text()
    name = results["gpu"]["name"]
    assert (f"- GPU: {name}" if name else "- GPU: no GPU (") in text
    assert "random weights" in text  # yolov8n.yaml: the report says the detections mean nothing
    assert "capacity (largest N whose lag stayed bounded): **" in text
    table = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert len(table) == 1 and table[0].count("|") == 9
    for stage in ("| decode |", "| inference |", "| record_build |"):
        assert stage in text
