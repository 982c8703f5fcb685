"""`python -m bench`: how many cameras one consumer process sustains, at what latency and AWS cost,
against a naive consumer, measured in the same run on this machine."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KVS_SHARED_DIR", REPO.parent / "shared"))

EPILOG = """\
what it does:
  1. prepares the camera clip once (bench/.cache/): vogels_330.mkv, a person on a stage,
     letterboxed to 1280x720, 15 fps, a keyframe every 2 s (2 s fragments), ~2 Mbit/s;
  2. micro-benchmarks: decode frames/s per core (every frame vs keyframes only), the fragment
     reader's MB/s, pose-sequence bytes per frame (Parquet vs pickle+gzip), and the CPU per
     unit of work (a frame decoded, a keyframe, RGB conversion, pose, JPEG) from which the
     physical limit at each S is reckoned (bench.limit: usable cores / CPU of a camera-second);
  3. starts the local stack (Kinesis Video + moto's S3, Kinesis Data Streams, DynamoDB) once;
  4. for each S (highest first) and each consumer, a sweep of probes: K simulated cameras
     (producer_sim, real time) -> the consumer under test -> records read back from Kinesis.
     K doubles (1, 2, 4, ...) until the lag is not bounded, then bisects to one camera.
     "ours" is one `python -m consumer run` process for all K cameras; "naive" is K
     `python -m bench.naive` processes (every frame decoded to BGR, pose inline on the reading
     thread, one PutObject + one PutRecord per analysed frame);
  5. writes results.json, report.md and report.png to --out and prints the Markdown tables:
     capacity beside the limit, and per S where each consumer's latency goes, stage by stage
     (measured inside the consumers, bench.breakdown).

bounded lag (per probe; the run is cut in thirds, the first is warm-up; bench/metrics.py): both
  1. delivered: of the frames in the whole fragments that began after the first third and up to
     3 fragments before the end, at least 95 % (S x those fragments' duration, all cameras) have
     their records in Kinesis by the end;
  2. not growing: the fragments' delay (arrival of a fragment's last record - its server
     timestamp) grows by at most 0.1 s per second of run (least-squares slope, after warm-up).

Everything shares this machine's cores: the cameras, the local stack, the record poller and the
consumer under test (the report gives each one's CPU). Timings vary with other load.

examples:
  python -m bench                          # the default sweep (under 10 minutes on 2 cores)
  python -m bench --fps 1 2 5 --max-cameras 32 --duration 30 --budget 1800
  python -m bench --smoke --out /tmp/bench # K=1, one S, a few seconds per probe (CI)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 2.0], metavar="S",
                        help="analysed frames per second per camera to sweep (default: 1 2)")
    parser.add_argument("--max-cameras", type=int, default=16, metavar="N",
                        help="largest K tried (default 16)")
    parser.add_argument("--duration", type=float, default=20.0, metavar="SECONDS",
                        help="cameras stream this long per probe (default 20)")
    parser.add_argument("--budget", type=float, default=570.0, metavar="SECONDS",
                        help="the whole run's time budget: probes that would end after it are "
                             "skipped and marked (default 570)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: bench/results/<timestamp>)")
    parser.add_argument("--models-dir", type=Path, default=SHARED / "models",
                        help="folder holding pose_landmarker_full.task (default ../shared/models)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run for CI: K=1, the first S only, 8 s probes, small "
                             "micro-benchmarks; checks the outputs, not the speed")
    args = parser.parse_args(argv)
    if args.smoke:
        args.fps, args.max_cameras, args.duration = args.fps[:1], 1, 8.0
    if min(args.fps) <= 0 or args.max_cameras < 1 or args.duration < 5:
        parser.error("--fps must be positive, --max-cameras at least 1, --duration at least 5")
    return args


def run_micro(clip: Path, models_dir: Path, smoke: bool, log) -> dict:
    """The micro-benchmarks; one that fails is recorded, not fatal."""
    from bench import micro
    from bench.unit_costs import unit_costs

    jobs = {
        "decode": lambda: micro.decode_fps(clip),
        "reader": lambda: micro.reader_throughput(repeat=1 if smoke else 3,
                                                  latency=not smoke),
        "pose_sequence": lambda: micro.pose_sequence_bytes(models_dir=models_dir,
                                                           frames=8 if smoke else 40),
        "unit_costs": lambda: unit_costs(clip, models_dir, pose_frames=4 if smoke else 30),
    }
    results: dict = {"errors": {}}
    for name, job in jobs.items():
        began = time.monotonic()
        try:
            results[name] = job()
        except Exception as err:  # noqa: BLE001 - reported in the outputs
            results["errors"][name] = f"{type(err).__name__}: {err}"
        log(f"micro-benchmark {name}: {time.monotonic() - began:.1f} s")
    return results


def _failed_probe(probe, error: str) -> dict:
    return {"kind": probe.kind, "cameras": probe.cameras, "fps": probe.fps,
            "duration": probe.duration, "bounded": False, "errors": [error],
            "analysed_fps": 0.0, "analysed_fps_target": probe.cameras * probe.fps,
            "delivered_ratio": 0.0, "latency_s": {"p50": None}, "cores": {"consumer": None}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "bench" / "results" / stamp
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f} s] {message}", flush=True)

    from bench import clip as clips
    from bench.breakdown import breakdown
    from bench.metrics import summarise
    from bench.report import capacity_rows, machine, markdown, ratios, write_outputs
    from bench.scenario import Environment, run_probe
    from bench.sweep import Runner
    from infra.local.stack import LocalStack

    if not (args.models_dir / "pose_landmarker_full.task").is_file():
        print(f"bench: pose_landmarker_full.task not found in {args.models_dir} "
              "(--models-dir)", file=sys.stderr)
        return 2
    clip = clips.prepare_clip()
    log(f"clip {clip}")
    micro = run_micro(clip, args.models_dir, args.smoke, log)
    count = 0
    with LocalStack(retention_seconds=120) as stack:
        # moto's server logs a traceback when a GetRecords races a PutRecord (its shard is not
        # thread-safe); the poller retries and counts it (raw "poll_errors")
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        env = Environment(stack, clip, args.models_dir.resolve(), out / "probes")

        def probe(p) -> dict:
            nonlocal count
            count += 1
            try:
                raw = run_probe(env, p, count)
            except Exception as err:  # noqa: BLE001 - a failed probe is an unbounded one
                traceback.print_exc()
                return _failed_probe(p, f"{type(err).__name__}: {err}")
            return summarise(raw, clips.GOP / clips.FPS) | {"raw": raw}

        runner = Runner(probe, args.duration, args.max_cameras,
                        deadline=began + args.budget - 15, log=log)
        sweeps = [s.as_dict() for s in runner.run(["ours", "naive"], args.fps)]
    host = machine()
    rows = capacity_rows(sweeps, host["cores_usable"], micro.get("unit_costs"))
    results = {
        "started": stamp, "command": "python -m bench " + " ".join(sys.argv[1:]),
        "parameters": {"fps": args.fps, "max_cameras": args.max_cameras,
                       "duration": args.duration, "budget": args.budget, "smoke": args.smoke},
        "machine": host,
        "clip": {"path": str(clip), "source": str(clips.SOURCE), "width": clips.WIDTH,
                 "height": clips.HEIGHT, "fps": clips.FPS, "gop": clips.GOP,
                 "kbit_per_s_target": clips.KBITS, "scaling": "2x, letterboxed"},
        "definitions": {name: sys.modules[f"bench.{name}"].__doc__
                        for name in ("metrics", "sweep", "limit", "breakdown")}
        | {"stages": sys.modules["consumer.pipeline.stage_times"].STAGES},
        "micro": micro, "sweeps": sweeps, "rows": rows, "ratios": ratios(rows),
        "breakdown": breakdown(sweeps),
        "probes_run": count,
    }
    results["total_seconds"] = time.monotonic() - began
    paths = write_outputs(out, results)
    print()
    print(markdown(results))
    print(f"outputs: {paths['json']}, {paths['markdown']}, {paths['png']}")
    print(f"total time: {time.monotonic() - began:.0f} s ({count} probes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
