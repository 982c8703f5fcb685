"""The lease-scale part of `python -m bench.fleet`: W worker processes x S streams, one lease table
on the local stack (moto's DynamoDB), the real lease code (consumer.fleet.*), no video.

    result = run_leases(LeaseRun(workers=20, streams=400, lease_seconds=6.0), log=print)

1. starts the local stack, creates the lease table and an unowned lease for each of S fabricated
   stream ARNs (LeaseCoordinator.register, as a consumer does for streams it discovers);
2. starts W `python -m bench.fleet_worker` processes, waits until all have imported and made
   their client, then tells them all to go at once (time 0);
3. follows each worker's reports (JSON lines: the streams its keeper holds and may still emit
   for, and its DynamoDB calls by operation) every `TICK` seconds and measures:
   (a) convergence: time until every stream is held by exactly one live worker and each live
       worker holds within ceil(S/W) +- 1;
   steady state: DynamoDB calls by operation over `steady_seconds` after convergence (plus one
       lease period to settle), scaled to calls per stream-hour and per second;
   (b) SIGKILL of the worker holding the most streams: time until every one of its streams is
       held by exactly one survivor (takeover), and until the survivors are balanced again
       (rebalance);
   throughout: streams held by two workers at once (as the workers' keepers report them; an
   old owner learns of a steal at its next renewal, so short overlaps after steals are the
   design, and the consumer's handoff wait covers them);
4. reads the items back to measure their DynamoDB size (for the cost arithmetic).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.procstat import machine_cpu_seconds, read_usage

REPO = Path(__file__).resolve().parents[1]
TICK = 0.2
ACCOUNT = "123456789012"
ARN_TIME = 1700000000000


@dataclass(frozen=True)
class LeaseRun:
    workers: int = 20
    streams: int = 400
    lease_seconds: float = 6.0
    steady_seconds: float = 30.0
    converge_timeout: float = 240.0
    takeover_timeout: float = 120.0


def stream_name(number: int) -> str:
    return f"bench-cam-{number:04d}"


def stream_arn(number: int) -> str:
    return (f"arn:aws:kinesisvideo:us-east-1:{ACCOUNT}:stream/{stream_name(number)}/"
            f"{ARN_TIME}")


@dataclass
class Worker:
    worker_id: str
    process: subprocess.Popen
    ready: threading.Event = field(default_factory=threading.Event)
    latest: dict | None = None
    reports: int = 0
    alive: bool = True
    stderr_tail: list[str] = field(default_factory=list)

    def read(self) -> None:
        for line in self.process.stdout:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("ready"):
                self.ready.set()
            else:
                self.latest = obj
                self.reports += 1

    def read_errors(self) -> None:
        for line in self.process.stderr:
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-20:]


def item_bytes(item: dict) -> int:
    """DynamoDB's size of an item: attribute name bytes + value bytes (S: UTF-8 length;
    N: about 1 byte per 2 significant digits + 1), as AWS documents it."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        if "S" in value:
            size += len(value["S"].encode())
        elif "N" in value:
            digits = value["N"].lstrip("-").replace(".", "").strip("0") or "0"
            size += math.ceil(len(digits) / 2) + 1
        else:
            size += len(json.dumps(value))
    return size


