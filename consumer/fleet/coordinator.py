"""One worker's lease loop: make leases for new streams, take free and expired ones, balance by
stealing, remove the leases of deleted streams and the items of dead workers.

`cycle()` runs every `lease_seconds / 3`, so a released lease is taken within one renewal
period; the supervisor starts a session for each lease won and stops the sessions whose leases
the keeper reports lost. A stolen lease's previous owner may still be writing for up to one
renewal period, so a session on a stolen lease waits `handoff_seconds` before it reads back what
was delivered (`Won.handoff_seconds`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from consumer.fleet.balance import CounterWatch, plan
from consumer.fleet.keeper import LeaseKeeper
from consumer.fleet.lease_table import Lease, LeaseTable

log = logging.getLogger(__name__)


class DuplicateWorkerId(Exception):
    """Another live process renews a worker item with this worker's id."""


@dataclass(frozen=True)
class Won:
    lease: Lease
    previous_owner: str | None
    handoff_seconds: float  # wait this long before reading back (the old owner may still write)


class LeaseCoordinator:
    def __init__(self, table: LeaseTable, keeper: LeaseKeeper, lease_seconds: float,
                 max_streams: int | None = None, clock=time.monotonic):
        self.table = table
        self.keeper = keeper
        self.lease_seconds = lease_seconds
        self.max_streams = max_streams
        self.clock = clock
        self.watch = CounterWatch(lease_seconds)
        self.cycles = 0
        self.taken = 0
        self.stolen = 0
        self.last_target = 0
        self.live_workers = 1
        self._known: set[str] = set()  # stream ARNs whose lease exists
        self._orphans: dict[str, str] = {}  # ARN -> name: leases nobody live holds, not listed

    @property
    def worker_id(self) -> str:
        return self.table.worker_id

    def check_unique_id(self) -> None:
        """Refuse to start when a live process already uses this worker id: its item's counter
        moves within one renewal period. A stale item (a restart with a fixed id) is fine."""
        before = self.table.worker(self.worker_id)
        if before is None:
            return
        time.sleep(self.lease_seconds / 3 + 0.5)
        after = self.table.worker(self.worker_id)
        if after is not None and after.counter != before.counter:
            raise DuplicateWorkerId(
                f"worker id {self.worker_id!r} is in use by a live process (host "
                f"{after.host}, pid {after.pid}); give each process its own "
                "checkpoint.worker_id, or leave it unset for a unique one")

    def register(self, streams: dict[str, str]) -> None:
        """Make an unowned lease for every stream (name -> ARN) that has none yet."""
        for name, arn in streams.items():
            if arn not in self._known:
                if self.table.create(arn, name):
                    log.info("stream %s: new lease", name)
                self._known.add(arn)

    def orphans(self) -> dict[str, str]:
        """Leases (ARN -> stream name) that no live worker holds, of streams the last listing
        did not find: they may have been deleted while nobody held them (the caller checks)."""
        return dict(self._orphans)

    def forget(self, stream_arn: str) -> None:
        """The stream is gone: remove its lease (whoever held it)."""
        self.keeper.drop(stream_arn)
        self._known.discard(stream_arn)
        self._orphans.pop(stream_arn, None)
        self.table.delete(stream_arn)

    def cycle(self, eligible: set[str] | None = None) -> list[Won]:
        """One round of taking and balancing; the leases won."""
        self.cycles += 1
        snapshot = self.table.snapshot()
        now = self.clock()
        self._known |= {lease.stream_arn for lease in snapshot.leases}
        decided = plan(snapshot, self.worker_id, self.keeper.held(), self.watch, now,
                       self.max_streams, eligible)
        self.last_target, self.live_workers = decided.target, decided.live_workers
        if eligible is not None:
            self._orphans = {lease.stream_arn: lease.stream_name or lease.stream_arn
                             for lease in snapshot.leases
                             if lease.stream_arn not in eligible and (
                                 lease.owner is None
                                 or self.watch.expired(lease.stream_arn, now))}
        for worker in snapshot.workers:
            if worker.worker_id != self.worker_id \
                    and self.watch.expired("worker/" + worker.worker_id, now):
                self.table.forget_worker(worker.worker_id)  # dead: its leases expire too
        won = []
        for lease in decided.take:
            got = self._take(lease)
            if got is not None:
                self.taken += 1
                won.append(Won(got, lease.owner, 0.0))
        if decided.steal is not None:
            got = self._take(decided.steal)
            if got is not None:
                self.stolen += 1
                log.info("stream %s: took the lease from %s to balance (target %d each)",
                         got.stream_name, decided.steal.owner, decided.target)
                won.append(Won(got, decided.steal.owner, self.keeper.renew_every + 1.0))
        return won

    def _take(self, lease: Lease) -> Lease | None:
        sent = self.clock()
        got = self.table.take(lease)
        if got is not None:
            self.keeper.adopt(got, sent)
        return got
