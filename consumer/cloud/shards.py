"""A Kinesis data stream's shards read with plain boto3 calls (ListShards, GetShardIterator,
GetRecords), from where the caller last got to. `kvs-analytics events sync` and the local stack's
Firehose leg read the records stream with it. Production readers of the stream use KCL, which
spreads shards over instances with leases; this reader is one process reading every shard.

Positions are sequence numbers, one per shard: a shard with a position is read after it
(AFTER_SEQUENCE_NUMBER), one without from its start (TRIM_HORIZON). The reader moves its own
position past a batch when it hands the batch out; a caller that keeps positions across runs
stores `batch.last_sequence` once it has made the batch durable, so a crash in between replays the
batch (at least once, never a gap).

Shards are listed again on every pass: a resharded stream's new shards are read from their start,
and a closed shard, once read to its end, is left alone. GetRecords is called at most 5 times a
second per shard (the service's limit); an expired iterator is fetched again at the position.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_RECORDS = 10_000  # GetRecords' Limit ceiling
MIN_CALL_SECONDS = 0.2  # 5 GetRecords calls per second per shard


@dataclass(frozen=True)
class ShardBatch:
    shard_id: str
    records: list[bytes]  # each record's Data, in shard order
    last_sequence: str  # the sequence number of the last of them
    behind_ms: int  # MillisBehindLatest after this batch


@dataclass
class _Shard:
    position: str | None  # the last sequence number handed out
    iterator: str | None = None
    closed: bool = False  # read to its end (a parent of a reshard)
    behind_ms: int | None = None  # unknown until first read
    last_call: float = field(default=0.0)


class ShardReader:
    def __init__(self, kinesis, stream: str, positions: dict[str, str] | None = None,
                 limit: int = MAX_RECORDS, min_call_seconds: float = MIN_CALL_SECONDS):
        self.kinesis = kinesis
        self.stream = stream
        self.limit = limit
        self.min_call_seconds = min_call_seconds
        self._shards = {shard: _Shard(position) for shard, position in (positions or {}).items()}

    @property
    def positions(self) -> dict[str, str]:
        return {shard_id: shard.position for shard_id, shard in self._shards.items()
                if shard.position is not None}

    @property
    def caught_up(self) -> bool:
        """Every shard has been read to its tip (0 ms behind) or to its end."""
        return bool(self._shards) and all(shard.closed or shard.behind_ms == 0
                                          for shard in self._shards.values())

    def poll(self) -> Iterator[ShardBatch]:
        """One pass: each open shard read until it is caught up; yields the batches that hold
        records."""
        self._list_shards()
        for shard_id, shard in self._shards.items():
            while not shard.closed:
                batch = self._read(shard_id, shard)
                if batch is not None:
                    yield batch
                if batch is None or not shard.behind_ms:
                    break

    def _list_shards(self) -> None:
        pages = [self.kinesis.list_shards(StreamName=self.stream)]
        while pages[-1].get("NextToken"):
            pages.append(self.kinesis.list_shards(NextToken=pages[-1]["NextToken"]))
        for page in pages:
            for listed in page["Shards"]:
                self._shards.setdefault(listed["ShardId"], _Shard(None))

    def _read(self, shard_id: str, shard: _Shard) -> ShardBatch | None:
        wait = shard.last_call + self.min_call_seconds - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if shard.iterator is None:
            shard.iterator = self._iterator(shard_id, shard.position)
        errors = self.kinesis.exceptions
        try:
            shard.last_call = time.monotonic()
            response = self.kinesis.get_records(ShardIterator=shard.iterator, Limit=self.limit)
        except errors.ExpiredIteratorException:
            shard.iterator = None  # fetched again at the position next time
            return None
        except errors.ProvisionedThroughputExceededException:
            return None  # this shard again on the next pass
        shard.iterator = response.get("NextShardIterator")
        shard.behind_ms = response.get("MillisBehindLatest", 0)
        if shard.iterator is None:
            shard.closed = True
        records = response["Records"]
        if not records:
            return None
        shard.position = records[-1]["SequenceNumber"]
        return ShardBatch(shard_id, [record["Data"] for record in records], shard.position,
                          shard.behind_ms)

    def _iterator(self, shard_id: str, position: str | None) -> str:
        where = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                  "StartingSequenceNumber": position} if position
                 else {"ShardIteratorType": "TRIM_HORIZON"})
        return self.kinesis.get_shard_iterator(StreamName=self.stream, ShardId=shard_id,
                                               **where)["ShardIterator"]
