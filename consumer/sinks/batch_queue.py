"""KDS's PutRecords limits, and the queue that cuts batches within them in per-key order.

`BatchQueue` is plain data with no locking: `KinesisRecordWriter` holds its lock around every
call. Its contract: records leave in the order they came, per partition key, and records given
back by `requeue()` go ahead of everything still queued, so a retry is never overtaken by a
newer record of its key. A "careful" key (one that just had a partial failure) gives at most one
record per batch, so KDS cannot accept a later record of it while refusing an earlier one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024  # data and partition keys, as KDS counts them
MAX_RECORD_BYTES = 1024 * 1024


class RecordRejected(ValueError):
    """A record KDS would never accept (too large, bad partition key)."""


def record_size(data: bytes, partition_key: str) -> int:
    """Bytes the record counts against KDS's limits; RecordRejected if it can never be sent."""
    if not isinstance(data, (bytes, bytearray)):
        raise RecordRejected(f"record data must be bytes, not {type(data).__name__}")
    if not isinstance(partition_key, str) or not 1 <= len(partition_key) <= 256:
        raise RecordRejected(f"partition key must be 1-256 characters: {partition_key!r:.80}")
    size = len(data) + len(partition_key.encode("utf-8"))
    if size > MAX_RECORD_BYTES:
        raise RecordRejected(f"record of {size} bytes (data + partition key) is over KDS's "
                             f"1 MiB ({MAX_RECORD_BYTES} bytes) limit per record")
    return size


@dataclass
class Entry:
    data: bytes
    key: str
    on_done: Callable[[bool], None]
    size: int
    enqueued: float  # time.monotonic() when put
    attempts: int = 0  # failures other than throttling
    admit: Callable[[], bool] | None = None  # the fence: may it still be sent?


class BatchQueue:
    """Records waiting to be sent, oldest first (see module doc)."""

    def __init__(self, careful_seconds: float):
        self._entries: deque[Entry] = deque()
        self._careful_seconds = careful_seconds
        self._careful: dict[str, float] = {}  # key -> time its careful mode ends
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def oldest(self) -> Entry:
        return self._entries[0]

    def append(self, entry: Entry) -> None:
        self._entries.append(entry)
        self.bytes += entry.size

    def requeue(self, entries: list[Entry]) -> None:
        """Put `entries` (in their order) back ahead of everything queued."""
        self._entries.extendleft(reversed(entries))
        self.bytes += sum(e.size for e in entries)

    def mark_careful(self, keys: Iterable[str], now: float) -> None:
        for key in keys:
            self._careful[key] = now + self._careful_seconds

    def full(self) -> bool:
        """Whether a whole batch is waiting."""
        return len(self._entries) >= MAX_BATCH_RECORDS or self.bytes >= MAX_BATCH_BYTES

    def take(self, now: float) -> list[Entry]:
        """Pop the next batch: at most 500 records and 5 MiB, one per careful key."""
        self._careful = {k: t for k, t in self._careful.items() if t > now}
        batch: list[Entry] = []
        skipped: list[Entry] = []
        blocked: set[str] = set()
        size = 0
        while self._entries and len(batch) < MAX_BATCH_RECORDS:
            entry = self._entries[0]
            if entry.key in blocked:
                if len(skipped) >= 2 * MAX_BATCH_RECORDS:
                    break  # a long run of one careful key: the next call takes the rest
                skipped.append(self._entries.popleft())
                continue
            if size + entry.size > MAX_BATCH_BYTES:
                break
            batch.append(self._entries.popleft())
            size += entry.size
            if entry.key in self._careful:
                blocked.add(entry.key)
        self._entries.extendleft(reversed(skipped))
        self.bytes -= size
        return batch

    def drain(self) -> list[Entry]:
        """Remove and return everything queued."""
        entries = list(self._entries)
        self._entries.clear()
        self.bytes = 0
        return entries
