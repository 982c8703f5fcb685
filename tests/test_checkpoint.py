"""Checkpoints in a DynamoDB lease table (consumer.cloud.leases) against moto's server."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest

from consumer.cloud.leases import CheckpointStore, LeaseConflict, sort_key
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


@pytest.fixture(scope="module")
def table(dynamodb):
    name = f"checkpoints-{uuid.uuid4().hex[:8]}"
    CheckpointStore(dynamodb, name, "setup").ensure_table()
    return name


@pytest.fixture()
def arn():
    return ARN.format(uuid.uuid4().hex[:8])


def test_ensure_table_creates_an_on_demand_lease_table_once(dynamodb):
    name = f"checkpoints-{uuid.uuid4().hex[:8]}"
    store = CheckpointStore(dynamodb, name, "w1")
    store.ensure_table()
    store.ensure_table()  # idempotent
    table = dynamodb.describe_table(TableName=name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_a_table_of_another_shape_is_refused(dynamodb):
    name = f"other-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
    with pytest.raises(ValueError, match="leaseKey"):
        CheckpointStore(dynamodb, name, "w1").ensure_table()


def test_save_and_get_round_trip_47_digit_fragment_numbers(dynamodb, table, arn):
    store = CheckpointStore(dynamodb, table, "w1")
    assert store.get(arn) is None
    assert store.save(arn, BIG)
    assert store.get(arn) == BIG
    assert CheckpointStore(dynamodb, table, "w1").get(arn) == BIG  # a restarted worker sees it


def test_item_has_the_lease_table_shape(dynamodb, table, arn):
    store = CheckpointStore(dynamodb, table, "worker-a")
    store.save(arn, SMALLER)
    store.save(arn, BIG)
    item = dynamodb.get_item(TableName=table, Key={"leaseKey": {"S": arn}},
                             ConsistentRead=True)["Item"]
    assert item["leaseKey"] == {"S": arn}
    assert item["checkpoint"] == {"S": str(BIG)}
    assert item["checkpointSortKey"] == {"S": sort_key(BIG)} and len(sort_key(BIG)) == 64
    assert item["leaseOwner"] == {"S": "worker-a"}
    assert item["leaseCounter"] == {"N": "2"}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "0"}
    assert datetime.fromisoformat(item["updatedAt"]["S"]).tzinfo is not None
    lease = store.lease(arn)
    assert (lease.checkpoint, lease.owner, lease.counter) == (BIG, "worker-a", 2)
    assert abs(store.updated_at(arn) - time.time()) < 60


def test_checkpoints_only_advance_compared_as_integers(dynamodb, table, arn):
    store = CheckpointStore(dynamodb, table, "w1")
    assert store.save(arn, BIG)
    # As strings "95..." > "91..." would win; as integers it is older: ignored.
    assert store.save(arn, SMALLER) is False
    assert store.get(arn) == BIG
    assert store.save(arn, BIG - 1) is False
    assert store.get(arn) == BIG
    assert store.save(arn, BIG)  # the same again (a replayed fragment): idempotent
    assert store.save(arn, BIG + 1)
    assert store.get(arn) == BIG + 1
    assert store.lease(arn).counter == 3


def test_another_workers_lease_is_not_overwritten(dynamodb, table, arn):
    a = CheckpointStore(dynamodb, table, "worker-a")
    b = CheckpointStore(dynamodb, table, "worker-b")
    a.acquire(arn)
    a.save(arn, SMALLER)
    with pytest.raises(LeaseConflict, match="worker-a"):
        b.save(arn, BIG)
    with pytest.raises(LeaseConflict):
        b.acquire(arn)
    assert a.get(arn) == SMALLER and a.lease(arn).owner == "worker-a"

    taken = b.acquire(arn, take_over=True)  # worker-a is gone: explicit take-over
    assert (taken.owner, taken.owner_switches, taken.checkpoint) == ("worker-b", 1, SMALLER)
    with pytest.raises(LeaseConflict, match="worker-b"):
        a.save(arn, BIG)
    assert b.save(arn, BIG)
    lease = b.lease(arn)
    assert (lease.owner, lease.owner_switches, lease.checkpoint) == ("worker-b", 0, BIG)


def test_take_over_on_save_still_never_moves_backwards(dynamodb, table, arn):
    a = CheckpointStore(dynamodb, table, "worker-a")
    a.save(arn, BIG)
    b = CheckpointStore(dynamodb, table, "worker-b")
    assert b.save(arn, SMALLER, take_over=True) is False
    assert a.get(arn) == BIG and a.lease(arn).owner == "worker-a"
    assert b.save(arn, BIG + 5, take_over=True)
    assert a.lease(arn).owner == "worker-b"


def test_the_same_worker_id_continues_after_a_restart(dynamodb, table, arn):
    CheckpointStore(dynamodb, table, "host-1").save(arn, SMALLER)
    restarted = CheckpointStore(dynamodb, table, "host-1")
    lease = restarted.acquire(arn)
    assert (lease.owner, lease.checkpoint, lease.counter) == ("host-1", SMALLER, 2)
    assert restarted.save(arn, BIG)


def test_delete_forgets_the_stream(dynamodb, table, arn):
    store = CheckpointStore(dynamodb, table, "w1")
    store.save(arn, BIG)
    store.delete(arn)
    assert store.get(arn) is None and store.lease(arn) is None
    assert store.save(arn, SMALLER)  # the only way back: delete, then save
    assert store.get(arn) == SMALLER


def test_invalid_fragment_numbers_are_refused(dynamodb, table, arn):
    store = CheckpointStore(dynamodb, table, "w1")
    for bad in (-1, 10 ** 64, "123", True):
        with pytest.raises(ValueError):
            store.save(arn, bad)
