"""`python -m bench.batch`: batch mode against the seed-style baseline on the same folder of
videos, in one run (GitHub issue 14). Figures and ratios, no pass/fail: the aim's verdict is
printed, never enforced.

Videos: made from the real captures in ../shared/kvs-captures (default vogels_330.mkv, a speaker
on a stage; `--sources` adds others), each scaled to fit 1280x720 (aspect kept, black bars),
re-timed to 30 fps and to 15 fps (every frame / every other frame of the ~30 fps source) and
encoded with PyAV (libx264, yuv420p, a keyframe every 2 s exactly, no scene-cut keyframes, MP4):
`--videos` videos per rate of `--video-seconds` each, the sources looped, video i starting
i x 7 s into them. Cached under bench/.cache/batch-videos/<parameters>/ (written under a
temporary name, then renamed). Made by bench/batch_videos.py.

Runs (bench/batch_runs.py), each a subprocess measured from outside (os.wait4: wall clock, and
user + system CPU of the process and of every process under it; the harness is a child
subreaper, so workers that outlive their parent are counted too):
  baseline  `python -m bench.batch_baseline` (see its docstring): OpenCV reads every frame,
            MediaPipe PoseLandmarker on every k-th frame (k = round(video fps / fps)) on one
            thread, pickle + gzip per video, one s3.upload_file per file; at the model, analysis
            rate and num_poses of each preset named by `--baselines`;
  ours      `python -m consumer batch --video-dir DIR --output-dir OUT --preset NAME --config
            CFG [--s3-bucket B --s3-prefix P] [--workers N]` per preset of `--presets`; CFG
            (written per run) sets processing.pose.models_dir to a folder of links to the pose
            bundles found in `--models-dir`, processing.pose.download false and aws.endpoints.s3;
            `NAME:poses` is preset NAME with streams.defaults.frames none added to CFG: no JPEGs
            of frames, pose sequences and records only, the same work as the baseline's
            (`production:poses`: "ours production, pose data only (frames: none)").
Uploads go to moto's S3 server of the local stack (infra.local.stack.LocalStack, started in this
process: its CPU is nobody's), bucket bench-batch, a prefix per run; `--no-upload` writes locally
only (ours: no --s3-bucket).

Figures per run: video seconds (frames / fps of the videos made), frames analysed, wall s, CPU s,
video-seconds per wall-second and per CPU-second (per core), output bytes per video-minute
(KB = 1000 bytes): pose data (baseline: its .pkl.gz; ours: the poses/ Parquet objects), records
(JSON Lines), JPEGs, other, total (ours: from OUT/manifest.json's outputs). Each ours row is
compared with the baseline run at the same preset's settings where there is one ("x" columns:
ours / baseline; bytes below 1 are smaller). Interpreter start, imports and model loading are in
every run's time, as a user would pay them. Where ours's CPU goes: the manifest's per-video
stage_seconds (decode, inference, outputs with JPEG encoding in it, jpeg) summed over the videos,
in results.json (each run's stage_seconds and cpu_outside_stages) and under the table.

Outputs: a Markdown table (stdout and report.md) and results.json in --out (default
bench/results/batch-<timestamp>); the runs' own outputs are deleted unless --keep-outputs.
Presets whose model bundle is absent are skipped with the reason (build lite and heavy with
`python -m processors.pose_bundles`).

examples:
  python -m bench.batch                                   # 2 x 60 s per rate, all presets
  python -m bench.batch --presets production --baselines production --video-seconds 30
  python -m bench.batch --presets production:poses --baselines production   # like for like
  python -m bench.batch --smoke --out /tmp/batch          # CI: 2 videos of 4 s, production:poses
  python -m bench.batch --presets none                    # the baseline only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from bench.batch_runs import (
    BUCKET,
    DEFAULT_DIRS,
    KINDS,
    VARIANTS,
    Run,
    batch_cli_available,
    become_subreaper,
    models_folder,
    preset_settings,
    run_baseline,
    run_ours,
    s3_usage,
    split_spec,
)
from bench.batch_videos import HEIGHT, REPO, WIDTH, prepare_videos
from bench.clip import SHARED

PRESETS = ("development", "fast_processing", "production", "production:poses", "high_accuracy")
# the seed scripts' published figures (issue 14): 60 s of 30 fps video in 2 minutes, full model
SEED = {"video_per_wall": 0.5, "kb_per_minute": 200.0}
LOCAL_ENV = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
             "AWS_EC2_METADATA_DISABLED": "true"}


# --- report ----------------------------------------------------------------------------------

def _f(value, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _kb(value) -> str:
    return "-" if value is None else f"{value / 1000:.1f}"


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def reference(run: Run, runs: list[Run]) -> Run | None:
    """The baseline run at this ours run's settings: the same preset's, else the same model, fps
    and num_poses; None if there is none."""
    baselines = [r for r in runs if r.side == "baseline" and r.ok()]
    return next((b for b in baselines if b.preset == run.preset), None) or next(
        (b for b in baselines if (b.model, b.fps, b.num_poses) == (run.model, run.fps,
                                                                     run.num_poses)
         and run.model is not None), None)


def ratios(run: Run, runs: list[Run]) -> dict | None:
    base = reference(run, runs)
    if run.side != "ours" or base is None or not run.ok():
        return None
    return {"baseline": base.name,
            "persons_per_frame": [_ratio(r.persons, r.frames_analysed) for r in (run, base)],
            "throughput": _ratio(run.per_wall(), base.per_wall()),
            "per_core": _ratio(run.per_cpu(), base.per_cpu()),
            "pose_bytes": _ratio(run.per_minute("pose"), base.per_minute("pose")),
            "total_bytes": _ratio(run.per_minute("total"), base.per_minute("total"))}


COLUMNS = ("run", "model", "analysed fps", "frames analysed", "video s", "wall s", "CPU s",
           "video-s / wall-s", "video-s / CPU-s", "pose KB/min", "records KB/min",
           "JPEG KB/min", "other KB/min", "total KB/min", "vs", "throughput x", "per core x",
           "pose bytes x", "total bytes x")


def label(run: Run) -> str:
    """The run's name in the table and the verdicts."""
    if run.side == "baseline":
        return f"baseline ({run.preset} settings)"
    return f"ours {run.preset}" + (f", {VARIANTS[run.variant][0]}" if run.variant else "")


