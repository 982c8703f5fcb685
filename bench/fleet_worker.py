"""One simulated fleet worker for `python -m bench.fleet --part leases`: the real lease code, no
video.

    python -m bench.fleet_worker --endpoint URL --table T --worker-id w03 --lease-seconds 6

Runs `LeaseTable` + `LeaseKeeper` + `LeaseCoordinator` exactly as a consumer process does, but
starts no session for a lease won: it only holds it (the keeper renews it every lease_seconds/3).

Protocol (JSON lines on stdout, one object each):
  {"ready": true, "pid": ...}           imports done, client made; then it waits for a line on
                                        stdin ("go") before starting the keeper and cycling
  {"t": wall time, "held": [...], "calls": {...}, "cycles": n, "taken": n, "stolen": n,
   "renewals": n, "lost": n, "target": n, "live": n}
                                        after every cycle and every `--report-every` seconds;
                                        "held" are the stream numbers (the digits of
                                        bench-cam-NNNN) the keeper holds and may still emit for;
                                        "calls" are cumulative DynamoDB calls by operation
A SIGTERM stops it (the keeper stops; the leases are left to expire, as after a crash).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import sys
import threading
import time
from collections import Counter

_NUMBER = re.compile(r"bench-cam-(\d+)/")


def stream_number(arn: str) -> int:
    found = _NUMBER.search(arn)
    return int(found.group(1)) if found else -1


class CallCounter:
    """DynamoDB calls by operation, counted with botocore's event system (one per API call,
    retries of the same call not counted again)."""

    def __init__(self, client):
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        client.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, model, **_):
        with self._lock:
            self.counts[model.name] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoint", required=True, help="DynamoDB endpoint URL")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--table", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--lease-seconds", type=float, default=6.0)
    parser.add_argument("--report-every", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr,
                        format=f"{args.worker_id} %(levelname)s %(name)s: %(message)s")

    import boto3
    from botocore.config import Config

    from consumer.fleet.coordinator import LeaseCoordinator
    from consumer.fleet.keeper import LeaseKeeper
    from consumer.fleet.lease_table import LeaseTable

    client = boto3.client("dynamodb", endpoint_url=args.endpoint, region_name=args.region,
                          aws_access_key_id="local", aws_secret_access_key="local",
                          config=Config(retries={"max_attempts": 3, "mode": "standard"},
                                        max_pool_connections=4))
    calls = CallCounter(client)
    table = LeaseTable(client, args.table, args.worker_id)
    keeper = LeaseKeeper(table, args.lease_seconds)
    coordinator = LeaseCoordinator(table, keeper, args.lease_seconds)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    out_lock = threading.Lock()
    lost_total = 0

    def emit(obj: dict) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
            sys.stdout.flush()

    def report() -> None:
        emit({"t": time.time(), "held": sorted(stream_number(a) for a in keeper.held()
                                               if keeper.holds(a)),
              "calls": calls.snapshot(), "cycles": coordinator.cycles,
              "taken": coordinator.taken, "stolen": coordinator.stolen,
              "renewals": keeper.renewals, "lost": lost_total,
              "target": coordinator.last_target, "live": coordinator.live_workers})

    emit({"ready": True, "pid": __import__("os").getpid()})
    if not sys.stdin.readline():  # the harness went away
        return 1
    keeper.start()
    every = keeper.renew_every  # as the supervisor runs its cycle
    next_cycle = time.monotonic()
    next_report = time.monotonic()
    while not stopping.is_set():
        now = time.monotonic()
        if now >= next_cycle:
            try:
                coordinator.cycle()
            except Exception as err:  # noqa: BLE001 - a failed cycle is retried next period
                logging.getLogger("bench.fleet_worker").error("cycle failed: %s", err)
            for arn in keeper.take_lost():
                keeper.drop(arn)
                lost_total += 1
            next_cycle += every
            if next_cycle < time.monotonic():  # fell behind: do not burst
                next_cycle = time.monotonic() + every
            report()
            next_report = time.monotonic() + args.report_every
        elif now >= next_report:
            for arn in keeper.take_lost():
                keeper.drop(arn)
                lost_total += 1
            report()
            next_report = now + args.report_every
        stopping.wait(max(0.01, min(next_cycle, next_report) - time.monotonic()))
    keeper.stop()
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
