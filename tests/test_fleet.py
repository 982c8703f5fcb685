"""A fleet of consumer processes sharing streams through the lease table, on the real local stack
(the local Kinesis Video service + moto's DynamoDB and Kinesis): simulated cameras stream in
real time; workers are `python -m consumer run` processes, started, killed, paused and stopped
as an operator (or the OS) would. Assertions are on the lease table and on what is read back
from the data stream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from consumer.demo import read_all_records
from consumer.fleet.lease_table import LeaseTable
from consumer.pipeline.decode import StreamDecoder
from infra.local.limits import Limits
from infra.local.stack import LocalStack

from . import delivery_checks
from .conftest import REPO

# The slowest tests here are marked slow (left out of a plain `python -m pytest`; .ci/run runs them)
LEASE = 3.0  # seconds: renewals every second
SLACK = 1.5  # polling, process scheduling on a loaded 2-core machine
TABLE = "fleet-leases"


@pytest.fixture(scope="module")
def stack():
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as local:
        LeaseTable(local.client("dynamodb"), TABLE, "observer").ensure_table()
        yield local


class Fleet:
    """Cameras, a data stream and worker processes for one test."""

    def __init__(self, stack, tmp_path: Path, cameras: int):
        self.stack = stack
        self.tmp = tmp_path
        self.prefix = f"f{uuid.uuid4().hex[:6]}-"
        self.names = [f"{self.prefix}{i + 1}" for i in range(cameras)]
        self.data_stream = f"{self.prefix}records"
        stack.client("kinesis").create_stream(StreamName=self.data_stream, ShardCount=2)
        self.table = LeaseTable(stack.client("dynamodb"), TABLE, "observer")
        self.workers: list[subprocess.Popen] = []
        self.cameras = subprocess.Popen(
            [sys.executable, "-m", "producer_sim", "run", "--source", "testpattern:160x120@5",
             "--cameras", str(cameras), "--stream-prefix", self.prefix.rstrip("-"),
             "--endpoint-url", stack.endpoints["kinesisvideo"], "--create-stream",
             "--fragment-duration", "1", "--status-interval", "60"],
            stdout=(tmp_path / "cameras.log").open("w"), stderr=subprocess.STDOUT, cwd=REPO)
        self.config = tmp_path / "consumer.yaml"
        endpoints = {k: v for k, v in stack.endpoints.items() if k != "region"}
        self.config.write_text(yaml.safe_dump({
            "aws": {"region": stack.region, "endpoints": endpoints},
            "streams": {"prefix": self.prefix, "start": "EARLIEST", "relist_seconds": 1,
                        "defaults": {"sampling": {"mode": "fps", "fps": 2}}},
            "processing": {"processor": "none"},
            "outputs": {"kinesis": {"stream": self.data_stream, "linger_ms": 50}},
            "checkpoint": {"table": TABLE, "lease_seconds": LEASE,
                           "min_interval_seconds": 0.2},
            "logging": {"level": "INFO", "status_seconds": 2},
            "shutdown_seconds": 6,
        }))

    def start_worker(self) -> subprocess.Popen:
        index = len(self.workers)
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(self.config),
             "--stats-file", str(self.tmp / f"stats-{index}.json")],
            stdout=(self.tmp / f"worker-{index}.log").open("w"), stderr=subprocess.STDOUT,
            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.workers.append(process)
        return process

    def log(self, process: subprocess.Popen) -> str:
        return (self.tmp / f"worker-{self.workers.index(process)}.log").read_text()

    def stats(self, process: subprocess.Popen) -> dict:
        return json.loads((self.tmp / f"stats-{self.workers.index(process)}.json").read_text())

    def worker_id(self, process: subprocess.Popen) -> str:
        return f"{os.uname().nodename}-{process.pid}-"  # the prefix of its default id

    def leases(self) -> dict[str, object]:
        return {lease.stream_name: lease for lease in self.table.snapshot().leases
                if (lease.stream_name or "").startswith(self.prefix)}

    def owners(self) -> Counter:
        return Counter(lease.owner for lease in self.leases().values())

    def owner_of(self, process: subprocess.Popen) -> str | None:
        prefix = self.worker_id(process)
        return next((o for o in self.owners() if o and o.startswith(prefix)), None)

    def held_by(self, process: subprocess.Popen) -> int:
        prefix = self.worker_id(process)
        return sum(n for o, n in self.owners().items() if o and o.startswith(prefix))

    def close(self) -> None:
        for process in [*self.workers, self.cameras]:
            if process.poll() is None:
                process.kill()
            process.wait(10)

    def records(self) -> list[dict]:
        return read_all_records(self.stack.client("kinesis"), self.data_stream)


@pytest.fixture()
def fleet(stack, tmp_path):
    fleets = []

    def make(cameras: int) -> Fleet:
        fleets.append(Fleet(stack, tmp_path, cameras))
        return fleets[-1]
    yield make
    for each in fleets:
        each.close()


def control_arn(stack, name: str) -> str:
    return stack.client("kinesisvideo").describe_stream(StreamName=name)["StreamInfo"][
        "StreamARN"]


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds it took; AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def assert_delivered_once_and_complete(fleet: Fleet) -> None:
    checkpoints = {name: lease.checkpoint for name, lease in fleet.leases().items()}
    delivery_checks.assert_delivered_once_and_complete(
        fleet.records(), checkpoints, fleet.stack.client("kinesis-video-media"), fps=2)


@pytest.mark.slow
def test_workers_balance_take_over_a_killed_one_and_hand_over_on_sigterm(fleet):
    fleet = fleet(12)
    workers = [fleet.start_worker() for _ in range(3)]
    wait_for(lambda: len(fleet.leases()) == 12, 30, "leases for the 12 cameras")
    wait_for(lambda: all(fleet.owner_of(w) for w in workers), 30, "every worker holding one")
    took = wait_for(lambda: sorted(fleet.held_by(w) for w in workers) in (
        [4, 4, 4], [3, 4, 5], [4, 4, 4]) and None not in fleet.owners(), 3 * LEASE + SLACK,
        "4 +- 1 streams each")
    print(f"balanced {took:.1f} s after every worker held a lease")

    killed, survivors = workers[0], workers[1:]
    lost_ids = fleet.owner_of(killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(5)
    took = wait_for(lambda: lost_ids not in fleet.owners() and None not in fleet.owners()
                    and sum(fleet.held_by(w) for w in survivors) == 12, 2 * LEASE + SLACK,
                    "the killed worker's streams owned by the others")
    print(f"taken over {took:.1f} s after SIGKILL")
    wait_for(lambda: sorted(fleet.held_by(w) for w in survivors) == [6, 6], 4 * LEASE,
             "6 each after the take-over")

    stopped, last = survivors
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(15) == 0
    released = time.monotonic()
    took = wait_for(lambda: fleet.held_by(last) == 12, LEASE / 3 + SLACK,
                    "the stopped worker's streams taken within a renewal period")
    print(f"handed over {time.monotonic() - released:.1f} s after the SIGTERMed worker exited")
    assert "leases released" in fleet.log(stopped)

    fleet.cameras.send_signal(signal.SIGINT)
    fleet.cameras.wait(20)
    time.sleep(2 * LEASE)  # the last fragments through, checkpointed
    last.send_signal(signal.SIGTERM)
    assert last.wait(15) == 0
    assert_delivered_once_and_complete(fleet)


@pytest.mark.slow
def test_a_paused_worker_stops_the_streams_it_lost_and_nothing_repeats(fleet):
    fleet = fleet(4)
    paused, other = fleet.start_worker(), fleet.start_worker()
    wait_for(lambda: fleet.held_by(paused) == 2 and fleet.held_by(other) == 2, 30,
             "2 streams each")
    history: dict[str, list[int]] = {}

    def note_checkpoints() -> bool:
        for name, lease in fleet.leases().items():
            if lease.checkpoint is not None:
                history.setdefault(name, []).append(lease.checkpoint)
        return False
    paused.send_signal(signal.SIGSTOP)
    wait_for(lambda: note_checkpoints() or fleet.held_by(other) == 4, 2 * LEASE + SLACK,
             "the paused worker's streams taken after their expiry")
    time.sleep(1.0)
    paused.send_signal(signal.SIGCONT)
    # the resumed worker finds its leases gone, stops those sessions, then (a live worker with
    # none) steals its share back, one a cycle: a hand-off with no record twice either
    wait_for(lambda: note_checkpoints() or (fleet.held_by(paused) == 2
                                            and fleet.held_by(other) == 2), 6 * LEASE,
             "2 each again after the paused worker resumed")
    fleet.cameras.send_signal(signal.SIGINT)
    fleet.cameras.wait(20)
    time.sleep(2 * LEASE)
    for process in (paused, other):
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    note_checkpoints()
    for name, series in history.items():
        assert series == sorted(series), f"the checkpoint of {name} moved backwards"
    text = fleet.log(paused)
    assert "assuming it is lost" in text or "lease lost" in text
    stats = fleet.stats(paused)
    assert stats["leases"]["held"] == 0
    assert_delivered_once_and_complete(fleet)


@pytest.mark.slow
def test_a_stream_created_while_the_fleet_runs_is_taken_and_a_deleted_one_let_go(fleet):
    fleet = fleet(2)
    workers = [fleet.start_worker(), fleet.start_worker()]
    wait_for(lambda: len(fleet.leases()) == 2 and None not in fleet.owners(), 30,
             "both cameras owned")
    control = fleet.stack.client("kinesisvideo")
    control.create_stream(StreamName=f"{fleet.prefix}new", DataRetentionInHours=1)
    wait_for(lambda: fleet.leases().get(f"{fleet.prefix}new") is not None
             and fleet.leases()[f"{fleet.prefix}new"].owner is not None, 10,
             "the new stream's lease taken")
    gone = fleet.names[0]
    arn = control.describe_stream(StreamName=gone)["StreamInfo"]["StreamARN"]
    control.delete_stream(StreamARN=arn)
    wait_for(lambda: gone not in fleet.leases(), 15, "the deleted stream's lease removed")
    for process in workers:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    text = "".join(fleet.log(w) for w in workers)
    assert f"stream {gone}: deleted; let go and its lease removed" in text

    # deleted while no worker runs: the next worker removes the lease it finds orphaned
    orphan = fleet.names[1]
    control.delete_stream(StreamARN=control.describe_stream(StreamName=orphan)["StreamInfo"][
        "StreamARN"])
    assert fleet.leases()[orphan].owner is None  # released at SIGTERM
    later = fleet.start_worker()
    wait_for(lambda: orphan not in fleet.leases(), 15, "the orphaned lease removed")
    assert fleet.leases()[f"{fleet.prefix}new"].owner is not None
    later.send_signal(signal.SIGTERM)
    assert later.wait(15) == 0
    assert f"stream {orphan}: deleted; let go and its lease removed" in fleet.log(later)


def test_a_crashed_session_is_restarted_from_its_checkpoint_and_status_says_so(
        stack, tmp_path, monkeypatch):
    import threading

    from consumer.config import load_config
    from consumer.run import build_processors
    from consumer.streams.status import status_lines
    from consumer.streams.supervisor import StreamSupervisor
    fleet = Fleet(stack, tmp_path, 1)
    try:
        wait_for(lambda: any(s["StreamName"].startswith(fleet.prefix) for s in stack.client(
            "kinesisvideo").list_streams()["StreamInfoList"]), 30, "the camera's stream")
        config = load_config(fleet.config, environ={})
        original = StreamDecoder.frames
        calls = {"n": 0}

        def decode_failing_once(self, fragment):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected decoder fault")
            return original(self, fragment)
        monkeypatch.setattr(StreamDecoder, "frames", decode_failing_once)
        supervisor = StreamSupervisor(config, build_processors(config)).start()
        stop = threading.Event()
        runner = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
        runner.start()
        try:
            name = fleet.names[0]
            arn = control_arn(stack, name)
            took = wait_for(lambda: supervisor.restarts.get(arn) is not None
                            and supervisor.restarts[arn].count == 1, 30, "a restart")
            lines = status_lines(supervisor)
            assert any(f"stream {name}:" in line and "restarted 1x" in line
                       and "injected decoder fault" in line for line in lines), lines
            print(f"restart noticed after {took:.1f} s: {lines[0]}")
            before = fleet.leases()[name].checkpoint
            wait_for(lambda: (fleet.leases()[name].checkpoint or 0) > (before or 0), 20,
                     "checkpoints advancing after the restart")
            assert supervisor.stats()["streams"][name]["restarts"] == 1
            assert supervisor.session_named(name).state not in ("stopped", "lease lost")
        finally:
            stop.set()
            runner.join(5)
            supervisor.shutdown()
        fleet.cameras.send_signal(signal.SIGINT)
        fleet.cameras.wait(20)
        records = fleet.records()
        assert len({r["RecordId"] for r in records}) == len(records)
    finally:
        fleet.close()
