"""`python -m bench.soak --minutes N`: does the consumer hold steady over time?

Starts the local stack, 4 simulated real-time cameras looping the clip with a person
(../shared/kvs-captures/vogels_330.mkv) and one `python -m consumer run` with the pose model
(2 frames/s per camera, JPEGs of frames with persons, pose sequences). Every --interval seconds
it prints the consumer's resident memory (RSS) and open file descriptors, its checkpoint writes
and the records in the data stream so far; at the end the least-squares slope of RSS (MB/hour)
and of open descriptors (per hour) after the first --warmup minutes. A leak shows as a slope
that does not fade; a healthy run's slope is within noise of zero.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.procstat import read_usage

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KVS_SHARED_DIR", REPO.parent / "shared"))


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (x, y) points, or None with fewer than 2."""
    if len(points) < 2:
        return None
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="how long (default 30)")
    parser.add_argument("--cameras", type=int, default=4, help="simulated cameras (default 4)")
    parser.add_argument("--interval", type=float, default=60.0,
                        help="seconds between samples (default 60)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="minutes left out of the slopes (default 2)")
    parser.add_argument("--processor", choices=("pose", "none"), default="pose")
    args = parser.parse_args(argv)
    from consumer.demo import read_all_records
    from infra.local.stack import LocalStack

    clip = SHARED / "kvs-captures" / "vogels_330.mkv"
    if not clip.is_file():
        print(f"clip {clip} not found (set KVS_SHARED_DIR)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    names = [f"soak-cam-{i + 1}" for i in range(args.cameras)]
    with LocalStack() as stack:
        stack.client("kinesis").create_stream(StreamName="soak-records", ShardCount=2)
        stack.client("s3").create_bucket(Bucket="soak-bucket")
        cameras = subprocess.Popen(
            [sys.executable, "-m", "producer_sim", "run", "--source", str(clip),
             *sum((["--stream", n] for n in names), []),
             "--endpoint-url", stack.endpoints["kinesisvideo"], "--create-stream",
             "--status-interval", "600"],
            stdout=(work / "cameras.log").open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        config = work / "consumer.yaml"
        config.write_text(yaml.safe_dump({
            "aws": {"region": stack.region,
                    "endpoints": {k: v for k, v in stack.endpoints.items() if k != "region"}},
            "streams": {"names": names, "start": "NOW", "relist_seconds": 10,
                        "defaults": {"sampling": {"mode": "fps", "fps": 2},
                                     "frames": "persons"}},
            "processing": {"processor": args.processor,
                           "pose": {"models_dir": str(SHARED / "models"), "download": False}},
            "outputs": {"kinesis": {"stream": "soak-records"}, "s3": {"bucket": "soak-bucket"}},
            "checkpoint": {"table": "soak-leases"},
            "logging": {"level": "INFO", "status_seconds": 60},
        }))
        time.sleep(5)
        consumer = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config),
             "--stats-file", str(work / "stats.json")],
            stdout=(work / "consumer.log").open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        started = time.monotonic()
        rss_points, fd_points = [], []
        print(f"soak: {args.cameras} cameras, {args.processor}, {args.minutes:g} min; logs in "
              f"{work}")
        print(f"{'minute':>6} {'rss MB':>8} {'fds':>5} {'records':>8}")
        try:
            while time.monotonic() - started < args.minutes * 60:
                time.sleep(args.interval)
                if consumer.poll() is not None:
                    print(f"the consumer exited with {consumer.returncode}", file=sys.stderr)
                    return 1
                minute = (time.monotonic() - started) / 60
                rss = read_usage([consumer.pid]).rss_bytes / 1e6
                fds = open_fds(consumer.pid)
                records = len(read_all_records(stack.client("kinesis"), "soak-records"))
                print(f"{minute:6.1f} {rss:8.1f} {fds:5d} {records:8d}", flush=True)
                if minute >= args.warmup:
                    rss_points.append((minute / 60, rss))
                    fd_points.append((minute / 60, fds))
        finally:
            consumer.send_signal(signal.SIGTERM)
            consumer.wait(30)
            cameras.terminate()
            cameras.wait(30)
    rss_slope, fd_slope = slope(rss_points), slope(fd_points)
    print(f"after the first {args.warmup:g} min: RSS slope "
          f"{'-' if rss_slope is None else f'{rss_slope:+.1f} MB/hour'}, open descriptors "
          f"slope {'-' if fd_slope is None else f'{fd_slope:+.1f} per hour'} "
          f"({len(rss_points)} samples); consumer exit {consumer.returncode}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
