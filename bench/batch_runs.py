"""The measured runs of `python -m bench.batch` (see its docstring): each a subprocess, its wall
clock and the user + system CPU of it and of every process under it read with os.wait4 (the
harness is a child subreaper, so workers that outlive their parent are counted too); the baseline
(`python -m bench.batch_baseline`) and ours (`python -m consumer batch`) at a preset's settings;
what each wrote, from the baseline's stats file and ours's OUT/manifest.json."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.batch_videos import CACHE, REPO
from bench.clip import SHARED
from consumer.presets import overlay

# used where consumer.presets does not say (model variant, analysed fps, num_poses)
KNOWN = {"fast_processing": ("lite", 1.0, 4), "production": ("full", 2.0, 4),
         "high_accuracy": ("heavy", 5.0, 4)}
# ours's variants, `--presets NAME:VARIANT`: (what the table says, the CFG keys it adds)
VARIANTS = {"poses": ("pose data only (frames: none)",
                      {"streams": {"defaults": {"frames": "none"}}})}
DEFAULT_DIRS = (SHARED / "models", Path("~/.cache/kvs-analytics/models"))
BUCKET = "bench-batch"
KINDS = ("pose", "records", "jpeg", "other")
DONE = (None, "ok", "done", "processed", "complete", "completed", "success")


# --- models and presets ----------------------------------------------------------------------

def models_folder(dirs: list[Path]) -> tuple[Path, dict[str, Path], list[str]]:
    """A folder of links named pose_landmarker_{variant}.task to the bundles found in `dirs`,
    the bundles, and why each missing variant is missing."""
    from bench.pose_choice import find_variants
    from processors.models import POSE_VARIANTS
    found, skipped = find_variants(dirs, list(POSE_VARIANTS))
    folder = CACHE / "batch-models"
    folder.mkdir(parents=True, exist_ok=True)
    for variant in POSE_VARIANTS:
        link = folder / f"pose_landmarker_{variant}.task"
        if link.is_symlink() or link.exists():
            link.unlink()
        if variant in found:
            link.symlink_to(found[variant].resolve())
    return folder, found, skipped


def _dig(tree, *path):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def split_spec(spec: str) -> tuple[str, str | None]:
    """(preset, variant) of a `--presets` entry, NAME or NAME:VARIANT. Raises ValueError for a
    variant not in VARIANTS."""
    preset, colon, variant = spec.partition(":")
    if colon and variant not in VARIANTS:
        raise ValueError(f"{spec}: no variant {variant!r} (expected NAME or NAME:"
                         f"{' | NAME:'.join(VARIANTS)})")
    return preset, (variant if colon else None)


def preset_settings(name: str) -> dict:
    """{model: lite|full|heavy|None, fps, num_poses} of a preset: from consumer.presets where it
    says, else the settings issue 14 gives for it."""
    model, fps, poses = KNOWN.get(name, (None, None, 4))
    try:
        from consumer.presets import PRESETS as DEFINED
        raw = DEFINED.get(name)
    except ImportError:
        raw = None
    raw = getattr(raw, "values", raw)  # a consumer.presets.Preset, or a plain mapping
    if isinstance(raw, dict):
        named = _dig(raw, "processing", "pose", "model")
        if isinstance(named, str):
            match = re.search(r"(lite|full|heavy)", named)
            model = match.group(1) if match else named
        for path in (("batch", "fps"), ("streams", "defaults", "sampling", "fps"),
                     ("sampling", "fps")):
            if isinstance(_dig(raw, *path), (int, float)):
                fps = float(_dig(raw, *path))
                break
        if isinstance(_dig(raw, "processing", "pose", "num_poses"), int):
            poses = _dig(raw, "processing", "pose", "num_poses")
    return {"model": model, "fps": fps, "num_poses": poses}


# --- measured subprocesses -------------------------------------------------------------------

def become_subreaper() -> bool:
    """Orphaned descendants of a measured run are re-parented here, so their CPU is counted."""
    try:
        pr_set_child_subreaper = 36
        return ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


@dataclass
class Measured:
    rc: int
    wall_seconds: float
    cpu_seconds: float
    max_rss_mb: float
    log_tail: str = ""


def run_measured(cmd: list[str], env: dict, log_path: Path, timeout: float) -> Measured:
    """Run `cmd`; wall clock to its exit, CPU of it and of everything under it (what is still
    running 5 s after it exited is killed and counted too). Exit status 124: killed at
    `timeout`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cpu, rss, status, wall, killed = 0.0, 0.0, None, None, False
    with open(log_path, "w") as log:
        began = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        grace = None  # after the run's exit: its descendants get 5 s, then SIGKILL, then 5 s
        while True:
            try:
                pid, code, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break  # nothing left under us
            now = time.perf_counter()
            if pid:
                cpu += usage.ru_utime + usage.ru_stime
                rss = max(rss, usage.ru_maxrss / 1024)
                if pid == proc.pid:
                    status, wall, grace = code, now - began, now + 5.0
                continue
            if status is None and now - began > timeout and not killed:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
            elif grace is not None and now >= grace:
                if now >= grace + 5.0:
                    break
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
    proc.returncode = 124 if killed else os.waitstatus_to_exitcode(status)
    tail = log_path.read_text(errors="replace")[-3000:]
    return Measured(proc.returncode, wall, cpu, rss, tail)


