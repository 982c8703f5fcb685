"""The lease table, keeper and balancing (consumer.fleet) against moto's DynamoDB server."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import datetime

import pytest

from consumer.fleet.balance import CounterWatch, plan
from consumer.fleet.coordinator import DuplicateWorkerId, LeaseCoordinator
from consumer.fleet.keeper import LeaseKeeper
from consumer.fleet.lease_table import (
    Lease,
    LeaseLost,
    LeaseTable,
    TableSnapshot,
    WorkerItem,
    sort_key,
)
from infra.local.stack import LocalStack

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-{}/1700000000000"
# 47 digits; SMALLER is a 46-digit number whose decimal string sorts after BIG's.
BIG = 91343852333181432392682062607743920146264772742
SMALLER = 95 * 10 ** 44
assert SMALLER < BIG and str(SMALLER) > str(BIG)


@pytest.fixture(scope="module")
def stack():
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def dynamodb(stack):
    return stack.client("dynamodb")


@pytest.fixture()
def table(dynamodb):
    name = f"leases-{uuid.uuid4().hex[:8]}"
    LeaseTable(dynamodb, name, "setup").ensure_table()
    return name


@pytest.fixture()
def arn():
    return ARN.format(uuid.uuid4().hex[:8])


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ensure_table_creates_an_on_demand_lease_table_once_and_refuses_another_shape(dynamodb):
    name = f"leases-{uuid.uuid4().hex[:8]}"
    LeaseTable(dynamodb, name, "w1").ensure_table()
    LeaseTable(dynamodb, name, "w1").ensure_table()  # idempotent
    described = dynamodb.describe_table(TableName=name)["Table"]
    assert described["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert described["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    other = f"other-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=other, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    with pytest.raises(ValueError, match="leaseKey"):
        LeaseTable(dynamodb, other, "w1").ensure_table()


def test_take_renew_checkpoint_release_keep_the_kcl_shape(dynamodb, table, arn):
    a = LeaseTable(dynamodb, table, "worker-a")
    assert a.create(arn, "cam") and not a.create(arn, "cam")
    seen = a.lease(arn)
    assert (seen.owner, seen.counter, seen.checkpoint, seen.stream_name) == (None, 0, None, "cam")
    taken = a.take(seen)
    assert (taken.owner, taken.counter) == ("worker-a", 1)
    counter = a.renew(arn, taken.counter)
    counter = a.checkpoint(arn, counter, BIG, producer_time=1_700_000_123.25)
    item = dynamodb.get_item(TableName=table, Key={"leaseKey": {"S": arn}},
                             ConsistentRead=True)["Item"]
    assert item["checkpoint"] == {"S": str(BIG)}
    assert item["checkpointSortKey"] == {"S": sort_key(BIG)} and len(sort_key(BIG)) == 64
    assert item["leaseOwner"] == {"S": "worker-a"} and item["leaseCounter"] == {"N": "3"}
    assert float(item["checkpointProducerTime"]["N"]) == 1_700_000_123.25
    assert datetime.fromisoformat(item["checkpointAt"]["S"]).tzinfo is not None
    a.release(arn, counter)
    released = a.lease(arn)
    assert (released.owner, released.counter, released.checkpoint) == (None, 4, BIG)


def test_checkpoints_only_advance_compared_as_integers(dynamodb, table, arn):
    a = LeaseTable(dynamodb, table, "w1")
    a.create(arn, "cam")
    counter = a.take(a.lease(arn)).counter
    counter = a.checkpoint(arn, counter, BIG)
    # As strings "95..." > "91..." would win; as integers it is older: not written (a renewal)
    counter = a.checkpoint(arn, counter, SMALLER)
    counter = a.checkpoint(arn, counter, BIG)  # the same again: not a move
    assert a.lease(arn).checkpoint == BIG
    counter = a.checkpoint(arn, counter, BIG + 1)
    lease = a.lease(arn)
    assert (lease.checkpoint, lease.counter) == (BIG + 1, counter)


def test_a_stolen_lease_fences_every_write_of_its_old_owner(dynamodb, table, arn):
    a = LeaseTable(dynamodb, table, "worker-a")
    b = LeaseTable(dynamodb, table, "worker-b")
    a.create(arn, "cam")
    counter = a.take(a.lease(arn)).counter
    counter = a.checkpoint(arn, counter, SMALLER)
    stolen = b.take(b.lease(arn))
    assert (stolen.owner, stolen.owner_switches, stolen.checkpoint) == ("worker-b", 1, SMALLER)
    for write in (lambda: a.renew(arn, counter), lambda: a.checkpoint(arn, counter, BIG),
                  lambda: a.release(arn, counter)):
        with pytest.raises(LeaseLost, match="worker-b"):
            write()
    assert b.take(dataclasses.replace(stolen, counter=0)) is None  # a stale view: refused
    assert b.lease(arn).checkpoint == SMALLER and b.lease(arn).owner == "worker-b"


def test_the_keeper_renews_checkpoints_and_fences_on_its_own_clock(dynamodb, table, arn):
    clock = Clock()
    lease_table = LeaseTable(dynamodb, table, "worker-a")
    keeper = LeaseKeeper(lease_table, lease_seconds=3.0, min_interval=1.0, clock=clock)
    lease_table.create(arn, "cam")
    keeper.adopt(lease_table.take(lease_table.lease(arn)), clock())
    assert keeper.holds(arn)
    keeper.checkpoint(arn, BIG, 1_700_000_000.0)
    keeper.tick()
    assert lease_table.lease(arn).checkpoint == BIG and keeper.writes == 1
    clock.now += 1.1  # a third of the lease: renewed
    keeper.tick()
    assert keeper.renewals == 1 and lease_table.lease(arn).counter == 3
    clock.now += 3.5  # a pause longer than the lease (no tick ran): fenced at once
    assert not keeper.holds(arn)
    assert keeper.take_lost() == [arn] and keeper.take_lost() == []
    keeper.checkpoint(arn, BIG + 1)
    keeper.flush()
    assert lease_table.lease(arn).checkpoint == BIG  # never written again


def test_the_keeper_times_each_checkpoint_until_a_write_covers_it(dynamodb, table, arn):
    from consumer.pipeline.stage_times import CHECKPOINT_WAIT, StageTimes

    clock, times = Clock(), StageTimes()
    lease_table = LeaseTable(dynamodb, table, "worker-a")
    keeper = LeaseKeeper(lease_table, lease_seconds=3.0, min_interval=1.0, clock=clock,
                         stage_times=times)
    lease_table.create(arn, "cam")
    keeper.adopt(lease_table.take(lease_table.lease(arn)), clock())
    keeper.checkpoint(arn, BIG)
    keeper.tick()  # written at once: waited 0 s
    keeper.checkpoint(arn, BIG + 1)
    clock.now += 0.4
    keeper.checkpoint(arn, BIG + 2)
    clock.now += 0.3
    keeper.tick()  # within min_interval of the last write: not yet
    clock.now += 0.4
    keeper.tick()  # one write covers both: they waited 1.1 s and 0.7 s
    assert lease_table.lease(arn).checkpoint == BIG + 2 and keeper.writes == 2
    figures = times.snapshot()[CHECKPOINT_WAIT]
    assert figures["count"] == 3 and figures["max"] == pytest.approx(1.1)


def test_by_default_checkpoints_ride_on_renewals_and_cost_no_extra_write(dynamodb, table, arn):
    """Fragments completing every 0.25 s for 2.75 s of a 3 s lease: one write per renewal period
    (each carrying the latest checkpoint), not one per fragment; flush() writes what is left."""
    clock = Clock()
    lease_table = LeaseTable(dynamodb, table, "worker-a")
    keeper = LeaseKeeper(lease_table, lease_seconds=3.0, clock=clock)
    lease_table.create(arn, "cam")
    keeper.adopt(lease_table.take(lease_table.lease(arn)), clock())
    for step in range(11):
        clock.now += 0.25
        keeper.checkpoint(arn, BIG + step)
        keeper.tick()
    assert keeper.writes + keeper.renewals == 2  # at 1.0 s and 2.0 s: a renewal each
    assert lease_table.lease(arn).checkpoint == BIG + 7  # the latest at the last renewal
    keeper.flush()
    assert lease_table.lease(arn).checkpoint == BIG + 10 and keeper.writes == 3


def test_the_keeper_reports_a_lease_taken_by_another_worker(dynamodb, table, arn):
    clock = Clock()
    a = LeaseTable(dynamodb, table, "worker-a")
    keeper = LeaseKeeper(a, lease_seconds=3.0, clock=clock)
    a.create(arn, "cam")
    keeper.adopt(a.take(a.lease(arn)), clock())
    b = LeaseTable(dynamodb, table, "worker-b")
    b.take(b.lease(arn))
    clock.now += 1.1
    keeper.tick()  # the renewal fails its condition
    assert keeper.take_lost() == [arn] and not keeper.holds(arn)
    assert not keeper.release(arn)  # nothing to release: it is not ours
    assert b.lease(arn).owner == "worker-b"


def _lease(n: int, owner: str | None, counter: int = 1) -> Lease:
    return Lease(ARN.format(n), f"cam-{n}", owner, counter, None, None, None, 0, None, None)


def test_plan_takes_free_leases_up_to_an_even_share_and_steals_one_at_a_time():
    watch = CounterWatch(lease_seconds=3.0)
    leases = [_lease(n, "w1") for n in range(12)]
    workers = [WorkerItem(w, 1, "h", 1, None) for w in ("w1", "w2", "w3")]
    snapshot = TableSnapshot(leases, workers)
    decided = plan(snapshot, "w3", set(), watch, 0.0, rng=random.Random(1))
    assert (decided.target, decided.live_workers, decided.take) == (4, 3, [])
    assert decided.steal is not None and decided.steal.owner == "w1"
    # unchanged counters for a lease time: w1 and its leases are expired, all free to take
    later = plan(snapshot, "w3", set(), watch, 3.0, rng=random.Random(1))
    assert later.steal is None and len(later.take) == 12 // 1  # only w3 is live: target 12
    capped = plan(snapshot, "w3", set(), watch, 3.0, max_streams=5)
    assert len(capped.take) == 5


def test_plan_prefers_its_own_leases_from_before_and_skips_what_it_holds():
    watch = CounterWatch(lease_seconds=3.0)
    leases = [_lease(0, "me"), _lease(1, None), _lease(2, None), _lease(3, "other")]
    decided = plan(TableSnapshot(leases, []), "me", {ARN.format(2)}, watch, 0.0)
    assert decided.target == 2
    assert [lease.stream_arn for lease in decided.take] == [ARN.format(0)]


def test_a_second_live_process_with_the_same_worker_id_is_refused(dynamodb, table):
    first = LeaseKeeper(LeaseTable(dynamodb, table, "fixed-id"), lease_seconds=1.5).start()
    try:
        second = LeaseTable(dynamodb, table, "fixed-id")
        with pytest.raises(DuplicateWorkerId, match="fixed-id"):
            LeaseCoordinator(second, LeaseKeeper(second, 1.5), 1.5).check_unique_id()
    finally:
        first.stop()
    # the process is gone; its item is stale: a restart with the same id may start
    LeaseCoordinator(second, LeaseKeeper(second, 1.5), 1.5).check_unique_id()
