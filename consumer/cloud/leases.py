"""Per-stream checkpoints in DynamoDB, in the shape of a KCL lease table.

One item per Kinesis Video stream:

    leaseKey                      S  the stream ARN (the table's hash key)
    checkpoint                    S  last fully processed fragment number, in decimal
    checkpointSortKey             S  the same number zero-padded to 64 digits
    leaseOwner                    S  worker id holding the stream
    leaseCounter                  N  incremented by every write; a fleet's liveness signal
    ownerSwitchesSinceCheckpoint  N  owner changes since the last checkpoint
    updatedAt                     S  ISO 8601 UTC time of the last write

Why strings: fragment numbers have ~47 digits and a DynamoDB Number keeps at most 38
significant digits (a bigger one is refused with a ValidationException, or would lose its last
digits if rounded), so `checkpoint` is a decimal string, as KCL stores sequence numbers.
DynamoDB compares strings byte by byte, which is numeric order only for strings of one length:
hence `checkpointSortKey`, fixed-width, which the conditions compare.

Conditions on every checkpoint write:
- advance only: the stored sort key must be absent or <= the new one (saving the same number
  again is an idempotent no-op that still renews the lease); an older number is ignored.
- ownership: the item must have no owner or be ours (same worker_id: a restarted worker simply
  continues); another owner's lease raises LeaseConflict unless `take_over=True`.
A fragment is checkpointed by the caller only once its records and objects are durable, in
fragment order; a restart resumes after `get()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

log = logging.getLogger(__name__)

SORT_KEY_DIGITS = 64
_KEY_SCHEMA = [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
_NAMES = {"#key": "leaseKey", "#cp": "checkpoint", "#sk": "checkpointSortKey",
          "#owner": "leaseOwner", "#counter": "leaseCounter",
          "#switches": "ownerSwitchesSinceCheckpoint", "#at": "updatedAt"}


class LeaseConflict(Exception):
    """Another worker holds the stream's lease."""

    def __init__(self, stream_arn: str, owner: str, worker_id: str):
        super().__init__(f"stream {stream_arn} is leased by {owner!r}, not {worker_id!r} "
                         "(take it over explicitly if that worker is gone)")
        self.stream_arn = stream_arn
        self.owner = owner


@dataclass(frozen=True)
class Lease:
    stream_arn: str
    checkpoint: int | None
    owner: str | None
    counter: int
    owner_switches: int
    updated_at: float | None  # seconds since the epoch

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Lease:
        def text(name: str) -> str | None:
            return item[name]["S"] if name in item else None
        at = text("updatedAt")
        return cls(stream_arn=item["leaseKey"]["S"],
                   checkpoint=int(item["checkpoint"]["S"]) if "checkpoint" in item else None,
                   owner=text("leaseOwner"),
                   counter=int(item.get("leaseCounter", {"N": "0"})["N"]),
                   owner_switches=int(item.get("ownerSwitchesSinceCheckpoint", {"N": "0"})["N"]),
                   updated_at=datetime.fromisoformat(at).timestamp() if at else None)


def sort_key(fragment_number: int) -> str:
    """Fixed-width decimal, so string order is integer order."""
    if isinstance(fragment_number, bool) or not isinstance(fragment_number, int) \
            or not 0 <= fragment_number < 10 ** SORT_KEY_DIGITS:
        raise ValueError(f"not a fragment number: {fragment_number!r}")
    return f"{fragment_number:0{SORT_KEY_DIGITS}d}"


