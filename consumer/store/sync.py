"""`kvs-analytics events sync`: the event store kept from the data stream by one process with a
plain boto3 shard reader (consumer.cloud.shards), for the local stack, the demo and a single
machine. Production runs the KCL application instead (consumer.store.kcl): KCL spreads the
shards over the instances that run it with leases, takes a dead instance's shards over, and
follows reshards parent-first; this reader does none of that.

Per batch of a shard: file it (one transaction), then store the shard's position in
`shard_positions`, so a sync killed at any point and run again replays at most the batch it was
filing, which the store's RecordId check turns into no writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.cloud.shards import ShardReader
from consumer.store.events import Applied
from consumer.store.writer import StoreWriter


@dataclass
class SyncProgress:
    totals: Applied = field(default_factory=Applied)
    batches: int = 0
    caught_up: bool = False
    behind_ms: dict[str, int] = field(default_factory=dict)  # per shard


def sync(writer: StoreWriter, kinesis, data_stream: str, *, follow: bool = False,
         poll_seconds: float = 1.0, stop: threading.Event | None = None,
         report: Callable[[SyncProgress], None] = lambda progress: None) -> SyncProgress:
    """File the data stream's records from where the last sync got to. Without `follow`, returns
    once every shard is caught up; with it, keeps polling until `stop` is set. `report` is
    called after every pass that filed something, and once at the end."""
    stop = stop or threading.Event()
    reader = ShardReader(kinesis, data_stream, writer.positions(data_stream))
    progress = SyncProgress()
    while not stop.is_set():
        filed = 0
        for batch in reader.poll():
            progress.totals.add(writer.file(batch.records))
            writer.save_position(data_stream, batch.shard_id, batch.last_sequence)
            progress.batches += 1
            progress.behind_ms[batch.shard_id] = batch.behind_ms
            filed += len(batch.records)
            if stop.is_set():
                break
        progress.caught_up = reader.caught_up
        if filed:
            report(progress)
        if progress.caught_up and not follow:
            break
        if not filed:
            stop.wait(poll_seconds)
    report(progress)
    return progress
