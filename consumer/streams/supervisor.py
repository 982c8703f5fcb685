"""The consumer service: discovers streams, runs a worker per stream, one analysis stage, the
writers and the checkpointer, logs what each stream is doing, and shuts down cleanly.

Shutdown (SIGTERM/SIGINT): stop reading, let queued frames through analysis, flush the Kinesis
and S3 writers, write the checkpoints of every fragment that became durable, and return, all
within `shutdown_seconds`. What did not make it is re-read after the checkpoint next time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from consumer.cloud.aws import ApiCalls, AwsContext
from consumer.cloud.discovery import discover
from consumer.cloud.leases import CheckpointStore, LeaseConflict
from consumer.cloud.media_source import MediaSource
from consumer.config import Config
from consumer.pipeline.analysis import Analyzer
from consumer.pipeline.checkpointer import Checkpointer
from consumer.pipeline.event_stage import EventStage
from consumer.pipeline.outputs import OutputStage
from consumer.sinks.kinesis import KinesisRecordWriter
from consumer.sinks.replay import delivered_record_ids
from consumer.sinks.s3 import S3ObjectWriter
from consumer.streams.ledger import FragmentLedger
from consumer.streams.session import StreamWorker
from consumer.streams.status import status_lines
from processors.base import Processor
from processors.tracking import PersonTracker

log = logging.getLogger(__name__)
REPLAY_MARGIN_SECONDS = 300  # how far before a checkpoint's write to look for delivered records


@dataclass
class Clients:
    kvs: AwsContext
    kinesis: object
    s3: object | None
    dynamodb: object

    calls: ApiCalls

    @classmethod
    def from_config(cls, config: Config) -> "Clients":
        endpoints = config.aws.endpoints
        calls = ApiCalls()

        def context(service: str) -> AwsContext:
            return AwsContext(endpoints.get(service), config.aws.region, max_attempts=5,
                              calls=calls)
        s3 = context("s3").client("s3") if config.outputs.s3 is not None else None
        return cls(context("kinesisvideo"), context("kinesis").client("kinesis"), s3,
                   context("dynamodb").client("dynamodb"), calls)


class ConsumerService:
    def __init__(self, config: Config, processors: Processor | list[Processor],
                 clients: Clients | None = None):
        self.config = config
        # One analysis worker per processor; each stream is served by one of them, so a
        # camera's records stay in order while the workers use every core.
        self.processors = processors if isinstance(processors, list) else [processors]
        processor = self.processors[0]
        self.clients = clients or Clients.from_config(config)
        outputs = config.outputs
        self.kinesis = KinesisRecordWriter(self.clients.kinesis, outputs.kinesis.stream,
                                           linger_ms=outputs.kinesis.linger_ms,
                                           max_retries=outputs.kinesis.max_retries)
        self.s3 = (S3ObjectWriter(self.clients.s3, outputs.s3.bucket,
                                  concurrency=outputs.s3.upload_concurrency)
                   if outputs.s3 is not None else None)
        self.store = CheckpointStore(self.clients.dynamodb, config.checkpoint.table,
                                     config.checkpoint.worker_id)
        self.checkpointer = Checkpointer(self.store, config.checkpoint.min_interval_seconds)
        self.events = EventStage(config.events, {"Name": processor.name,
                                                 "Model": processor.model,
                                                 "ModelVersion": processor.model_version},
                                 self.kinesis, self.s3, outputs.s3, self.clients.s3)
        self.outputs = OutputStage(processor, self.kinesis, self.s3, outputs.s3,
                                   fetch=self._fetch_object, events=self.events)
        self.tracker = FragmentLedger(self.checkpointer.completed,
                                       self.outputs.fragment_analysed)
        per_worker = max(1, config.processing.queue_frames // len(self.processors))
        self.analyzers = [
            Analyzer(each, queue.Queue(maxsize=per_worker), self.outputs.emit,
                     config.processing.batch_size, config.processing.batch_wait_ms)
            for each in self.processors]
        self.workers: dict[str, StreamWorker] = {}
        self.started = time.monotonic()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> "ConsumerService":
        self.store.ensure_table()
        self.checkpointer.start()
        for analyzer in self.analyzers:
            analyzer.start()
        self.refresh_streams()
        return self

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set: re-list streams and log status periodically."""
        next_list = time.monotonic() + self.config.streams.relist_seconds
        next_status = time.monotonic() + self.config.logging.status_seconds
        while not stop.wait(0.2):
            now = time.monotonic()
            if now >= next_list:
                self.refresh_streams()
                next_list = now + self.config.streams.relist_seconds
            if now >= next_status:
                for line in status_lines(self):
                    log.info("%s", line)
                next_status = now + self.config.logging.status_seconds
            self._let_go_of_gone_streams()
            if self.outputs.windows is not None:
                self.outputs.windows.flush_idle()
            self.events.flush()

    def shutdown(self) -> bool:
        """Drain and flush within the configured budget; True if everything was flushed."""
        deadline = time.monotonic() + self.config.shutdown_seconds
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.join(max(0.1, min(2.0, deadline - time.monotonic())))
        drained = all([analyzer.drain(max(0.1, deadline - time.monotonic() - 2.0))
                       for analyzer in self.analyzers])
        for analyzer in self.analyzers:
            analyzer.stop(1.0)
        if self.outputs.windows is not None:
            self.outputs.windows.flush_all()
        self.events.flush(force=True)  # clips still waiting for their post-roll: as they are
        remaining = max(0.5, deadline - time.monotonic() - 0.5)
        flushed = self.kinesis.close(timeout=remaining / 2)
        if self.s3 is not None:
            flushed = self.s3.close(timeout=max(0.25, deadline - time.monotonic() - 0.5)) \
                and flushed
        self.checkpointer.stop()
        log.info("shut down: %s; checkpoints %s", "drained" if drained and flushed
                 else "some work left for the next run", self.checkpointer.saved)
        return bool(drained and flushed)

    def _fetch_object(self, key: str) -> bytes | None:
        """An object this consumer wrote before (a pose window to merge), or None."""
        try:
            response = self.clients.s3.get_object(Bucket=self.config.outputs.s3.bucket, Key=key)
        except self.clients.s3.exceptions.NoSuchKey:
            return None
        return response["Body"].read()

    @property
    def frames_analysed(self) -> int:
        return sum(analyzer.frames for analyzer in self.analyzers)

    def stats(self) -> dict:
        """Counters for a stats file or a benchmark: per stream, analysis, writers, API calls."""
        streams = {}
        for name, worker in self.workers.items():
            st = worker.stats
            streams[name] = {
                "fragments": st.fragments, "frames_decoded": st.frames_decoded,
                "frames_analysed": st.frames_analysed, "frames_skipped": st.frames_skipped,
                "persons": st.persons, "decode_errors": st.decode_errors,
                "events": worker.events.raised if worker.events is not None else 0,
                "millis_behind_now": st.millis_behind_now, "lag_p50": st.lag_percentile(0.5),
                "lag_max": st.lag_percentile(1.0),
                "checkpoint": str(self.checkpointer.saved.get(worker.arn) or "") or None}
        return {
            "elapsed_seconds": time.monotonic() - self.started,
            "streams": streams,
            "analysis": {"workers": len(self.analyzers), "frames": self.frames_analysed,
                         "batches": sum(a.batches for a in self.analyzers),
                         "mixed_batches": sum(a.mixed_batches for a in self.analyzers),
                         "busy_seconds": sum(a.busy_seconds for a in self.analyzers)},
            "kinesis": vars(self.kinesis.stats()),
            "s3": vars(self.s3.stats()) if self.s3 is not None else None,
            "checkpoint_writes": self.checkpointer.writes,
            "api_calls": self.clients.calls.snapshot(),
        }

    # --- streams ---------------------------------------------------------------------------

    def refresh_streams(self) -> None:
        try:
            found = discover(self.clients.kvs.client("kinesisvideo"), self.config.streams)
        except Exception as err:  # listing failed: keep what runs, try again later
            log.warning("could not list streams: %s", err)
            return
        for name, arn in found.items():
            if name not in self.workers:
                self._start_worker(name, arn)

    def _start_worker(self, name: str, arn: str) -> None:
        try:
            self.store.acquire(arn)
        except LeaseConflict as err:
            log.info("stream %s: %s; not reading it", name, err)
            return
        checkpoint = self.store.get(arn)
        if checkpoint is not None and self.config.outputs.kinesis.dedupe_on_resume:
            self._load_delivered(name, arn, checkpoint)
        source = MediaSource(self.clients.kvs, name, arn, start=self.config.streams.start.value,
                             after_fragment=checkpoint)
        settings = self.config.streams.settings_for(name)
        analyzer = self.analyzers[len(self.workers) % len(self.analyzers)]
        tracking = self.config.processing.tracking
        self.workers[name] = StreamWorker(
            name, arn, source, settings, self.tracker, analyzer.work,
            PersonTracker(tracking) if tracking.enabled else None,
            self.events.camera(name)).start()
        log.info("stream %s: reading from %s (sampling %s, policy %s)", name,
                 f"after checkpoint {checkpoint}" if checkpoint else self.config.streams.start.value,
                 settings.sampling.mode.value, settings.policy.value)

    def _load_delivered(self, name: str, arn: str, checkpoint: int) -> None:
        since = (self.store.updated_at(arn) or time.time()) - REPLAY_MARGIN_SECONDS
        try:
            delivered = delivered_record_ids(self.clients.kinesis, self.config.outputs.kinesis.stream,
                                             name, since)
        except Exception as err:
            log.warning("stream %s: could not read back delivered records (%s); a replay may "
                        "repeat some record ids", name, err)
            return
        self.outputs.already_delivered[arn] = delivered
        log.info("stream %s: %d records already delivered after checkpoint %s will not be "
                 "sent again", name, len(delivered), checkpoint)

    def _let_go_of_gone_streams(self) -> None:
        for name, worker in list(self.workers.items()):
            if worker.gone:
                worker.join(1.0)
                del self.workers[name]
                self.events.forget(name)
                log.info("stream %s: let go", name)