class CheckpointStore:
    """Checkpoints and leases of one worker in one table (see module doc)."""

    def __init__(self, client, table: str, worker_id: str):
        if not worker_id:
            raise ValueError("worker_id must not be empty")
        self._client = client
        self.table = table
        self.worker_id = worker_id

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
                log.info("created checkpoint table %s", self.table)
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

    def lease(self, stream_arn: str) -> Lease | None:
        """The stream's item, read consistently; None if it has none."""
        item = self._client.get_item(TableName=self.table, Key=_key(stream_arn),
                                     ConsistentRead=True).get("Item")
        return Lease.from_item(item) if item else None

    def get(self, stream_arn: str) -> int | None:
        """The last checkpointed fragment number, or None."""
        lease = self.lease(stream_arn)
        return lease.checkpoint if lease else None

    def updated_at(self, stream_arn: str) -> float | None:
        """When the stream's item was last written (seconds since the epoch), or None."""
        lease = self.lease(stream_arn)
        return lease.updated_at if lease else None

    def acquire(self, stream_arn: str, take_over: bool = False) -> Lease:
        """Hold the stream's lease: create it, renew our own, or (take_over) claim another's.

        LeaseConflict if another worker holds it and take_over is False.
        """
        for _ in range(10):  # optimistic concurrency: retry when the item moved under us
            current = self.lease(stream_arn)
            values: dict[str, Any] = {":me": {"S": self.worker_id}, ":now": {"S": _now()},
                                      ":one": {"N": "1"}}
            update = "SET #owner = :me, #at = :now ADD #counter :one"
            if current is None:
                condition = "attribute_not_exists(#key)"
            elif current.owner in (None, self.worker_id):
                condition = "attribute_not_exists(#owner) OR #owner = :me"
            elif not take_over:
                raise LeaseConflict(stream_arn, current.owner, self.worker_id)
            else:
                log.warning("stream %s: taking the lease over from %s", stream_arn,
                            current.owner)
                update += ", #switches :one"
                condition = "#counter = :seen"
                values[":seen"] = {"N": str(current.counter)}
            try:
                return Lease.from_item(self._update(stream_arn, update, condition, values))
            except ClientError as err:
                if _code(err) != "ConditionalCheckFailedException":
                    raise
        raise RuntimeError(f"stream {stream_arn}: lease kept changing; gave up acquiring it")

    def save(self, stream_arn: str, fragment_number: int, *, take_over: bool = False) -> bool:
        """Checkpoint `fragment_number`; True if stored, False if an equal or newer one was.

        Never moves backwards. LeaseConflict if another worker holds the lease (unless
        take_over).
        """
        values: dict[str, Any] = {
            ":cp": {"S": str(fragment_number)}, ":sk": {"S": sort_key(fragment_number)},
            ":me": {"S": self.worker_id}, ":zero": {"N": "0"}, ":one": {"N": "1"},
            ":now": {"S": _now()}}
        update = ("SET #cp = :cp, #sk = :sk, #owner = :me, #switches = :zero, #at = :now "
                  "ADD #counter :one")
        condition = "attribute_not_exists(#sk) OR #sk <= :sk"
        if not take_over:
            condition = f"(attribute_not_exists(#owner) OR #owner = :me) AND ({condition})"
        try:
            self._update(stream_arn, update, condition, values)
            return True
        except ClientError as err:
            if _code(err) != "ConditionalCheckFailedException":
                raise
        current = self.lease(stream_arn)
        if current is not None and current.owner not in (None, self.worker_id) \
                and not take_over:
            raise LeaseConflict(stream_arn, current.owner, self.worker_id)
        log.info("stream %s: checkpoint %s not saved: %s is already stored", stream_arn,
                 fragment_number, current.checkpoint if current else None)
        return False

    def delete(self, stream_arn: str) -> None:
        """Forget the stream's checkpoint and lease (the only way to move it backwards)."""
        self._client.delete_item(TableName=self.table, Key=_key(stream_arn))

    def _update(self, stream_arn: str, update: str, condition: str,
                values: dict[str, Any]) -> dict[str, Any]:
        used = {k: v for k, v in _NAMES.items() if k in update or k in condition}
        return self._client.update_item(
            TableName=self.table, Key=_key(stream_arn), UpdateExpression=update,
            ConditionExpression=condition, ExpressionAttributeNames=used,
            ExpressionAttributeValues={k: v for k, v in values.items()
                                       if k in update or k in condition},
            ReturnValues="ALL_NEW")["Attributes"]


def _key(stream_arn: str) -> dict[str, Any]:
    return {"leaseKey": {"S": stream_arn}}


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
