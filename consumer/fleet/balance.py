"""Which leases a worker takes, decided from a snapshot of the lease table: KCL's lease taker.

Expiry is observed, not stored: a lease (or worker item) is expired when this observer has seen
its counter unchanged for `lease_seconds` of its own monotonic clock, so no clocks need to agree.
A lease with no owner is free at once.

Each cycle a worker:
1. counts the live workers (its own, those whose worker item moves, and owners of leases that
   have not expired) and sets its target: ceil(leases / live workers), capped by `max_streams`;
2. takes free and expired leases (its own from before first), up to the target, in a shuffled
   order so workers starting together do not all race for the same items;
3. when there was none to take and it is below target, steals one lease from the most loaded
   worker, if that worker holds more than the target (or exactly the target while this one
   lacks two or more). At most one steal a cycle keeps the fleet from oscillating.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

from consumer.fleet.lease_table import Lease, TableSnapshot


@dataclass
class _Seen:
    counter: int
    since: float  # monotonic time the counter was first seen at this value


@dataclass
class CounterWatch:
    """When each key's counter last changed, as seen by this observer."""

    lease_seconds: float
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def observe(self, key: str, counter: int, now: float) -> None:
        seen = self._seen.get(key)
        if seen is None or seen.counter != counter:
            self._seen[key] = _Seen(counter, now)

    def expired(self, key: str, now: float) -> bool:
        seen = self._seen.get(key)
        return seen is not None and now - seen.since >= self.lease_seconds

    def forget_except(self, keys: set[str]) -> None:
        for key in list(self._seen):
            if key not in keys:
                del self._seen[key]


@dataclass(frozen=True)
class Plan:
    take: list[Lease]  # free or expired, in the order to try
    steal: Lease | None  # from the most loaded worker
    target: int
    live_workers: int


def plan(snapshot: TableSnapshot, me: str, held: set[str], watch: CounterWatch, now: float,
         max_streams: int | None = None, eligible: set[str] | None = None,
         rng: random.Random | None = None) -> Plan:
    """What to take this cycle. `held`: the stream ARNs this worker runs now; `eligible`: the
    streams this worker's configuration selects (None: every lease in the table)."""
    rng = rng or random
    for lease in snapshot.leases:
        watch.observe(lease.stream_arn, lease.counter, now)
    for worker in snapshot.workers:
        watch.observe("worker/" + worker.worker_id, worker.counter, now)
    watch.forget_except({lease.stream_arn for lease in snapshot.leases}
                        | {"worker/" + w.worker_id for w in snapshot.workers})
    leases = [lease for lease in snapshot.leases
              if eligible is None or lease.stream_arn in eligible]

    def free(lease: Lease) -> bool:
        if lease.stream_arn in held:
            return False
        return (lease.owner is None or lease.owner == me
                or watch.expired(lease.stream_arn, now))

    live = {me} | {w.worker_id for w in snapshot.workers
                   if not watch.expired("worker/" + w.worker_id, now)}
    load = Counter(lease.owner for lease in leases
                   if lease.owner is not None and not free(lease) and lease.stream_arn not in held)
    live |= set(load)
    target = math.ceil(len(leases) / len(live)) if leases else 0
    if max_streams is not None:
        target = min(target, max_streams)
    room = target - len(held)
    candidates = [lease for lease in leases if free(lease)]
    rng.shuffle(candidates)
    candidates.sort(key=lambda lease: lease.owner != me)  # our own from before first (stable)
    take = candidates[:max(0, room)]
    steal = None
    if not candidates and room > 0 and load:
        victim, most = max(load.items(), key=lambda item: (item[1], item[0]))
        if victim != me and (most > target or (most == target and room >= 2)):
            theirs = [lease for lease in leases if lease.owner == victim and not free(lease)]
            steal = rng.choice(theirs) if theirs else None
    return Plan(take, steal, target, len(live))
