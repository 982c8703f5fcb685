"""One probe of the benchmark: K simulated cameras, one consumer under test, S analysed fps.

    with LocalStack(retention_seconds=120) as stack:
        raw = run_probe(Environment(stack, clip, models, workdir), Probe("ours", 4, 2.0, 30.0), 1)

A probe gets fresh resources on the shared local stack (K Kinesis Video streams, a data stream,
a bucket and, for this project's consumer, a checkpoint table; all named after the probe) and:

1. starts the consumer under test as subprocess(es): `ours` is one `python -m consumer run` for
   all K streams (sampling `fps` S, JPEGs of frames with persons, start NOW, every other key at
   its default); `naive` is K `python -m bench.naive` processes, one per camera;
2. waits until every stream has a GetMedia connection open (so both consumers start from the
   first fragment, and their start-up - imports, model loading - is not part of the run);
3. starts `python -m producer_sim run` with K cameras looping the clip in real time for
   `duration` seconds, a record poller (bench.readback) and a sampler that reads the CPU time and
   memory of the consumer processes, the cameras and this process (the local stack and the
   poller) from /proc once a second;
4. after `duration` seconds takes the last sample and SIGTERMs the consumers (the cameras keep
   streaming while they shut down, as real cameras would), stops the cameras, collects the
   consumers' --stats-file, reads back ListFragments of every stream (producer -> server
   timestamps, sizes) and the bucket's size, and deletes the probe's resources.

It returns raw observations only; `bench.metrics` turns them into figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procstat import machine_cpu_seconds, process_tree, read_usage
from bench.readback import RecordPoller

REPO = Path(__file__).resolve().parents[1]
FRAGMENT_SECONDS = 2.0
READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Probe:
    kind: str  # "ours" | "naive"
    cameras: int
    fps: float
    duration: float
    processes: int | None = None  # ours: `consumer run --processes N` (None: option not given)


@dataclass
class Environment:
    stack: object  # infra.local.stack.LocalStack, started
    clip: Path
    models_dir: Path
    workdir: Path  # configs, logs and stats files of the probes
    # this project's consumer otherwise configured (bench.gpu): the stream defaults' and
    # processing's keys replaced by these
    ours_settings: dict | None = None


def ours_config(env: Environment, names: list[str], fps: float, prefix: str) -> dict:
    """This project's consumer as a user would configure it; defaults everywhere else."""
    endpoints = env.stack.endpoints
    config = {
        "aws": {"region": endpoints["region"],
                "endpoints": {k: v for k, v in endpoints.items() if k != "region"}},
        "streams": {"names": names, "start": "NOW",
                    "defaults": {"sampling": {"mode": "fps", "fps": fps}, "frames": "persons"}},
        "processing": {"pose": {"models_dir": str(env.models_dir), "download": False}},
        "outputs": {"kinesis": {"stream": f"{prefix}-records"}, "s3": {"bucket": f"{prefix}-bucket"}},
        "checkpoint": {"table": f"{prefix}-checkpoints", "worker_id": "bench"},
        "logging": {"level": "WARNING", "status_seconds": 3600},
    }
    if env.ours_settings:
        config["streams"]["defaults"].update(env.ours_settings.get("defaults", {}))
        config["processing"].update(env.ours_settings.get("processing", {}))
    return config


