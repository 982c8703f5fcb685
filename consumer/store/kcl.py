"""The KCL application: the event store kept from the data stream by AWS's KCL MultiLangDaemon
(Java), which leases the stream's shards across the instances that run it and starts one of
these record processors per shard it holds (`kvs-analytics events kcl` is the executableName in
infra/kcl/event-store.properties). They talk JSON lines over stdin and stdout, so nothing else
here may write to stdout; logs go to stderr.

The processor is thin: each batch goes to StoreWriter.file (one transaction, idempotent on
RecordId), and only after it returned is the shard checkpointed at the batch's last record. When
the store stays unreachable the process exits without checkpointing: the daemon starts a new
processor for the shard at its last checkpoint (an exception would not do: amazon_kclpy logs
it, reports the batch done, and the next checkpoint would skip it).
"""

from __future__ import annotations

import logging
import sys

from amazon_kclpy import kcl
from amazon_kclpy.v3 import processor

from consumer.store.writer import StoreUnavailable, StoreWriter

log = logging.getLogger(__name__)


class EventStoreProcessor(processor.RecordProcessorBase):
    def __init__(self, database_url: str, store_attempts: int = 6):
        self.writer = StoreWriter(database_url, attempts=store_attempts)
        self.shard_id = "?"

    def initialize(self, initialize_input) -> None:
        self.shard_id = initialize_input.shard_id

    def process_records(self, process_records_input) -> None:
        records = process_records_input.records
        if not records:
            return
        try:
            applied = self.writer.file(record.binary_data for record in records)
        except StoreUnavailable as err:
            log.error("%s: %s; exiting without a checkpoint", self.shard_id, err)
            sys.exit(1)
        last = records[-1]
        process_records_input.checkpointer.checkpoint(last.sequence_number,
                                                      last.sub_sequence_number)
        log.info("%s: %d records filed, %d seen before, %d rejected; checkpointed at %s",
                 self.shard_id, applied.records, applied.duplicates, applied.rejected,
                 last.sequence_number)

    def lease_lost(self, lease_lost_input) -> None:
        self.writer.close()  # another worker has the shard now; no checkpoint is allowed

    def shard_ended(self, shard_ended_input) -> None:
        shard_ended_input.checkpointer.checkpoint()  # required: lets the child shards start
        self.writer.close()

    def shutdown_requested(self, shutdown_requested_input) -> None:
        # every batch handed to process_records was filed before it returned
        shutdown_requested_input.checkpointer.checkpoint()
        self.writer.close()


def run(database_url: str, store_attempts: int = 6) -> None:
    """Serve the MultiLangDaemon on stdin and stdout until it closes stdin."""
    kcl.KCLProcess(EventStoreProcessor(database_url, store_attempts)).run()