class Fleet:
    """The worker processes and the view of who holds what."""

    def __init__(self, endpoint: str, table: str, lease_seconds: float, count: int):
        self.workers: list[Worker] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVSA_")}
        for index in range(count):
            worker_id = f"w{index:03d}"
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.fleet_worker", "--endpoint", endpoint,
                 "--table", table, "--worker-id", worker_id,
                 "--lease-seconds", str(lease_seconds)],
                cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, bufsize=1)
            worker = Worker(worker_id, process)
            threading.Thread(target=worker.read, daemon=True).start()
            threading.Thread(target=worker.read_errors, daemon=True).start()
            self.workers.append(worker)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            if not worker.ready.wait(max(0.1, deadline - time.monotonic())):
                raise RuntimeError(f"worker {worker.worker_id} not ready in {timeout:.0f} s: "
                                   + " | ".join(worker.stderr_tail[-5:]))

    def go(self) -> None:
        for worker in self.workers:
            worker.process.stdin.write("go\n")
            worker.process.stdin.flush()

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.alive]

    def holders(self) -> dict[int, list[str]]:
        found: dict[int, list[str]] = {}
        for worker in self.live():
            for number in (worker.latest or {}).get("held", []):
                found.setdefault(number, []).append(worker.worker_id)
        return found

    def counts(self) -> dict[str, int]:
        return {w.worker_id: len((w.latest or {}).get("held", [])) for w in self.live()}

    def calls(self) -> dict[str, tuple[float, dict[str, int]]]:
        return {w.worker_id: (w.latest["t"], dict(w.latest["calls"]))
                for w in self.live() if w.latest}

    def totals(self, key: str) -> int:
        return sum((w.latest or {}).get(key, 0) for w in self.workers)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.live()]

    def kill(self, worker: Worker) -> None:
        worker.alive = False
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(10)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        for worker in self.workers:
            try:
                worker.process.wait(10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(5)


def balanced(fleet: Fleet, streams: int) -> tuple[bool, str]:
    """Every stream held by exactly one live worker, each within ceil(S/W) +- 1."""
    holders = fleet.holders()
    missing = streams - len(holders)
    doubles = sum(1 for owners in holders.values() if len(owners) > 1)
    counts = fleet.counts()
    target = math.ceil(streams / max(1, len(counts)))
    outside = [w for w, n in counts.items() if abs(n - target) > 1]
    ok = missing == 0 and doubles == 0 and not outside
    return ok, (f"unheld {missing}, double {doubles}, outside {target}+-1: {len(outside)} "
                f"(min {min(counts.values(), default=0)}, max {max(counts.values(), default=0)})")


class Overlaps:
    """Streams held by two live workers at once, integrated over time, per phase."""

    def __init__(self):
        self.phases: dict[str, dict] = {}

    def sample(self, phase: str, fleet: Fleet, dt: float) -> None:
        doubles = sum(1 for owners in fleet.holders().values() if len(owners) > 1)
        entry = self.phases.setdefault(phase, {"max_streams": 0, "stream_seconds": 0.0,
                                               "samples_with_overlap": 0, "samples": 0})
        entry["samples"] += 1
        entry["max_streams"] = max(entry["max_streams"], doubles)
        entry["stream_seconds"] += doubles * dt
        entry["samples_with_overlap"] += doubles > 0


def _wait_for(condition, timeout: float, phase: str, fleet: Fleet, overlaps: Overlaps,
              log, every: float = 10.0) -> float | None:
    """Seconds until condition() is true (sampled every TICK), None on timeout."""
    began = time.monotonic()
    last_log = began
    while True:
        ok, detail = condition()
        now = time.monotonic()
        if ok:
            return now - began
        if now - began > timeout:
            log(f"  {phase}: not reached in {timeout:.0f} s ({detail})")
            return None
        if now - last_log >= every:
            log(f"  {phase}: {now - began:.0f} s, {detail}")
            last_log = now
        time.sleep(TICK)
        overlaps.sample(phase, fleet, TICK)


def _rates(before: dict, after: dict) -> tuple[dict[str, float], float]:
    """Summed calls per second by operation between two fleet.calls() readings; the window."""
    rates: Counter[str] = Counter()
    windows = []
    for worker_id, (t1, calls1) in after.items():
        if worker_id not in before:
            continue
        t0, calls0 = before[worker_id]
        if t1 <= t0:
            continue
        windows.append(t1 - t0)
        for op, n in calls1.items():
            rates[op] += (n - calls0.get(op, 0)) / (t1 - t0)
    return dict(rates), (sum(windows) / len(windows) if windows else 0.0)


def _measure_items(stack, table: str) -> dict:
    client = stack.client("dynamodb")
    leases, workers, kwargs = [], [], {"TableName": table}
    while True:
        page = client.scan(**kwargs)
        for item in page.get("Items", []):
            (workers if item["leaseKey"]["S"].startswith("worker/") else leases).append(
                item_bytes(item))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return {"lease_item_bytes_mean": sum(leases) / len(leases) if leases else None,
            "lease_item_bytes_max": max(leases, default=None),
            "worker_item_bytes_mean": sum(workers) / len(workers) if workers else None,
            "lease_items": len(leases), "worker_items": len(workers),
            "note": "measured at the end of the run, leases never checkpointed (no video); a "
                    "checkpointed lease adds checkpoint (~47 digits), checkpointSortKey (64), "
                    "checkpointProducerTime and checkpointAt: about +190 bytes"}


def run_leases(run: LeaseRun, log=print) -> dict:
    """The lease-scale measurement (module doc); a dict of figures for results.json."""
    import logging

    from consumer.fleet.coordinator import LeaseCoordinator
    from consumer.fleet.keeper import LeaseKeeper
    from consumer.fleet.lease_table import LeaseTable
    from infra.local.stack import LocalStack

    began = time.monotonic()
    result: dict = {"parameters": asdict(run), "converged": False,
                    "convergence_seconds": None, "takeover_seconds": None,
                    "rebalance_seconds": None, "phases_seconds": {}}
    table_name = "bench-fleet-leases"
    with LocalStack() as stack:
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        client = stack.client("dynamodb")
        harness = LeaseTable(client, table_name, "bench-harness")
        harness.ensure_table()
        keeper = LeaseKeeper(harness, run.lease_seconds)  # never started: register() only
        t = time.monotonic()
        LeaseCoordinator(harness, keeper, run.lease_seconds).register(
            {stream_name(n): stream_arn(n) for n in range(1, run.streams + 1)})
        result["phases_seconds"]["register"] = time.monotonic() - t
        log(f"  {run.streams} leases created in {time.monotonic() - t:.1f} s")

        t = time.monotonic()
        fleet = Fleet(stack.endpoints["dynamodb"], table_name, run.lease_seconds, run.workers)
        overlaps = Overlaps()
        try:
            fleet.wait_ready(60 + 3 * run.workers)
            result["phases_seconds"]["workers_ready"] = time.monotonic() - t
            log(f"  {run.workers} worker processes ready in {time.monotonic() - t:.1f} s")
            fleet.go()
            cpu0 = read_usage(fleet.pids()).cpu_seconds
            machine0, wall0 = machine_cpu_seconds(), time.monotonic()
            harness0 = read_usage([os.getpid()]).cpu_seconds

            # (a) convergence
            converged = _wait_for(lambda: balanced(fleet, run.streams), run.converge_timeout,
                                  "start-up", fleet, overlaps, log)
            result["convergence_seconds"] = converged
            result["converged"] = converged is not None
            result["counts_at_convergence"] = sorted(fleet.counts().values())
            wall = time.monotonic() - wall0
            result["startup_cores"] = {
                "workers": (read_usage(fleet.pids()).cpu_seconds - cpu0) / wall,
                "harness_and_local_stack": (read_usage([os.getpid()]).cpu_seconds - harness0)
                / wall, "machine": (machine_cpu_seconds() - machine0) / wall}
            log(f"  (a) balanced after {converged:.1f} s" if converged is not None
                else "  (a) did NOT converge")
            if converged is None:
                result["not_converged_state"] = balanced(fleet, run.streams)[1]
                return result

            # steady state
            settle_until = time.monotonic() + run.lease_seconds
            while time.monotonic() < settle_until:
                time.sleep(TICK)
                overlaps.sample("steady", fleet, TICK)
            before = fleet.calls()
            moves0 = fleet.totals("taken") + fleet.totals("stolen")
            cpu_a, machine_a, wall_a = (read_usage(fleet.pids()).cpu_seconds,
                                        machine_cpu_seconds(), time.monotonic())
            harness_a = read_usage([os.getpid()]).cpu_seconds
            steady_until = time.monotonic() + run.steady_seconds
            while time.monotonic() < steady_until:
                time.sleep(TICK)
                overlaps.sample("steady", fleet, TICK)
            after = fleet.calls()
            wall_b = time.monotonic()
            cpu_b, machine_b = read_usage(fleet.pids()).cpu_seconds, machine_cpu_seconds()
            harness_b = read_usage([os.getpid()]).cpu_seconds
            rates, window = _rates(before, after)
            total = sum(rates.values())
            result["steady"] = {
                "window_seconds": window,
                "calls_per_second": dict(sorted(rates.items())) | {"total": total},
                "calls_per_stream_hour": {op: r * 3600 / run.streams
                                          for op, r in sorted(rates.items())}
                | {"total": total * 3600 / run.streams},
                "lease_moves_in_window": fleet.totals("taken") + fleet.totals("stolen") - moves0,
                "still_balanced": balanced(fleet, run.streams)[0],
                "cores": {"workers": (cpu_b - cpu_a) / (wall_b - wall_a),
                          "harness_and_local_stack": (harness_b - harness_a) / (wall_b - wall_a),
                          "machine": (machine_b - machine_a) / (wall_b - wall_a)},
            }
            result["calls_per_stream_hour"] = result["steady"]["calls_per_stream_hour"]
            log(f"  steady window {window:.1f} s: {total:.1f} DynamoDB calls/s "
                f"({', '.join(f'{k} {v:.1f}' for k, v in sorted(rates.items()))}), "
                f"workers {result['steady']['cores']['workers']:.2f} cores, machine "
                f"{result['steady']['cores']['machine']:.2f} cores")

            # (b) kill the most loaded worker
            counts = fleet.counts()
            victim = next(w for w in fleet.live() if w.worker_id == max(
                counts, key=lambda k: (counts[k], k)))
            orphans = set(victim.latest["held"])
            fleet.kill(victim)
            result["killed"] = {"worker": victim.worker_id, "streams": len(orphans)}
            log(f"  (b) SIGKILL {victim.worker_id} holding {len(orphans)} streams")
            t_kill = time.monotonic()

            def taken_over() -> tuple[bool, str]:
                holders = fleet.holders()
                single = sum(1 for n in orphans if len(holders.get(n, [])) == 1)
                return single == len(orphans), f"{single}/{len(orphans)} taken over"

            takeover = _wait_for(taken_over, run.takeover_timeout, "takeover", fleet,
                                 overlaps, log)
            result["takeover_seconds"] = takeover
            if takeover is not None:
                log(f"  (b) its streams held by survivors after {takeover:.1f} s")
                left = run.takeover_timeout - (time.monotonic() - t_kill)
                rebalanced = _wait_for(lambda: balanced(fleet, run.streams), max(left, 10.0),
                                       "rebalance", fleet, overlaps, log)
                result["rebalance_seconds"] = (None if rebalanced is None
                                               else time.monotonic() - t_kill)
                if rebalanced is not None:
                    log(f"  (b) balanced again {result['rebalance_seconds']:.1f} s after "
                        "the kill")
            result["counts_at_end"] = sorted(fleet.counts().values())
            for _ in range(int(2 / TICK)):
                time.sleep(TICK)
                overlaps.sample("after", fleet, TICK)
            cpu1, machine1, wall1 = (read_usage(fleet.pids()).cpu_seconds,
                                     machine_cpu_seconds(), time.monotonic())
            result["cores_whole_run"] = {"workers_alive_at_end": (cpu1 - cpu0) / (wall1 - wall0),
                                         "machine": (machine1 - machine0) / (wall1 - wall0)}
            result["lease_moves"] = {"taken": fleet.totals("taken"),
                                     "stolen": fleet.totals("stolen"),
                                     "lost": fleet.totals("lost")}
        finally:
            result["double_held"] = overlaps.phases
            result["worker_errors"] = {w.worker_id: w.stderr_tail[-3:] for w in fleet.workers
                                       if w.stderr_tail}
            fleet.stop()
            result["wall_seconds"] = time.monotonic() - began  # the early return passes here
        result["items"] = _measure_items(stack, table_name)
    return result
