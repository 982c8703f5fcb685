"""The analysis stage: frames from every stream, batched, through the processor, results back.

Shared by the streams and holding none of their state: a request is data (the frame, with its
provenance, the session it comes from, and the time after which it is too stale to analyse);
each result goes back by that session's key through `route`, to be handled on the session's own
thread. Several workers may take from one queue, so one stream's results can come back out of
order: each carries its request's `seq`, by which the session restores the order. A batch is up to `batch_size` frames or whatever arrived within `batch_wait_ms` of the
first, so a GPU processor gets many cameras' frames in one call while a lone camera is not held
back.

Stage times (`consumer.pipeline.stage_times`), per analysed frame: queue wait (the request's
`enqueued` -> taken into a batch), batch wait (taken -> the batch closed), inference (the batch's
processor call); per batch the call's cost per frame. Each result carries the time it was routed,
so the session can tell how long it waited to be handled.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from consumer.pipeline.stage_times import (
    BATCH_WAIT,
    INFERENCE,
    INFERENCE_FRAME,
    QUEUE_WAIT,
    StageTimes,
)
from processors.base import FrameResult, Processor
from processors.frames import VideoFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AnalysisRequest:
    session: int  # the key results are routed back by
    frame: VideoFrame
    stale_after: float | None = None  # wall-clock time after which it is skipped (real-time)
    enqueued: float = 0.0  # time.perf_counter() when the frame was ready for the queue; 0: unknown
    seq: int = 0  # the frame's place in its stream's submissions; its outcome carries it back


@dataclass(frozen=True, slots=True)
class Analysed:
    frame: VideoFrame
    result: FrameResult
    routed: float = 0.0  # time.perf_counter() when it was sent back; 0: unknown
    seq: int = 0  # the request's


@dataclass(frozen=True, slots=True)
class NotAnalysed:
    frame: VideoFrame
    # from the analysis: "stale" (skipped by the real-time policy), "failed" (the processor
    # raised); from the session's reader: "skipped" (no room), "abandoned" (shutting down)
    reason: str
    seq: int = 0  # the request's


Route = Callable[[int, object], None]  # (session key, Analysed | NotAnalysed)


class Analyzer:
    def __init__(self, processor: Processor, work: queue.Queue, route: Route, batch_size: int,
                 batch_wait_ms: float, stage_times: StageTimes | None = None):
        self.processor = processor
        self.times = stage_times if stage_times is not None else StageTimes()
        self.work = work
        self.route = route
        self.batch_size = min(batch_size, processor.max_batch)
        self.batch_wait = batch_wait_ms / 1000
        self.batches = 0
        self.frames = 0
        self.mixed_batches = 0  # batches with frames of more than one stream
        self.busy_seconds = 0.0
        self.batch_sizes: Counter[int] = Counter()  # frames in a batch -> batches analysed
        self.failures = 0  # batches the processor raised on
        self._taken = 0  # items taken off the queue for the current batch
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="analysis", daemon=True)

    def start(self) -> Analyzer:
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

    @property
    def alive(self) -> bool:
        """The worker thread runs (for the health endpoint)."""
        return self._thread.is_alive()

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

    def _next_batch(self) -> list[AnalysisRequest]:
        try:
            first = self.work.get(timeout=0.1)
        except queue.Empty:
            return []
        batch = [first]
        taken = [time.perf_counter()]  # when each request left the queue
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.batch_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self.work.get(timeout=remaining) if remaining > 0
                             else self.work.get_nowait())
            except queue.Empty:
                break
            taken.append(time.perf_counter())
        self._taken = len(batch)
        closed = time.perf_counter()
        now = time.time()
        fresh = []
        for request, at in zip(batch, taken):
            if request.stale_after is not None and now > request.stale_after:
                self.route(request.session, NotAnalysed(request.frame, "stale", request.seq))
            else:
                fresh.append(request)
                if request.enqueued:
                    self.times.add(QUEUE_WAIT, at - request.enqueued)
                self.times.add(BATCH_WAIT, closed - at)
        return fresh

    def _analyse(self, batch: list[AnalysisRequest]) -> None:
        started = time.perf_counter()
        try:
            results = self.processor.process([request.frame for request in batch])
        except Exception:
            log.exception("processor %s failed on a batch of %d frames; their fragments "
                          "will be re-read after a restart", self.processor.name, len(batch))
            self.failures += 1
            for request in batch:
                self.route(request.session, NotAnalysed(request.frame, "failed", request.seq))
            return
        routed = time.perf_counter()
        call = routed - started
        self.busy_seconds += call
        self.times.add(INFERENCE, call, count=len(batch))  # every frame waited the whole call
        self.times.add(INFERENCE_FRAME, call / len(batch))
        self.batches += 1
        self.batch_sizes[len(batch)] += 1
        self.frames += len(batch)
        self.mixed_batches += len({r.frame.source.stream_arn for r in batch}) > 1
        for request, result in zip(batch, results, strict=True):  # the Processor contract
            self.route(request.session, Analysed(request.frame, result, routed, request.seq))