def table(runs: list[Run]) -> list[str]:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for run in runs:
        r = ratios(run, runs) or {}
        cells = [label(run) + ("" if run.ok() else " FAILED"), run.model or "?",
                 _f(run.fps, "g"), _f(run.frames_analysed, "d"),
                 _f(run.video_seconds, ".0f"), _f(run.wall_seconds, ".1f"),
                 _f(run.cpu_seconds, ".1f"), _f(run.per_wall()), _f(run.per_cpu()),
                 _kb(run.per_minute("pose")),
                 *[_kb(run.per_minute(k)) if run.side == "ours" else "-"
                   for k in ("records", "jpeg", "other")],
                 _kb(run.per_minute("total")), r.get("baseline", "-"),
                 *[_f(r.get(k)) for k in ("throughput", "per_core", "pose_bytes",
                                          "total_bytes")]]
        lines.append("| " + " | ".join(cells) + " |")
    seed = ["seed scripts (published)", "full", "-", "-", "60", "120", "-",
            _f(SEED["video_per_wall"]), "-", f"~{SEED['kb_per_minute']:.0f}", "-", "-", "-",
            f"~{SEED['kb_per_minute']:.0f}", "-", "-", "-", "-", "-"]
    lines.append("| " + " | ".join(seed) + " |")
    return lines


AIM_THROUGHPUT, AIM_BYTES = 3.0, 0.5  # issue 14: same model and rate, on the 2-core machine


def _aim(value, ok: bool) -> str:
    return "-" if value is None else ("met" if ok else "NOT met")


def verdicts(runs: list[Run]) -> list[str]:
    """Per ours run with a baseline at its settings: the issue's aim, throughput and pose data
    (like for like: the baseline writes nothing else); all ours writes beside it."""
    lines = []
    for run in runs:
        r = ratios(run, runs)
        if not r:
            continue
        fast = _aim(r["throughput"], (r["throughput"] or 0) >= AIM_THROUGHPUT)
        small = _aim(r["pose_bytes"], r["pose_bytes"] is not None
                     and r["pose_bytes"] <= AIM_BYTES)
        lines.append(
            f"- {label(run)} vs {r['baseline']} ({run.model}, {run.fps:g} fps; persons "
            f"per analysed frame {_f(r['persons_per_frame'][0])} / "
            f"{_f(r['persons_per_frame'][1])}): throughput {_f(r['throughput'])}x (aim >= "
            f"{AIM_THROUGHPUT:g}x: {fast}), per core {_f(r['per_core'])}x; pose data "
            f"{_f(r['pose_bytes'])}x the bytes per video-minute (aim <= {AIM_BYTES:g}x: "
            f"{small}); all it writes (pose data, records, JPEGs) {_f(r['total_bytes'])}x")
    return lines


