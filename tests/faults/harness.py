"""The fault suite's harness: one camera streaming in real time into the local KVS service, its
own data stream and bucket on moto's server, and real consumer processes (`python -m consumer
run`) whose connections to chosen services go through a `FaultProxy`. After a scenario,
`check_everything_delivered_once()` reads the whole data stream and bucket back and asserts what
a user would: no record id twice, every frame of every fragment up to the checkpoint delivered,
checkpoints monotonic, every JPEG a record names in the bucket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from consumer.demo import read_all_records
from consumer.fleet.lease_table import LeaseTable

from ..conftest import REPO
from ..delivery_checks import assert_delivered_once_and_complete
from .proxy import FaultProxy

TABLE = "fault-leases"
FPS = 2
MOTO_SERVICES = ("s3", "kinesis", "dynamodb")


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds until `predicate()` was true; AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def deep_merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class Run:
    """One camera, its data stream and bucket, and consumers whose connections to the services
    in `proxied` (any of s3, kinesis, dynamodb) go through a fault proxy (`self.proxies[name]`).

    `camera_seconds=None` starts no camera (the test pushes media itself); `config` is merged
    over the default consumer config (processor none, every frame's JPEG, `FPS` sampling)."""

    def __init__(self, stack, tmp_path: Path, camera_seconds: int | None,
                 fragment_seconds: int = 1, sampling: str = "fps",
                 proxied: tuple[str, ...] = ("s3",), source: str = "testpattern:320x240@5",
                 config: dict | None = None, name: str | None = None):
        self.stack = stack
        self.tmp_path = tmp_path
        self.name = name or f"fault-{uuid.uuid4().hex[:6]}"
        self.bucket, self.records_stream = f"{self.name}-bucket", f"{self.name}-records"
        stack.client("s3").create_bucket(Bucket=self.bucket)
        stack.client("kinesis").create_stream(StreamName=self.records_stream, ShardCount=1)
        self.proxies = {service: FaultProxy(stack.moto_port).start() for service in proxied}
        endpoints = {k: v for k, v in stack.endpoints.items() if k != "region"}
        endpoints.update({service: proxy.endpoint for service, proxy in self.proxies.items()})
        self.sampling = sampling
        self.config = tmp_path / "consumer.yaml"
        self.config.write_text(yaml.safe_dump(deep_merge({
            "aws": {"region": stack.region, "endpoints": endpoints},
            "streams": {"names": [self.name], "start": "EARLIEST", "relist_seconds": 1,
                        "defaults": {"sampling": {"mode": sampling, "fps": FPS},
                                     "frames": "all"}},
            "processing": {"processor": "none"},
            "outputs": {"kinesis": {"stream": self.records_stream, "linger_ms": 50},
                        "s3": {"bucket": self.bucket}},
            "checkpoint": {"table": TABLE, "lease_seconds": 6, "min_interval_seconds": 0.2},
            "logging": {"level": "INFO", "status_seconds": 2},
            "shutdown_seconds": 8,
        }, config or {})))
        self.logs: list[Path] = []
        self.camera: subprocess.Popen | None = None
        if camera_seconds is not None:
            self.camera = subprocess.Popen(
                [sys.executable, "-m", "producer_sim", "run", "--source", source,
                 "--stream", self.name, "--endpoint-url", stack.endpoints["kinesisvideo"],
                 "--create-stream", "--fragment-duration", str(fragment_seconds),
                 "--duration", str(camera_seconds), "--status-interval", "60"],
                stdout=(tmp_path / "camera.log").open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        self.consumer: subprocess.Popen | None = None
        self.checkpoints: list[int] = []

    @property
    def s3_proxy(self) -> FaultProxy:
        return self.proxies["s3"]

    @property
    def log(self) -> Path:
        """The latest consumer's log."""
        return self.logs[-1]

    def start_consumer(self, env: dict[str, str] | None = None,
                       wrapper: list[str] | None = None) -> subprocess.Popen:
        """Start a consumer (after the camera's stream exists); `wrapper` prefixes the command
        (for example `faketime`), `env` adds variables."""
        wait_for(lambda: self.checkpoint_or_none() is not None or self.stream_exists(), 30,
                 "the camera's stream")
        log = self.tmp_path / f"consumer-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.consumer = subprocess.Popen(
            [*(wrapper or []), sys.executable, "-m", "consumer", "run",
             "--config", str(self.config)],
            stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        return self.consumer

    def kill_consumer(self) -> None:
        """SIGKILL: no drain, no release; the lease expires on its own."""
        self.consumer.send_signal(signal.SIGKILL)
        self.consumer.wait(10)

    def stream_exists(self) -> bool:
        names = self.stack.client("kinesisvideo").list_streams()["StreamInfoList"]
        return any(s["StreamName"] == self.name for s in names)

    def checkpoint_or_none(self) -> int | None:
        """The stream's checkpoint now (also remembered, to check that it only moves forward)."""
        for lease in LeaseTable(self.stack.client("dynamodb"), TABLE, "observer") \
                .snapshot().leases:
            if lease.stream_name == self.name:
                if lease.checkpoint is not None and (
                        not self.checkpoints or self.checkpoints[-1] != lease.checkpoint):
                    self.checkpoints.append(lease.checkpoint)
                return lease.checkpoint
        return None

    def leased(self) -> bool:
        """Someone holds (or held) the stream's lease: a consumer past its start checks."""
        return any(lease.stream_name == self.name for lease in
                   LeaseTable(self.stack.client("dynamodb"), TABLE, "observer").snapshot().leases)

    def last_fragment(self) -> int:
        fragments = self.stack.client("kinesis-video-archived-media").list_fragments(
            StreamName=self.name)["Fragments"]
        return max(int(f["FragmentNumber"]) for f in fragments)

    def records(self) -> list[dict]:
        return read_all_records(self.stack.client("kinesis"), self.records_stream)

    def stop(self) -> None:
        """SIGTERM the consumer (it must exit 0), kill whatever is left, close the proxies."""
        if self.consumer is not None and self.consumer.poll() is None:
            self.consumer.send_signal(signal.SIGTERM)
            assert self.consumer.wait(20) == 0
        for process in (self.camera, self.consumer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        for proxy in self.proxies.values():
            proxy.close()

    def check_everything_delivered_once(self) -> None:
        records = self.records()
        checkpoint = self.checkpoint_or_none()
        assert self.checkpoints == sorted(self.checkpoints), "a checkpoint moved backwards"
        assert_delivered_once_and_complete(records, {self.name: checkpoint},
                                           self.stack.client("kinesis-video-media"),
                                           FPS if self.sampling == "fps" else None)
        pages = self.stack.client("s3").get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket)
        keys = {o["Key"] for page in pages for o in page.get("Contents", [])}
        missing = [r["RecordId"] for r in records
                   if any(f["Key"] not in keys for f in r.get("Frames", []))]
        assert not missing, f"{len(missing)} records name a JPEG that is not in the bucket"
