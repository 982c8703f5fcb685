"""The analysis stage: frames from every stream, batched, through the processor, to the outputs.

A batch is up to `batch_size` frames or whatever arrived within `batch_wait_ms` of the first, so
a GPU processor gets many cameras' frames in one call while a lone camera is not held back.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from consumer.config import LagPolicy
from consumer.streams.session import WorkItem
from processors.base import Processor

log = logging.getLogger(__name__)


class Analyzer:
    def __init__(self, processor: Processor, work: queue.Queue, emit, batch_size: int,
                 batch_wait_ms: float):
        self.processor = processor
        self.work = work
        self.emit = emit  # callable(WorkItem, FrameResult)
        self.batch_size = min(batch_size, processor.max_batch)
        self.batch_wait = batch_wait_ms / 1000
        self.batches = 0
        self.frames = 0
        self.mixed_batches = 0  # batches with frames of more than one stream
        self.busy_seconds = 0.0
        self._taken = 0  # items taken off the queue for the current batch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="analysis", daemon=True)

    def start(self) -> "Analyzer":
        self._thread.start()
        return self

    def drain(self, timeout: float) -> bool:
        """Wait until every queued frame is analysed; False if the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # counts a frame from put() until its task_done(), so a frame taken off the queue
            # but not yet through the processor is still waited for
            if self.work.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._next_batch()
            try:
                if batch:
                    self._analyse(batch)
            finally:
                for _ in range(self._taken):
                    self.work.task_done()
                self._taken = 0

    def _next_batch(self) -> list[WorkItem]:
        try:
            first = self.work.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.work.get(timeout=remaining) if remaining > 0
                             else self.work.get_nowait())
            except queue.Empty:
                break
        self._taken = len(batch)
        return [item for item in batch if not self._stale(item)]

    @staticmethod
    def _stale(item: WorkItem) -> bool:
        settings = item.settings
        if settings.policy is not LagPolicy.REALTIME:
            return False
        if time.time() - item.frame.source.producer_time <= settings.max_lag_seconds:
            return False
        item.stats.frames_skipped += 1
        item.ticket.frame_skipped()
        return True

    def _analyse(self, batch: list[WorkItem]) -> None:
        started = time.perf_counter()
        try:
            results = self.processor.process([item.frame for item in batch])
        except Exception:
            log.exception("processor %s failed on a batch of %d frames; their fragments "
                          "will be re-read after a restart", self.processor.name, len(batch))
            for item in batch:
                item.ticket.frame_abandoned()
            return
        self.busy_seconds += time.perf_counter() - started
        self.batches += 1
        self.frames += len(batch)
        self.mixed_batches += len({item.frame.source.stream_arn for item in batch}) > 1
        for item, result in zip(batch, results, strict=True):  # the Processor contract
            try:
                self.emit(item, result)
            except Exception:
                log.exception("stream %s: building outputs failed", item.frame.source.stream_name)
                item.ticket.frame_abandoned()