def cpu_split(runs: list[Run]) -> list[str]:
    """Per ours run whose manifest has stage_seconds: where its CPU went."""
    lines = []
    for run in runs:
        stages = run.stage_seconds
        if run.side != "ours" or not stages or not run.ok():
            continue
        named = ", ".join(f"{k} {v:.1f}" for k, v in stages.items() if k != "jpeg")
        jpeg = f" (JPEG {stages['jpeg']:.1f})" if "jpeg" in stages else ""
        lines.append(f"- {label(run)}: CPU {run.cpu_seconds:.1f} s; in its stages {named}{jpeg};"
                     f" outside them {_f(run.cpu_outside_stages(), '.1f')}")
    return lines


def markdown(results: dict, runs: list[Run]) -> str:
    p = results["parameters"]
    m = results["machine"]
    rates = " and ".join(map(str, sorted({v["fps"] for v in results["videos"]}, reverse=True)))
    lines = [f"# bench.batch ({results['started']}, {m['cores_usable']} cores, {m['cpu_model']})",
             "",
             (f"{len(results['videos'])} videos ({rates} fps, {WIDTH}x{HEIGHT}, "
              f"{p['video_seconds']:g} s each, {results['video_seconds']:.0f} video-seconds "
              f"in all) from {', '.join(p['sources'])}; uploads "
              f"{'to moto S3' if not p['no_upload'] else 'off'}; load average (1 min) "
              f"{results['load'][0]:.2f} before, {results['load'][1]:.2f} after; KB = 1000 "
              f"bytes; x = ours / the baseline at the same settings."), ""]
    if results["skipped"]:
        lines += ["Skipped:", *[f"- {why}" for why in results["skipped"]], ""]
    lines += table(runs)
    if found := verdicts(runs):
        lines += ["", *found]
    if split := cpu_split(runs):
        lines += ["", ("Where ours's CPU goes (s; the manifest's stage_seconds summed over the "
                       "videos, JPEG encoding being part of outputs):"), *split]
    failed = [r for r in runs if not r.ok()]
    for run in failed:
        lines += ["", f"{run.name} failed: {run.error}"]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=doc[0],
                                     epilog="\n\n".join(doc[1:]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video-seconds", type=float, default=60.0,
                        help="length of each test video (default 60)")
    parser.add_argument("--videos", type=int, default=2,
                        help="videos per frame rate, 30 and 15 fps (default 2)")
    parser.add_argument("--sources", default="vogels_330.mkv",
                        help="comma-separated captures in ../shared/kvs-captures, played in "
                             "turn (default vogels_330.mkv)")
    parser.add_argument("--presets", default=",".join(PRESETS),
                        help="ours: comma-separated presets, NAME:poses for preset NAME "
                             "without JPEGs of frames (frames: none), or none (default "
                             + ",".join(PRESETS) + ")")
    parser.add_argument("--baselines", default="production,fast_processing",
                        help="the baseline at these presets' model, fps and num_poses, or none "
                             "(default production,fast_processing)")
    parser.add_argument("--workers", type=int,
                        help="ours: --workers N (default: the preset's / the CLI's)")
    parser.add_argument("--models-dir", type=Path, action="append",
                        help="folder to find pose_landmarker_{lite,full,heavy}.task in; repeat "
                             "(default: " + ", ".join(map(str, DEFAULT_DIRS)) + ")")
    parser.add_argument("--no-upload", action="store_true",
                        help="no S3: the baseline skips its upload_file, ours gets no bucket")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="results.json and report.md (default bench/results/batch-<time>)")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep each run's outputs and logs under --out/runs")
    parser.add_argument("--run-timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="a run taking longer is killed and reported (default 1800)")
    parser.add_argument("--smoke", action="store_true",
                        help="CI size: one 4 s video per rate, ours production:poses and the "
                             "baseline at production settings (under a minute on 2 cores)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.video_seconds, args.videos = 4.0, 1
        args.presets, args.baselines = "production:poses", "production"
    if args.video_seconds <= 0 or args.videos < 1:
        parser.error("--video-seconds must be positive and --videos at least 1")
    args.preset_list = [] if args.presets == "none" else [p for p in args.presets.split(",") if p]
    args.baseline_list = [] if args.baselines == "none" else [
        p for p in args.baselines.split(",") if p]
    for spec in args.preset_list:
        try:
            split_spec(spec)
        except ValueError as err:
            parser.error(f"--presets: {err}")
    return args


def _plan(args) -> list[tuple[str, str]]:
    """(side, preset or NAME:VARIANT) in run order: a baseline right before the first ours at
    the same preset."""
    ours = [split_spec(spec)[0] for spec in args.preset_list]
    plan = [("baseline", p) for p in args.baseline_list if p not in ours]
    for preset, spec in zip(ours, args.preset_list):
        if preset in args.baseline_list and ("baseline", preset) not in plan:
            plan.append(("baseline", preset))
        plan.append(("ours", spec))
    return plan


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = (args.out or REPO / "bench" / "results" / f"batch-{stamp}").resolve()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f} s] {message}", file=sys.stderr, flush=True)

    from bench.report import machine

    sources = [SHARED / "kvs-captures" / s for s in args.sources.split(",") if s]
    video_dir, videos = prepare_videos(sources, args.video_seconds, args.videos, log=log)
    video_seconds = sum(v.seconds for v in videos)
    dirs = [d.expanduser() for d in (args.models_dir or DEFAULT_DIRS)]
    models_dir, bundles, missing = models_folder(dirs)
    if args.preset_list and not batch_cli_available():
        print("error: `python -m consumer batch` is not available in this checkout (ours "
              "cannot run); --presets none measures the baseline alone", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSA_")} | LOCAL_ENV
    become_subreaper()
    results: dict = {
        "started": stamp, "command": "python -m bench.batch " + " ".join(
            sys.argv[1:] if argv is None else argv), "machine": machine(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                       if k not in ("preset_list", "baseline_list")},
        "videos": [asdict(v) | {"seconds": v.seconds} for v in videos],
        "video_seconds": video_seconds, "models": {k: str(v) for k, v in bundles.items()},
        "skipped": [], "load": [os.getloadavg()[0], None]}
    results["parameters"]["sources"] = [s.name for s in sources]
    runs: list[Run] = []
    stack = None
    if not args.no_upload:
        from infra.local.stack import LocalStack
        stack = LocalStack().start()
        stack.client("s3").create_bucket(Bucket=BUCKET)
    try:
        for side, spec in _plan(args):
            preset, variant = split_spec(spec)
            settings = preset_settings(preset)
            model, fps = settings["model"], settings["fps"]
            if model is not None and model not in bundles:
                results["skipped"].append(f"{side} {spec}: needs the {model} model; " + next(
                    (why for why in missing if why.startswith(model)), ""))
                continue
            if side == "baseline" and (model is None or fps is None):
                results["skipped"].append(f"baseline {preset}: its model and fps are unknown "
                                          f"(not in consumer.presets)")
                continue
            run = Run(f"{side}-{preset}" + (f"-{variant}" if variant else ""), side, preset,
                      model, fps, video_seconds, settings["num_poses"], variant=variant)
            work = out / "runs" / run.name
            if work.exists():
                shutil.rmtree(work)
            log(f"{run.name}: running")
            if side == "baseline":
                run_baseline(run, args, video_dir, work, bundles[model], env, stack)
            else:
                run_ours(run, args, video_dir, work, models_dir, env, stack)
            if stack is not None and run.rc == 0:
                run.uploaded = s3_usage(stack.client("s3"), f"{run.name}/")
            log(f"{run.name}: {'ok' if run.ok() else 'FAILED'} in {_f(run.wall_seconds, '.1f')} s"
                f" wall, {_f(run.cpu_seconds, '.1f')} s CPU")
            runs.append(run)
    finally:
        if stack is not None:
            stack.stop()
    results["load"][1] = os.getloadavg()[0]
    results["runs"] = [asdict(r) | {"spec": r.spec, "ok": r.ok(), "video_per_wall": r.per_wall(),
                                    "video_per_cpu": r.per_cpu(),
                                    "bytes_per_minute": {k: r.per_minute(k)
                                                         for k in (*KINDS, "total")},
                                    "cpu_outside_stages": r.cpu_outside_stages(),
                                    "ratios": ratios(r, runs)} for r in runs]
    results["seed_published"] = SEED
    results["total_seconds"] = time.monotonic() - began
    if not args.keep_outputs:
        shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results, runs)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "report.md").write_text(text + "\n")
    print(text)
    print(f"\noutputs: {out / 'results.json'}, {out / 'report.md'}")
    print(f"total time: {time.monotonic() - began:.0f} s")
    return 0 if runs and all(r.ok() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
