"""Dependency outages against a real consumer process: a camera streams in real time into the
local KVS service, the consumer (`python -m consumer run`) reads it, and a TCP fault proxy in
front of moto's server cuts S3 off for a while. Afterwards the whole data stream and bucket are
read back: no record twice, every frame of every fragment up to the checkpoint delivered, the
checkpoint monotonic and at the camera's last fragment, with the time the recovery took."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from consumer.demo import read_all_records
from consumer.fleet.lease_table import LeaseTable
from infra.local.limits import Limits
from infra.local.stack import LocalStack

from ..conftest import REPO
from ..delivery_checks import assert_delivered_once_and_complete
from .proxy import FaultProxy

pytestmark = pytest.mark.slow
TABLE = "fault-leases"
FPS = 2


@pytest.fixture(scope="module")
def stack():
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as local:
        LeaseTable(local.client("dynamodb"), TABLE, "observer").ensure_table()
        yield local


def wait_for(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Run:
    """One camera, its data stream and bucket, and a consumer whose S3 goes through a proxy."""

    def __init__(self, stack, tmp_path: Path, camera_seconds: int, fragment_seconds: int = 1,
                 sampling: str = "fps"):
        self.stack = stack
        self.name = f"fault-{uuid.uuid4().hex[:6]}"
        self.bucket, self.records_stream = f"{self.name}-bucket", f"{self.name}-records"
        stack.client("s3").create_bucket(Bucket=self.bucket)
        stack.client("kinesis").create_stream(StreamName=self.records_stream, ShardCount=1)
        self.s3_proxy = FaultProxy(stack.moto_port).start()
        endpoints = {k: v for k, v in stack.endpoints.items() if k != "region"}
        endpoints["s3"] = self.s3_proxy.endpoint
        self.config = tmp_path / "consumer.yaml"
        self.config.write_text(yaml.safe_dump({
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
        }))
        self.log = tmp_path / "consumer.log"
        self.camera = subprocess.Popen(
            [sys.executable, "-m", "producer_sim", "run", "--source", "testpattern:320x240@5",
             "--stream", self.name, "--endpoint-url", stack.endpoints["kinesisvideo"],
             "--create-stream", "--fragment-duration", str(fragment_seconds),
             "--duration", str(camera_seconds),
             "--status-interval", "60"],
            stdout=(tmp_path / "camera.log").open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        self.consumer: subprocess.Popen | None = None
        self.checkpoints: list[int] = []
        self.sampling = sampling

    def start_consumer(self) -> None:
        wait_for(lambda: self.checkpoint_or_none() is not None or self._stream_exists(), 30,
                 "the camera's stream")
        self.consumer = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(self.config)],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _stream_exists(self) -> bool:
        names = self.stack.client("kinesisvideo").list_streams()["StreamInfoList"]
        return any(s["StreamName"] == self.name for s in names)

    def checkpoint_or_none(self) -> int | None:
        for lease in LeaseTable(self.stack.client("dynamodb"), TABLE, "observer") \
                .snapshot().leases:
            if lease.stream_name == self.name:
                if lease.checkpoint is not None and (
                        not self.checkpoints or self.checkpoints[-1] != lease.checkpoint):
                    self.checkpoints.append(lease.checkpoint)
                return lease.checkpoint
        return None

    def last_fragment(self) -> int:
        fragments = self.stack.client("kinesis-video-archived-media").list_fragments(
            StreamName=self.name)["Fragments"]
        return max(int(f["FragmentNumber"]) for f in fragments)

    def stop(self) -> None:
        if self.consumer is not None and self.consumer.poll() is None:
            self.consumer.send_signal(signal.SIGTERM)
            assert self.consumer.wait(20) == 0
        for process in (self.camera, self.consumer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(10)
        self.s3_proxy.close()

    def check_everything_delivered_once(self) -> None:
        records = read_all_records(self.stack.client("kinesis"), self.records_stream)
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


@pytest.mark.parametrize("outage", [20, 120])
def test_an_s3_outage_delays_the_checkpoint_and_loses_nothing(stack, tmp_path, outage):
    run = Run(stack, tmp_path, camera_seconds=outage + 20)
    try:
        run.start_consumer()
        wait_for(lambda: run.checkpoint_or_none() is not None, 60, "a first checkpoint")
        run.s3_proxy.cut()
        cut_at = time.monotonic()
        while time.monotonic() - cut_at < outage:
            run.checkpoint_or_none()
            time.sleep(0.5)
        held = run.checkpoints[-1]
        run.s3_proxy.restore()
        restored = time.monotonic()
        assert run.s3_proxy.refused > 0  # the consumer did try S3 during the outage
        moved = wait_for(lambda: (run.checkpoint_or_none() or 0) > held, 60,
                         "the checkpoint moving again")
        run.camera.wait(outage + 40)
        final = run.last_fragment()
        took = wait_for(lambda: run.checkpoint_or_none() == final, 90,
                        "the checkpoint at the camera's last fragment")
        print(f"S3 down {outage} s: checkpoint held at ...{str(held)[-6:]}, moving again "
              f"{moved:.1f} s after S3 came back, at the last fragment "
              f"{time.monotonic() - restored:.1f} s after it ({took:.1f} s after the camera "
              "stopped)")
        text = run.log.read_text()
        assert "retrying" in text  # the uploads were retried, not given up
        assert "could not be delivered" not in text
    finally:
        run.stop()
    run.check_everything_delivered_once()


def test_a_stream_killed_before_its_first_checkpoint_repeats_nothing(stack, tmp_path):
    """The first fragment's records are partly delivered when the consumer is SIGKILLed, before
    the stream has any checkpoint: the next run reads them back (the lease shows someone held
    the stream) instead of sending them again."""
    run = Run(stack, tmp_path, camera_seconds=25, fragment_seconds=10, sampling="all")
    records = lambda: read_all_records(stack.client("kinesis"), run.records_stream)  # noqa: E731
    try:
        run.camera.wait(40)  # the whole clip is in KVS before the consumer starts
        final = run.last_fragment()
        run.start_consumer()
        wait_for(lambda: records() and run.checkpoint_or_none() is None, 60,
                 "records delivered before any checkpoint")
        run.consumer.send_signal(signal.SIGKILL)
        run.consumer.wait(10)
        before = len(records())
        assert run.checkpoint_or_none() is None or before > 0
        run.start_consumer()
        wait_for(lambda: run.checkpoint_or_none() == final, 90, "the last checkpoint")
        assert "records already delivered" in run.log.read_text()
    finally:
        run.stop()
    assert before > 0
    run.check_everything_delivered_once()
