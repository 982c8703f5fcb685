"""`python -m bench.batch`: batch mode against the seed-style baseline. The smoke size runs end to
end (baseline and `python -m consumer batch --preset production` without JPEGs of frames, uploads
to moto's S3) and writes a well-formed table and results.json (shapes and positive figures, never
a speed); the helpers (bench.batch, bench.batch_runs) are checked on their own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import batch, batch_runs
from tests.conftest import CAPTURES, MODELS, REPO, _require
from tests.pose_helpers import POSE_MODEL


def _rows(text: str) -> dict[str, list[str]]:
    """The table's rows by their first cell (header and separator left out)."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| run ", "| ---")):
            assert line.endswith(" |"), line
            cells = [c.strip() for c in line[1:-1].split("|")]
            assert len(cells) == len(batch.COLUMNS), line
            rows[cells[0]] = cells
    return rows


def _positive(row: list[str], column: str) -> float:
    value = float(row[batch.COLUMNS.index(column)])
    assert value > 0, (column, row)
    return value


def _bench(tmp_path: Path, *args: str, timeout: float) -> tuple[Path, str]:
    _require(MODELS / POSE_MODEL, f"model {POSE_MODEL}")
    _require(CAPTURES / "vogels_330.mkv", "capture vogels_330.mkv")
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSA_")}
    done = subprocess.run([sys.executable, "-m", "bench.batch", *args, "--out", str(out),
                           "--models-dir", str(MODELS)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done.stdout


@pytest.mark.slow
def test_smoke_has_the_baseline_and_ours_rows_with_positive_figures(tmp_path):
    out, text = _bench(tmp_path, "--smoke", timeout=300)
    rows = _rows(text)
    base = rows["baseline (production settings)"]
    ours = rows["ours production, pose data only (frames: none)"]
    assert "seed scripts (published)" in rows
    for row in (base, ours):
        assert row[1] == "full" and row[2] == "2"
        for column in ("frames analysed", "video s", "wall s", "CPU s", "video-s / wall-s",
                       "video-s / CPU-s", "pose KB/min", "total KB/min"):
            _positive(row, column)
    assert base[batch.COLUMNS.index("video s")] == ours[batch.COLUMNS.index("video s")] == "8"
    assert ours[batch.COLUMNS.index("vs")] == "baseline-production"
    assert ours[batch.COLUMNS.index("JPEG KB/min")] == "0.0"  # frames: none
    _positive(ours, "records KB/min")
    for column in ("throughput x", "per core x", "pose bytes x", "total bytes x"):
        _positive(ours, column)
    assert ("ours production, pose data only (frames: none) vs baseline-production (full, 2 "
            "fps; persons") in text
    assert "Where ours's CPU goes" in text

    results = json.loads((out / "results.json").read_text())
    assert (out / "report.md").read_text().strip() in text
    assert results["parameters"]["smoke"] is True
    assert [v["fps"] for v in results["videos"]] == [30, 15]
    assert [r["name"] for r in results["runs"]] == ["baseline-production",
                                                    "ours-production-poses"]
    for run in results["runs"]:
        assert run["ok"] and run["rc"] == 0 and run["error"] is None
        assert run["cpu_seconds"] > 0 and run["video_per_wall"] > 0
        assert run["uploaded"]["objects"] >= 2  # one object per video at least, in moto's S3
        assert run["uploaded"]["bytes"]["pose"] > 0
    ours_run = results["runs"][1]
    assert ours_run["spec"] == "production:poses" and ours_run["preset"] == "production"
    assert ours_run["config"]["streams"] == {"defaults": {"frames": "none"}}
    assert ours_run["ratios"]["baseline"] == "baseline-production"
    stages = ours_run["stage_seconds"]  # the manifest's per-video stage_seconds, summed
    assert set(stages) == {"decode", "inference", "outputs", "jpeg"}, stages
    assert stages["decode"] > 0 and stages["inference"] > 0 and stages["jpeg"] == 0
    assert stages == pytest.approx({k: sum(v["stage_seconds"][k] for v in ours_run["per_video"])
                                    for k in stages}, abs=0.01)
    assert ours_run["cpu_outside_stages"] is not None
    assert results["runs"][0]["stage_seconds"] is None  # the baseline has no manifest
    assert not (out / "runs").exists()  # the runs' outputs are not kept by default


@pytest.mark.slow
def test_baseline_alone_without_upload(tmp_path):
    out, text = _bench(tmp_path, "--presets", "none", "--baselines", "production",
                       "--video-seconds", "2", "--videos", "1", "--no-upload",
                       "--keep-outputs", timeout=180)
    row = _rows(text)["baseline (production settings)"]
    assert _positive(row, "frames analysed") == 8  # frames 0, 15, 30, 45 at 30 fps; 0, 8 ... at 15
    results = json.loads((out / "results.json").read_text())
    [run] = results["runs"]
    assert run["uploaded"] is None and run["bytes"]["pose"] > 0
    outputs = sorted(p.name for p in (out / "runs" / "baseline-production" / "output").iterdir())
    assert outputs == ["15fps-1.pkl.gz", "30fps-1.pkl.gz"]


def test_the_measured_cpu_includes_children_and_orphans(tmp_path):
    # in a process of its own: run_measured reaps every child of the process it runs in
    script = (
        "import json, sys; from pathlib import Path; from bench import batch_runs\n"
        "batch_runs.become_subreaper()\n"
        "burn = ('import time\\nt = time.process_time()\\n'\n"
        "        'while time.process_time() - t < 0.4: pass')\n"
        "child = ('import os, subprocess, sys\\n'\n"
        "        'subprocess.run([sys.executable, \"-c\", %r])\\n'\n"
        "        'if os.fork() == 0:\\n'\n"  # an orphan: its parent exits at once
        "        '    exec(%r)\\n    os._exit(0)\\n') % (burn, burn)\n"
        f"m = batch_runs.run_measured([sys.executable, '-c', child], dict(__import__('os').environ),"
        f" Path({str(tmp_path / 'log.txt')!r}), 60)\n"
        "print(json.dumps(m.__dict__))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=True)
    measured = json.loads(done.stdout.splitlines()[-1])
    assert measured["rc"] == 0
    assert measured["cpu_seconds"] >= 0.75, measured  # both 0.4 s children counted
    assert measured["wall_seconds"] < measured["cpu_seconds"] + 5


def test_run_measured_kills_a_run_past_its_timeout(tmp_path):
    script = ("import json, sys; from pathlib import Path; from bench import batch_runs\n"
              f"m = batch_runs.run_measured([sys.executable, '-c', 'import time; time.sleep(60)'], "
              f"{{}}, Path({str(tmp_path / 'log.txt')!r}), 1.0)\n"
              "print(json.dumps(m.__dict__))\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=True)
    measured = json.loads(done.stdout.splitlines()[-1])
    assert measured["rc"] == 124 and measured["wall_seconds"] < 10


def test_outputs_are_classified_by_key():
    assert batch_runs.kind_of("ours/poses/30fps-1/000.parquet") == "pose"
    assert batch_runs.kind_of("baseline/30fps-1.pkl.gz") == "pose"
    assert batch_runs.kind_of("ours/records/30fps-1.jsonl") == "records"
    assert batch_runs.kind_of("ours/records/30fps-1.jsonl.gz") == "records"
    assert batch_runs.kind_of("ours/frames/30fps-1/0001.jpg") == "jpeg"
    assert batch_runs.kind_of("ours/clips/x.mp4") == "other"
    assert batch_runs.kind_of("poses/stream=a/date=1970-01-01/x-60s") == "pose"
    # the run's prefix is no folder of the kind
    assert batch_runs.kind_of("ours-production-poses/records/stream=a/records.jsonl") == "records"
    assert batch_runs.kind_of("ours-production-poses/summary/a.json") == "other"


def test_manifest_entries_are_found_however_nested():
    entry = {"frames_analysed": 3, "duration_seconds": 4.0, "outputs": [], "status": "ok"}
    assert batch_runs.manifest_videos({"videos": [entry]}) == [entry]
    assert batch_runs.manifest_videos([entry]) == [entry]
    assert batch_runs.manifest_videos({"videos": {"a.mp4": entry}}) == [dict(entry, video="a.mp4")]


def _run(side, preset, model, fps, wall, cpu, pose, total=None) -> batch_runs.Run:
    run = batch_runs.Run(f"{side}-{preset}", side, preset, model, fps, 120.0, rc=0,
                    wall_seconds=wall, cpu_seconds=cpu, frames_analysed=10)
    run.bytes = {"pose": pose} if total is None else {"pose": pose, "jpeg": total - pose}
    return run


def test_ratios_compare_ours_with_the_baseline_at_the_same_settings():
    base = _run("baseline", "production", "full", 2.0, 60.0, 70.0, 4000)
    lite = _run("baseline", "fast_processing", "lite", 1.0, 30.0, 35.0, 1000)
    ours = _run("ours", "production", "full", 2.0, 15.0, 28.0, 1000, total=3000)
    other = _run("ours", "high_accuracy", "heavy", 5.0, 50.0, 90.0, 9000)
    runs = [base, lite, ours, other]
    r = batch.ratios(ours, runs)
    assert r["baseline"] == "baseline-production"
    assert r["throughput"] == pytest.approx(4.0) and r["per_core"] == pytest.approx(2.5)
    assert r["pose_bytes"] == pytest.approx(0.25) and r["total_bytes"] == pytest.approx(0.75)
    assert batch.ratios(other, runs) is None and batch.ratios(base, runs) is None
    dev = _run("ours", "development", "lite", 1.0, 20.0, 20.0, 1000)
    lite.num_poses, dev.num_poses = 4, 2  # same model and rate, other settings: no reference
    assert batch.ratios(dev, [*runs, dev]) is None
    dev.num_poses = 4
    assert batch.ratios(dev, [*runs, dev])["baseline"] == "baseline-fast_processing"
    rows = _rows("\n".join(batch.table(runs)))
    assert rows["ours production"][batch.COLUMNS.index("throughput x")] == "4.00"
    assert rows["ours production"][batch.COLUMNS.index("total KB/min")] == "1.5"  # 3000 B / 2 min
    assert rows["ours high_accuracy"][batch.COLUMNS.index("vs")] == "-"
    [verdict] = batch.verdicts(runs)
    assert "throughput 4.00x (aim >= 3x: met)" in verdict
    assert "pose data 0.25x the bytes per video-minute (aim <= 0.5x: met)" in verdict
    assert "(pose data, records, JPEGs) 0.75x" in verdict
    ours.wall_seconds, ours.bytes = 30.0, {"pose": 3000}
    [verdict] = batch.verdicts(runs)
    assert "throughput 2.00x (aim >= 3x: NOT met)" in verdict and "0.5x: NOT met" in verdict


def test_the_plan_runs_each_baseline_right_before_ours_at_its_preset():
    args = batch.parse_args(["--presets", "development,production",
                             "--baselines", "production,fast_processing"])
    assert batch._plan(args) == [("baseline", "fast_processing"), ("ours", "development"),
                                 ("baseline", "production"), ("ours", "production")]
    smoke = batch.parse_args(["--smoke"])
    assert batch._plan(smoke) == [("baseline", "production"), ("ours", "production:poses")]
    assert (smoke.video_seconds, smoke.videos) == (4.0, 1)
    assert batch._plan(batch.parse_args(["--presets", "none", "--baselines", "none"])) == []


def test_a_poses_variant_is_its_preset_without_jpegs_compared_with_the_preset_baseline(tmp_path):
    args = batch.parse_args([])
    assert args.preset_list == ["development", "fast_processing", "production",
                                "production:poses", "high_accuracy"]
    assert batch._plan(args) == [("ours", "development"), ("baseline", "fast_processing"),
                                 ("ours", "fast_processing"), ("baseline", "production"),
                                 ("ours", "production"), ("ours", "production:poses"),
                                 ("ours", "high_accuracy")]
    assert batch_runs.split_spec("high_accuracy:poses") == ("high_accuracy", "poses")
    assert batch_runs.split_spec("production") == ("production", None)
    with pytest.raises(SystemExit):
        batch.parse_args(["--presets", "production:jpegs"])

    plain = _run("ours", "production", "full", 2.0, 15.0, 28.0, 1000, total=3000)
    poses = _run("ours", "production", "full", 2.0, 12.0, 20.0, 1000)
    poses.name, poses.variant = "ours-production-poses", "poses"
    assert poses.spec == "production:poses" and plain.spec == "production"
    config = batch_runs.ours_config(poses, tmp_path, None)
    assert config["streams"] == {"defaults": {"frames": "none"}}
    assert config["processing"]["pose"] == {"models_dir": str(tmp_path), "download": False}
    assert "streams" not in batch_runs.ours_config(plain, tmp_path, None)

    base = _run("baseline", "production", "full", 2.0, 60.0, 70.0, 4000)
    runs = [base, plain, poses]
    assert batch.ratios(poses, runs)["baseline"] == "baseline-production"
    rows = _rows("\n".join(batch.table(runs)))
    row = rows["ours production, pose data only (frames: none)"]
    assert row[batch.COLUMNS.index("throughput x")] == "5.00"
    assert "ours production" in rows
    [_, verdict] = batch.verdicts(runs)
    assert verdict.startswith("- ours production, pose data only (frames: none) vs "
                              "baseline-production (full, 2 fps;")


def test_the_manifest_stage_seconds_are_summed_over_the_videos():
    def video(name, decode, inference, outputs, jpeg):
        return {"video": name, "status": "done", "frames_analysed": 8, "persons": 3,
                "duration_seconds": 60.0, "outputs": [{"key": f"poses/{name}.parquet",
                                                       "bytes": 500}],
                "stage_seconds": {"decode": decode, "inference": inference,
                                  "outputs": outputs, "jpeg": jpeg}}
    run = _run("ours", "production", "full", 2.0, 15.0, 28.0, 0)
    batch_runs.take_manifest(run, {"videos": [video("a", 1.5, 6.0, 1.0, 0.5),
                                              video("b", 2.0, 7.0, 0.5, 0.25)]})
    assert run.ok() and run.bytes["pose"] == 1000 and run.persons == 6
    assert run.stage_seconds == {"decode": 3.5, "inference": 13.0, "outputs": 1.5,
                                 "jpeg": 0.75}
    assert run.cpu_outside_stages() == pytest.approx(28.0 - 3.5 - 13.0 - 1.5)  # JPEG in outputs
    [line] = batch.cpu_split([run])
    assert "CPU 28.0 s; in its stages decode 3.5, inference 13.0, outputs 1.5 (JPEG 0.8)" in line
    older = _run("ours", "production", "full", 2.0, 15.0, 28.0, 0)
    batch_runs.take_manifest(older, [{k: v for k, v in video("a", 1, 1, 1, 1).items()
                                      if k != "stage_seconds"} | {"duration_seconds": 120.0}])
    assert older.stage_seconds is None and older.cpu_outside_stages() is None
    assert batch.cpu_split([older]) == []

def test_preset_settings_give_the_issue_settings_for_the_comparisons():
    assert batch_runs.preset_settings("production")["model"] == "full"
    assert batch_runs.preset_settings("production")["fps"] == 2.0
    assert batch_runs.preset_settings("fast_processing")["model"] == "lite"
    assert batch_runs.preset_settings("fast_processing")["fps"] == 1.0


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as done:
        batch.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for needed in ("--smoke", "seed-style baseline", "os.wait4", "--video-seconds", "--presets",
                   "consumer batch", "KB = 1000"):
        assert needed in text, needed