def _clean_env() -> dict[str, str]:
    """This environment without KVSA_ overrides (they would change the consumer under test)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KVSA_")}


def _start_consumers(env: Environment, probe: Probe, names: list[str], prefix: str,
                     folder: Path) -> list[tuple[subprocess.Popen, Path]]:
    endpoints = env.stack.endpoints
    started = []
    log = (folder / "consumer.log").open("w")
    if probe.kind == "ours":
        config = folder / "consumer.yaml"
        config.write_text(json.dumps(ours_config(env, names, probe.fps, prefix), indent=1))
        stats = folder / "stats-ours.json"
        command = [sys.executable, "-m", "consumer", "run", "--config", str(config),
                   "--stats-file", str(stats)]
        if probe.processes is not None:
            command += ["--processes", str(probe.processes)]
        started.append((subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env=_clean_env()), stats))
        return started
    for name in names:
        stats = folder / f"stats-{name}.json"
        command = [sys.executable, "-m", "bench.naive", "--stream", name,
                   "--kinesisvideo-url", endpoints["kinesisvideo"], "--s3-url", endpoints["s3"],
                   "--kinesis-url", endpoints["kinesis"], "--region", endpoints["region"],
                   "--data-stream", f"{prefix}-records", "--bucket", f"{prefix}-bucket",
                   "--fps", str(probe.fps), "--models-dir", str(env.models_dir),
                   "--start", "NOW", "--stats-file", str(stats)]
        started.append((subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         env=_clean_env()), stats))
    return started


def _wait_ready(env: Environment, names: list[str], consumers: list) -> float:
    """Seconds until every stream has a GetMedia connection; raises if a consumer exits."""
    began = time.monotonic()
    store = env.stack.kvs.store
    while time.monotonic() - began < READY_TIMEOUT + 3 * len(consumers):
        connected = env.stack.kvs.call(lambda: [store.get(n).getmedia_active for n in names])
        if all(count > 0 for count in connected):
            return time.monotonic() - began
        for process, _ in consumers:
            if process.poll() is not None:
                raise RuntimeError(f"consumer exited with status {process.returncode} before "
                                   "connecting (see consumer.log)")
        time.sleep(0.2)
    raise RuntimeError(f"consumers did not connect to every stream in {READY_TIMEOUT:.0f} s")


class Sampler(threading.Thread):
    """Reads CPU and memory of the consumer, camera and harness processes once a second."""

    def __init__(self, consumer_pids: list[int], camera_pid: int):
        super().__init__(name="sampler", daemon=True)
        self.consumer_pids = consumer_pids
        self.camera_pid = camera_pid
        self.samples: list[dict] = []
        self.stopped = threading.Event()

    def sample(self) -> None:
        consumer = read_usage([p for pid in self.consumer_pids for p in process_tree(pid)])
        cameras = read_usage(process_tree(self.camera_pid))
        harness = read_usage([os.getpid()])
        self.samples.append({"time": time.time(), "consumer": asdict(consumer),
                             "cameras": asdict(cameras), "harness": asdict(harness),
                             "machine_cpu_seconds": machine_cpu_seconds()})

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.sample()


def _fragments(env: Environment, names: list[str]) -> dict[str, list[list[float]]]:
    """Per stream: [producer timestamp, server timestamp, duration s, bytes] of every fragment,
    in producer-time order."""
    client = env.stack.client("kinesis-video-archived-media")  # the local data endpoint
    found = {}
    for name in names:
        rows, token = [], None
        while True:
            page = client.list_fragments(StreamName=name, **({"NextToken": token} if token else {}))
            rows += [[f["ProducerTimestamp"].timestamp(), f["ServerTimestamp"].timestamp(),
                      f["FragmentLengthInMilliseconds"] / 1000, f["FragmentSizeInBytes"]]
                     for f in page["Fragments"]]
            token = page.get("NextToken")
            if not token:
                break
        found[name] = sorted(rows)
    return found


def _bucket_size(s3, bucket: str) -> tuple[int, int, dict[str, int]]:
    """(objects, bytes, objects per extension) of a bucket; empties it too."""
    count, size, kinds, keys = 0, 0, {}, []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            count += 1
            size += item["Size"]
            ext = item["Key"].rsplit(".", 1)[-1]
            kinds[ext] = kinds.get(ext, 0) + 1
            keys.append({"Key": item["Key"]})
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000]})
    return count, size, kinds


def _create(env: Environment, names: list[str], prefix: str) -> None:
    control = env.stack.client("kinesisvideo")
    for name in names:
        control.create_stream(StreamName=name, DataRetentionInHours=1)
    env.stack.client("kinesis").create_stream(StreamName=f"{prefix}-records", ShardCount=1)
    env.stack.client("s3").create_bucket(Bucket=f"{prefix}-bucket")


def _delete(env: Environment, names: list[str], prefix: str, kind: str) -> None:
    control = env.stack.client("kinesisvideo")
    for name in names:
        arn = control.describe_stream(StreamName=name)["StreamInfo"]["StreamARN"]
        control.delete_stream(StreamARN=arn)
    env.stack.client("kinesis").delete_stream(StreamName=f"{prefix}-records")
    env.stack.client("s3").delete_bucket(Bucket=f"{prefix}-bucket")
    if kind == "ours":
        dynamodb = env.stack.client("dynamodb")
        if f"{prefix}-checkpoints" in dynamodb.list_tables()["TableNames"]:
            dynamodb.delete_table(TableName=f"{prefix}-checkpoints")


def _stop(consumers: list[tuple[subprocess.Popen, Path]], timeout: float) -> list[dict]:
    for process, _ in consumers:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + timeout
    stats = []
    for process, path in consumers:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        loaded = json.loads(path.read_text()) if path.is_file() else None
        stats.append({"exit_status": process.returncode, "stats": loaded})
    return stats


def _start_cameras(env: Environment, probe: Probe, names: list[str],
                   folder: Path) -> subprocess.Popen:
    """K cameras looping the clip in real time; stopped by the probe (the duration is a backstop)."""
    return subprocess.Popen(
        [sys.executable, "-m", "producer_sim", "run", "--source", str(env.clip),
         *[arg for name in names for arg in ("--stream", name)], "--cameras", str(probe.cameras),
         "--endpoint-url", env.stack.endpoints["kinesisvideo"],
         "--duration", str(probe.duration + 60), "--status-interval", "10"],
        cwd=REPO, stdout=(folder / "cameras.log").open("w"), stderr=subprocess.STDOUT)


def _stop_process(process: subprocess.Popen | None) -> int | None:
    if process is None:
        return None
    process.terminate()
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


def run_probe(env: Environment, probe: Probe, number: int) -> dict:
    """Run one probe and return its raw observations (see the module's docstring)."""
    prefix = f"p{number:02d}-{probe.kind}"
    folder = env.workdir / prefix
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{prefix}-cam-{i + 1}" for i in range(probe.cameras)]
    _create(env, names, prefix)
    poller = RecordPoller(env.stack.client("kinesis"), f"{prefix}-records").start()
    consumers = _start_consumers(env, probe, names, prefix, folder)
    cameras = None
    try:
        ready_seconds = _wait_ready(env, names, consumers)
        cameras = _start_cameras(env, probe, names, folder)
        started = time.time()
        sampler = Sampler([p.pid for p, _ in consumers], cameras.pid)
        sampler.sample()
        sampler.start()
        time.sleep(probe.duration)
        sampler.stopped.set()
        sampler.join(5)
        sampler.sample()
        stopped = time.time()
    finally:
        # The cameras keep streaming while the consumers shut down, as real cameras would (and a
        # consumer blocked on an idle GetMedia read gets its next fragment within 2 s).
        consumer_stats = _stop(consumers, timeout=20.0)
        cameras_status = _stop_process(cameras)
        arrivals = poller.stop(drain_seconds=0.5)
        fragments = _fragments(env, names)
        objects, object_bytes, kinds = _bucket_size(env.stack.client("s3"), f"{prefix}-bucket")
        _delete(env, names, prefix, probe.kind)
    return {
        "probe": asdict(probe), "name": prefix, "streams": names, "ready_seconds": ready_seconds,
        "cameras_started": started, "stopped": stopped, "cameras_exit_status": cameras_status,
        "consumers": consumer_stats, "samples": sampler.samples, "fragments": fragments,
        "arrivals": [asdict(a) for a in arrivals], "unparsed_records": poller.unparsed,
        "poll_errors": poller.errors,
        "s3": {"objects": objects, "bytes": object_bytes, "by_extension": kinds},
    }
