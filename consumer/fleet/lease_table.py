"""The fleet's lease table in DynamoDB, in the shape of a KCL lease table.

One item per Kinesis video stream:

    leaseKey                      S  the stream ARN (the table's hash key)
    streamName                    S  the stream's name
    leaseOwner                    S  worker id holding the stream (absent: nobody)
    leaseCounter                  N  incremented by every write of the owner: its liveness signal
    checkpoint                    S  last fully processed fragment number, in decimal
    checkpointSortKey             S  the same number zero-padded to 64 digits
    checkpointProducerTime        N  producer time of that fragment (seconds since the epoch)
    checkpointAt                  S  ISO 8601 UTC time the checkpoint was written
    ownerSwitchesSinceCheckpoint  N  owner changes since the last checkpoint
    createdAt, updatedAt          S  ISO 8601 UTC times of the item's creation and last write

and one item per live worker process, `leaseKey = "worker/<id>"` (leaseCounter renewed like a
lease, host, pid): how workers learn of each other before they hold anything.

Why strings: fragment numbers have ~47 digits and a DynamoDB Number keeps at most 38
significant digits, so `checkpoint` is a decimal string, as KCL stores sequence numbers;
`checkpointSortKey` is fixed-width, so DynamoDB's byte-wise string order is integer order.

Every write by an owner is conditional on `leaseOwner = me AND leaseCounter = the counter it
last wrote` and increments the counter: a worker whose lease was taken fails its next write
(LeaseLost) and must stop. Checkpoints also never move backwards. Expiry is not stored: an
observer decides it from how long it has seen a counter unchanged on its own clock
(`consumer.fleet.balance`), so no clocks need to agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

SORT_KEY_DIGITS = 64
WORKER_PREFIX = "worker/"
_KEY_SCHEMA = [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
_NAMES = {"#key": "leaseKey", "#name": "streamName", "#owner": "leaseOwner",
          "#counter": "leaseCounter", "#cp": "checkpoint", "#sk": "checkpointSortKey",
          "#cpt": "checkpointProducerTime", "#cpat": "checkpointAt",
          "#switches": "ownerSwitchesSinceCheckpoint", "#created": "createdAt",
          "#at": "updatedAt", "#host": "host", "#pid": "pid"}


class LeaseLost(Exception):
    """A conditional write found the lease owned by someone else, or moved on: stop the stream."""

    def __init__(self, stream_arn: str, worker_id: str, found: Lease | None):
        owner = found.owner if found else None
        super().__init__(f"lease of {stream_arn} is no longer held by {worker_id!r} "
                         f"(owner now {owner!r})")
        self.stream_arn = stream_arn
        self.found = found


@dataclass(frozen=True)
class Lease:
    stream_arn: str
    stream_name: str | None
    owner: str | None
    counter: int
    checkpoint: int | None
    checkpoint_producer_time: float | None
    checkpoint_at: float | None  # seconds since the epoch
    owner_switches: int
    created_at: float | None
    updated_at: float | None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lease:
        return cls(stream_arn=item["leaseKey"]["S"], stream_name=_text(item, "streamName"),
                   owner=_text(item, "leaseOwner"), counter=_number(item, "leaseCounter") or 0,
                   checkpoint=int(item["checkpoint"]["S"]) if "checkpoint" in item else None,
                   checkpoint_producer_time=_number(item, "checkpointProducerTime", float),
                   checkpoint_at=_time(item, "checkpointAt"),
                   owner_switches=_number(item, "ownerSwitchesSinceCheckpoint") or 0,
                   created_at=_time(item, "createdAt"), updated_at=_time(item, "updatedAt"))


@dataclass(frozen=True)
class WorkerItem:
    worker_id: str
    counter: int
    host: str | None
    pid: int | None
    updated_at: float | None

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> WorkerItem:
        return cls(worker_id=item["leaseKey"]["S"][len(WORKER_PREFIX):],
                   counter=_number(item, "leaseCounter") or 0, host=_text(item, "host"),
                   pid=_number(item, "pid"), updated_at=_time(item, "updatedAt"))


@dataclass(frozen=True)
class TableSnapshot:
    leases: list[Lease]
    workers: list[WorkerItem]


def sort_key(fragment_number: int) -> str:
    """Fixed-width decimal, so string order is integer order."""
    if isinstance(fragment_number, bool) or not isinstance(fragment_number, int) \
            or not 0 <= fragment_number < 10 ** SORT_KEY_DIGITS:
        raise ValueError(f"not a fragment number: {fragment_number!r}")
    return f"{fragment_number:0{SORT_KEY_DIGITS}d}"


class LeaseTable:
    """The lease operations of one worker (`worker_id`) on one table (see module doc)."""

    def __init__(self, client, table: str, worker_id: str):
        if not worker_id:
            raise ValueError("worker_id must not be empty")
        self._client = client
        self.table = table
        self.worker_id = worker_id

    # --- the table -------------------------------------------------------------------------

    def ensure_table(self, timeout: float = 300.0) -> None:
        """Create the table (on-demand billing) if missing; wait until it is ACTIVE."""
        try:
            table = self._client.describe_table(TableName=self.table)["Table"]
        except ClientError as err:
            if _code(err) != "ResourceNotFoundException":
                raise
            try:
                self._client.create_table(
                    TableName=self.table, BillingMode="PAY_PER_REQUEST", KeySchema=_KEY_SCHEMA,
                    AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}])
                log.info("created lease table %s", self.table)
            except ClientError as err2:
                if _code(err2) != "ResourceInUseException":  # another worker made it first
                    raise
            table = None
        if table is None or table.get("TableStatus") != "ACTIVE":
            self._client.get_waiter("table_exists").wait(
                TableName=self.table,
                WaiterConfig={"Delay": 2, "MaxAttempts": max(1, int(timeout / 2))})
            table = self._client.describe_table(TableName=self.table)["Table"]
        if table["KeySchema"] != _KEY_SCHEMA:
            raise ValueError(f"table {self.table} exists with key schema {table['KeySchema']}, "
                             "not a lease table (hash key leaseKey)")

    def snapshot(self) -> TableSnapshot:
        """Every lease and worker item (a paginated, eventually consistent Scan)."""
        leases, workers = [], []
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            page = self._client.scan(**kwargs)
            for item in page.get("Items", []):
                if item["leaseKey"]["S"].startswith(WORKER_PREFIX):
                    workers.append(WorkerItem.from_item(item))
                else:
                    leases.append(Lease.from_item(item))
            if "LastEvaluatedKey" not in page:
                return TableSnapshot(leases, workers)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def lease(self, stream_arn: str) -> Lease | None:
        """The stream's item, read consistently; None if it has none."""
        item = self._client.get_item(TableName=self.table, Key=_key(stream_arn),
                                     ConsistentRead=True).get("Item")
        return Lease.from_item(item) if item else None

    # --- leases ----------------------------------------------------------------------------

    def create(self, stream_arn: str, stream_name: str) -> bool:
        """An unowned lease for a newly seen stream; False if it already exists."""
        try:
            self._client.put_item(
                TableName=self.table,
                Item={"leaseKey": {"S": stream_arn}, "streamName": {"S": stream_name},
                      "leaseCounter": {"N": "0"}, "ownerSwitchesSinceCheckpoint": {"N": "0"},
                      "createdAt": {"S": _now()}, "updatedAt": {"S": _now()}},
                ConditionExpression="attribute_not_exists(leaseKey)")
            return True
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
            return False

    def take(self, seen: Lease) -> Lease | None:
        """Claim a lease as it was seen (unowned, expired, ours from before, or stolen);
        None if it changed since (someone renewed or took it first)."""
        values: dict[str, Any] = {":me": {"S": self.worker_id}, ":one": {"N": "1"},
                                  ":seen": {"N": str(seen.counter)}, ":now": {"S": _now()}}
        update = "SET #owner = :me, #at = :now ADD #counter :one"
        condition = "#counter = :seen"
        if seen.owner not in (None, self.worker_id):
            update += ", #switches :one"
        try:
            return Lease.from_item(self._update(seen.stream_arn, update, condition, values))
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
            return None

    def renew(self, stream_arn: str, counter: int) -> int:
        """Renew a held lease; the new counter. LeaseLost if it is not ours at `counter`."""
        return self._owned_write(stream_arn, counter, "SET #at = :now ADD #counter :one", {})

    def checkpoint(self, stream_arn: str, counter: int, fragment_number: int,
                   producer_time: float | None = None) -> int:
        """Checkpoint `fragment_number` on a held lease (also renews it); the new counter.

        LeaseLost if the lease is not ours at `counter`. A number at or below the stored one is
        not written (checkpoints never move backwards): the lease is renewed instead."""
        values: dict[str, Any] = {":cp": {"S": str(fragment_number)},
                                  ":sk": {"S": sort_key(fragment_number)}, ":zero": {"N": "0"}}
        update = ("SET #cp = :cp, #sk = :sk, #cpat = :now, #switches = :zero, #at = :now")
        if producer_time is not None:
            values[":cpt"] = {"N": repr(float(producer_time))}
            update += ", #cpt = :cpt"
        try:
            return self._owned_write(stream_arn, counter, update + " ADD #counter :one", values,
                                     extra="attribute_not_exists(#sk) OR #sk < :sk")
        except _NotNewer:
            log.info("stream %s: checkpoint %s not saved: a newer one is stored", stream_arn,
                     fragment_number)
            return self.renew(stream_arn, counter)

    def release(self, stream_arn: str, counter: int) -> None:
        """Give a held lease up (owner cleared), so another worker takes it at once."""
        self._owned_write(stream_arn, counter, "SET #at = :now REMOVE #owner ADD #counter :one",
                          {})

    def delete(self, stream_arn: str) -> None:
        """Forget the stream's lease and checkpoint (a deleted stream)."""
        self._client.delete_item(TableName=self.table, Key=_key(stream_arn))

    # --- workers ---------------------------------------------------------------------------

    def worker(self, worker_id: str | None = None) -> WorkerItem | None:
        item = self._client.get_item(TableName=self.table,
                                     Key=_key(WORKER_PREFIX + (worker_id or self.worker_id)),
                                     ConsistentRead=True).get("Item")
        return WorkerItem.from_item(item) if item else None

    def heartbeat(self, host: str, pid: int) -> None:
        """This worker is alive: its item's counter moves like a lease's."""
        self._client.update_item(
            TableName=self.table, Key=_key(WORKER_PREFIX + self.worker_id),
            UpdateExpression="SET #at = :now, #host = :host, #pid = :pid ADD #counter :one",
            ExpressionAttributeNames={"#at": "updatedAt", "#host": "host", "#pid": "pid",
                                      "#counter": "leaseCounter"},
            ExpressionAttributeValues={":now": {"S": _now()}, ":host": {"S": host},
                                       ":pid": {"N": str(pid)}, ":one": {"N": "1"}})

    def retire(self) -> None:
        """This worker stops: remove its item."""
        self._client.delete_item(TableName=self.table, Key=_key(WORKER_PREFIX + self.worker_id))

    def forget_worker(self, worker_id: str) -> None:
        """Remove a dead worker's item (seen unchanged past the lease time)."""
        self._client.delete_item(TableName=self.table, Key=_key(WORKER_PREFIX + worker_id))

    # --- internals -------------------------------------------------------------------------

    def _owned_write(self, stream_arn: str, counter: int, update: str, values: dict[str, Any],
                     extra: str | None = None) -> int:
        values = {**values, ":me": {"S": self.worker_id}, ":held": {"N": str(counter)},
                  ":one": {"N": "1"}, ":now": {"S": _now()}}
        condition = "#owner = :me AND #counter = :held"
        if extra:
            condition += f" AND ({extra})"
        try:
            return Lease.from_item(self._update(stream_arn, update, condition, values)).counter
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
        found = self.lease(stream_arn)
        if extra and found is not None and found.owner == self.worker_id \
                and found.counter == counter:
            raise _NotNewer()
        raise LeaseLost(stream_arn, self.worker_id, found)

    def _update(self, stream_arn: str, update: str, condition: str,
                values: dict[str, Any]) -> dict[str, Any]:
        text = update + " " + condition
        return self._client.update_item(
            TableName=self.table, Key=_key(stream_arn), UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames={k: v for k, v in _NAMES.items() if k in text},
            ExpressionAttributeValues={k: v for k, v in values.items() if k in text},
            ReturnValues="ALL_NEW")["Attributes"]


class _NotNewer(Exception):
    """A checkpoint write found an equal or newer checkpoint stored (the lease is still ours)."""


def _key(key: str) -> dict[str, Any]:
    return {"leaseKey": {"S": key}}


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _text(item: dict[str, Any], name: str) -> str | None:
    return item[name]["S"] if name in item else None


def _number(item: dict[str, Any], name: str, kind=int):
    return kind(item[name]["N"]) if name in item else None


def _time(item: dict[str, Any], name: str) -> float | None:
    text = _text(item, name)
    return datetime.fromisoformat(text).timestamp() if text else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