def batch_cli_available() -> bool:
    """Whether this checkout has `python -m consumer batch` (ours)."""
    done = subprocess.run([sys.executable, "-m", "consumer", "batch", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    return done.returncode == 0 and "--video-dir" in done.stdout


# --- outputs ---------------------------------------------------------------------------------

def kind_of(key: str) -> str:
    """pose | records | jpeg | other, by the key's folders (a whole folder name: the run's own
    prefix, e.g. ours-production-poses/, says nothing) and its suffix."""
    name = "/" + key.lower()
    if "/poses/" in name or name.endswith((".parquet", ".pkl.gz")):
        return "pose"
    if ".jsonl" in name or "/records/" in name:
        return "records"
    if name.endswith((".jpg", ".jpeg")):
        return "jpeg"
    return "other"


def manifest_videos(manifest) -> list[dict]:
    """The per-video entries of ours' manifest.json, whatever it nests them in."""
    if isinstance(manifest, dict):
        for key in ("videos", "files", "items", "entries"):
            if key in manifest:
                return manifest_videos(manifest[key])
        if all(isinstance(v, dict) for v in manifest.values()):
            return [dict(v, video=k) for k, v in manifest.items()]
        return []
    return [v for v in manifest if isinstance(v, dict)] if isinstance(manifest, list) else []


@dataclass
class Run:
    name: str
    side: str  # baseline | ours
    preset: str
    model: str | None
    fps: float | None
    video_seconds: float
    num_poses: int | None = None
    command: list[str] = field(default_factory=list)
    rc: int | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    max_rss_mb: float | None = None
    frames_analysed: int | None = None
    persons: int | None = None
    bytes: dict[str, int] = field(default_factory=dict)
    uploaded: dict | None = None
    error: str | None = None
    per_video: list = field(default_factory=list)
    variant: str | None = None  # ours: a key of VARIANTS, or None for the preset as it is
    config: dict | None = None  # ours: the CFG written for the run
    # ours: the manifest's per-video stage_seconds summed over the videos (decode, inference,
    # outputs with JPEG encoding in it, jpeg); None where the manifest has none
    stage_seconds: dict[str, float] | None = None

    @property
    def spec(self) -> str:
        """The `--presets` entry: NAME or NAME:VARIANT."""
        return self.preset + (f":{self.variant}" if self.variant else "")

    def per_wall(self) -> float | None:
        return self.video_seconds / self.wall_seconds if self.ok() else None

    def per_cpu(self) -> float | None:
        return self.video_seconds / self.cpu_seconds if self.ok() and self.cpu_seconds else None

    def per_minute(self, kind: str = "total") -> float | None:
        if not self.ok():
            return None
        total = sum(self.bytes.values()) if kind == "total" else self.bytes.get(kind, 0)
        return total / (self.video_seconds / 60)

    def cpu_outside_stages(self) -> float | None:
        """CPU seconds not in decode, inference or outputs (JPEG encoding is in outputs):
        interpreter start, imports, model loading, uploads, waiting threads' overheads."""
        stages = self.stage_seconds
        if not self.ok() or not stages or self.cpu_seconds is None:
            return None
        return self.cpu_seconds - sum(stages.get(k, 0.0) for k in ("decode", "inference",
                                                                   "outputs"))

    def ok(self) -> bool:
        return self.rc == 0 and self.error is None and bool(self.wall_seconds)


def s3_usage(s3, prefix: str) -> dict:
    objects, by_kind = 0, dict.fromkeys(KINDS, 0)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            objects += 1
            by_kind[kind_of(item["Key"][len(prefix):])] += item["Size"]
    return {"objects": objects, "bytes": by_kind}


# --- the runs --------------------------------------------------------------------------------

def run_baseline(run: Run, args, video_dir: Path, work: Path, bundle: Path, env: dict,
                 stack) -> None:
    out, stats = work / "output", work / "stats.json"
    run.command = [sys.executable, "-m", "bench.batch_baseline", "--video-dir", str(video_dir),
                   "--output-dir", str(out), "--model", str(bundle), "--fps", f"{run.fps:g}",
                   "--num-poses", str(run.num_poses), "--stats-file", str(stats)]
    if stack is not None:
        run.command += ["--s3-bucket", BUCKET, "--s3-prefix", f"{run.name}/",
                        "--s3-endpoint", stack.endpoints["s3"]]
    measured = run_measured(run.command, env, work / "log.txt", args.run_timeout)
    _take(run, measured)
    if run.rc != 0:
        return
    videos = json.loads(stats.read_text())["videos"]
    run.per_video = videos
    run.frames_analysed = sum(v["frames_analysed"] for v in videos)
    run.persons = sum(v["persons"] for v in videos)
    run.bytes = {"pose": sum(v["bytes"] for v in videos)}


def ours_config(run: Run, models_dir: Path, stack) -> dict:
    """The CFG of an ours run (keys the file sets win over the preset's): the pose bundles'
    folder, no download, quiet logs, moto's S3 endpoint, and the variant's keys."""
    settings: dict = {"processing": {"pose": {"models_dir": str(models_dir), "download": False}},
                      "logging": {"level": "WARNING"}}
    if stack is not None:
        settings["aws"] = {"region": stack.region, "endpoints": {"s3": stack.endpoints["s3"]}}
    if run.variant is not None:
        settings = overlay(settings, VARIANTS[run.variant][1])
    return settings


def run_ours(run: Run, args, video_dir: Path, work: Path, models_dir: Path, env: dict,
             stack) -> None:
    out, config = work / "output", work / "config.yaml"
    run.config = ours_config(run, models_dir, stack)
    work.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(run.config, indent=1) + "\n")  # JSON is YAML
    run.command = [sys.executable, "-m", "consumer", "batch", "--video-dir", str(video_dir),
                   "--output-dir", str(out), "--preset", run.preset, "--config", str(config)]
    if stack is not None:
        run.command += ["--s3-bucket", BUCKET, "--s3-prefix", f"{run.name}/"]
    if args.workers:
        run.command += ["--workers", str(args.workers)]
    measured = run_measured(run.command, env, work / "log.txt", args.run_timeout)
    _take(run, measured)
    if run.rc != 0:
        return
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        run.error = f"no {manifest_path.name} in --output-dir"
        return
    take_manifest(run, json.loads(manifest_path.read_text()))


def take_manifest(run: Run, manifest) -> None:
    """What ours's manifest.json says into `run`: frames analysed, persons, output bytes by
    kind, the stage seconds summed over the videos; an error if a video failed or the videos'
    durations do not add up to the videos made."""
    videos = manifest_videos(manifest)
    run.per_video = videos
    failed = [v for v in videos if v.get("status") not in DONE]
    if failed:
        run.error = f"{len(failed)} video(s) not processed: " + ", ".join(
            f"{v.get('video') or v.get('path')}: {v.get('status')}" for v in failed[:3])
    run.frames_analysed = sum(int(v.get("frames_analysed") or 0) for v in videos)
    if all(isinstance(v.get("persons"), int) for v in videos):
        run.persons = sum(v["persons"] for v in videos)
    run.bytes = dict.fromkeys(KINDS, 0)
    for video in videos:
        for output in video.get("outputs") or []:
            run.bytes[kind_of(str(output.get("key", "")))] += int(output.get("bytes") or 0)
    stages: dict[str, float] = {}
    for video in videos:
        for stage, seconds in (video.get("stage_seconds") or {}).items():
            if isinstance(seconds, (int, float)):
                stages[stage] = stages.get(stage, 0.0) + seconds
    run.stage_seconds = {k: round(v, 3) for k, v in stages.items()} or None
    measured_seconds = sum(float(v.get("duration_seconds") or 0) for v in videos)
    if videos and abs(measured_seconds - run.video_seconds) > 0.05 * run.video_seconds:
        run.error = (f"manifest durations sum to {measured_seconds:.1f} s, the videos are "
                     f"{run.video_seconds:.1f} s")


def _take(run: Run, measured: Measured) -> None:
    run.rc, run.wall_seconds, run.cpu_seconds = measured.rc, measured.wall_seconds, \
        measured.cpu_seconds
    run.max_rss_mb = measured.max_rss_mb
    if measured.rc != 0:
        run.error = f"exit status {measured.rc}: {measured.log_tail[-1500:]}"
