"""Which frame records already reached the data stream: the dedupe on resume.

After a crash the consumer re-delivers the fragments after its last checkpoint. Some of their
records may have landed in Kinesis before the kill; `delivered_record_ids` reads them back so the
consumer can skip them (at-least-once delivery + this check = no RecordId twice in the stream).

`since` must be at or before the arrival of the first record written after the checkpointed
fragment: the time the checkpoint was written (`checkpointAt`; not the lease's `updatedAt`, which
every renewal and take-over moves to now) minus the longest time a fragment's records can wait
for their checkpoint (the pipeline's drain budget) is a safe choice; earlier only costs reading.
Only the shards whose hash-key range holds the partition key are read (open or closed, so a
resharded stream still works). The read is bounded by `max_records` and `max_seconds`; when it
gives up it logs a warning that duplicates are possible and returns what it found.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from consumer.cloud.backoff import Backoff

log = logging.getLogger(__name__)

_PAGE = 10_000  # GetRecords' maximum
_THROTTLED = frozenset({"ProvisionedThroughputExceededException", "LimitExceededException",
                        "KMSThrottlingException"})


def delivered_record_ids(kinesis_client, stream_name: str, partition_key: str, since: float, *,
                         max_records: int = 1_000_000, max_seconds: float = 60.0,
                         backoff: Backoff | None = None) -> set[str]:
    """RecordIds of the records with `partition_key` that arrived at or after `since`."""
    backoff = backoff or Backoff()
    deadline = time.monotonic() + max_seconds
    found: set[str] = set()
    scanned = 0
    for shard_id in shards_for_key(kinesis_client, stream_name, partition_key):
        iterator = kinesis_client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard_id, ShardIteratorType="AT_TIMESTAMP",
            Timestamp=datetime.fromtimestamp(since, UTC))["ShardIterator"]
        attempt = 0
        while iterator:
            if scanned >= max_records or time.monotonic() > deadline:
                log.warning("replay check of %s/%s gave up after %d records and %.0f s: "
                            "records already delivered may be sent again (duplicates possible)",
                            stream_name, partition_key, scanned, max_seconds)
                return found
            limit = min(_PAGE, max_records - scanned)
            try:
                page = kinesis_client.get_records(ShardIterator=iterator, Limit=limit)
            except ClientError as err:
                if err.response.get("Error", {}).get("Code") not in _THROTTLED:
                    raise
                attempt += 1  # GetRecords allows 5 calls/s per shard: wait and try again
                time.sleep(min(backoff.delay(attempt), max(0.0, deadline - time.monotonic())))
                continue
            attempt = 0
            for record in page["Records"]:
                scanned += 1
                if record["PartitionKey"] == partition_key:
                    record_id = _record_id(record["Data"])
                    if record_id:
                        found.add(record_id)
            iterator = page.get("NextShardIterator")
            # Caught up with the shard's tip. A full page may have more behind it even at 0 ms
            # (records written within the same millisecond), so it never ends the read.
            if page.get("MillisBehindLatest", 0) == 0 and len(page["Records"]) < limit:
                break
    log.info("replay check of %s/%s: %d records already delivered (%d read)", stream_name,
             partition_key, len(found), scanned)
    return found


def read_all_records(kinesis_client, stream_name: str) -> list[dict]:
    """Every record in the stream, shard by shard from the oldest (the raw GetRecords dicts).

    For reading back what was delivered (the demo, tests); a live application uses KCL.
    """
    records: list[dict] = []
    for shard in kinesis_client.list_shards(StreamName=stream_name)["Shards"]:
        iterator = kinesis_client.get_shard_iterator(
            StreamName=stream_name, ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = kinesis_client.get_records(ShardIterator=iterator, Limit=_PAGE)
            records.extend(page["Records"])
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return records


def shards_for_key(kinesis_client, stream_name: str, partition_key: str) -> list[str]:
    """Ids of the shards (open or closed) whose hash-key range holds `partition_key`."""
    key_hash = int.from_bytes(hashlib.md5(partition_key.encode("utf-8"),
                                            usedforsecurity=False).digest(), "big")
    shards, token = [], None
    while True:
        page = (kinesis_client.list_shards(NextToken=token) if token
                else kinesis_client.list_shards(StreamName=stream_name))
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
    return [s["ShardId"] for s in shards
            if int(s["HashKeyRange"]["StartingHashKey"]) <= key_hash
            <= int(s["HashKeyRange"]["EndingHashKey"])]


def _record_id(data: bytes) -> str | None:
    """The record's RecordId, or None for data that is not a frame record."""
    try:
        value = json.loads(data).get("RecordId")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
