"""Frame records to Kinesis Data Streams: batched PutRecords, in order per partition key.

Contract of `KinesisRecordWriter`:
- `put()` is thread-safe and never drops a record silently: every record's `on_done` is called
  exactly once, with True once KDS acknowledged it, or False if it was rejected (over 1 MiB, bad
  partition key: logged with the reason), failed more than `max_retries` times, or was still
  queued when `close()` ran out of time. Callbacks run on the writer's thread; keep them short.
- A full buffer blocks `put()`: that is the backpressure that reaches the pipeline.
- Batches hold at most 500 records and 5 MiB (data + partition keys); one is sent as soon as a
  full batch is waiting, a flush is asked for, the oldest record has waited `linger_ms`, or a
  `nudge()` came after it was queued (a fragment's records are all put: waiting longer would
  only add latency; records queued meanwhile by other streams ride along).
- Failed records of a partial failure go back to the head of the queue, in their original
  order, so nothing newer for their partition key is sent before them. KDS may still accept a
  later record of a key in the same call as a failed one; that record then lands first (counted
  in `reordered`), and the key is sent one record per call for `careful_seconds` afterwards so
  it does not happen again while its shard is struggling (KDS's shard limits are
  per second, hence the 1 s default). Records carry FragmentNumber and
  FrameIndex, so readers can always restore the exact order.
- Throttling (ProvisionedThroughputExceededException and kin, per record or for the whole call)
  slows the writer down (the shared Backoff, growing while throttling lasts) and is not counted
  against `max_retries`: it is backpressure, not failure. Other errors are retried with the same
  Backoff: forever while the writer runs (`max_retries=None`, the default: an outage delays the
  checkpoint, never freezes it; the full buffer is the backpressure), or up to `max_retries`
  times per record.
- Fencing: a record put with `admit` is sent only if `admit()` still holds just before its
  PutRecords call; otherwise it gets on_done(False) (counted in `fenced`). A stream session
  passes its own "do I still own the stream?", so a worker that lost a stream, or a session that
  was replaced, stops emitting even the records it queued before it knew.
- Stage times (`stage_times`): per record sent, how long it waited from `put()` to the start of
  its PutRecords call (a retried record: to the call that sends it again) and that call's
  duration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from botocore.exceptions import ClientError

from consumer.cloud.backoff import Backoff
from consumer.pipeline.stage_times import KDS_CALL, KDS_LINGER, StageTimes
from consumer.sinks.batch_queue import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_RECORD_BYTES,
    BatchQueue,
    Entry,
    RecordRejected,
    record_size,
)

log = logging.getLogger(__name__)

THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                            "LimitExceededException", "KMSThrottlingException",
                            "RequestLimitExceeded"})
__all__ = ["MAX_BATCH_BYTES", "MAX_BATCH_RECORDS", "MAX_RECORD_BYTES", "KinesisRecordWriter",
           "RecordRejected", "WriterStats"]


@dataclass
class WriterStats:
    records_sent: int = 0
    bytes_sent: int = 0
    calls: int = 0  # PutRecords calls made
    retries: int = 0  # records sent again, for any reason
    throttles: int = 0  # records throttled (a throttled call counts each of its records)
    failures: int = 0  # records finally failed or rejected (on_done(False))
    rejected: int = 0  # of which rejected by put() without being sent
    reordered: int = 0  # records KDS accepted after an earlier one of their key failed
    pending: int = 0  # queued or in flight now
    fenced: int = 0  # records not sent because their stream's lease was lost


class KinesisRecordWriter:
    """Batches records into PutRecords calls on one background thread (see module doc)."""

    def __init__(self, client, stream_name: str, linger_ms: float = 200.0,
                 max_retries: int | None = None, backoff: Backoff | None = None, *,
                 max_buffered_records: int = 10_000,
                 max_buffered_bytes: int = 64 * 1024 * 1024, careful_seconds: float = 1.0,
                 stage_times: StageTimes | None = None):
        self._client = client
        self.stream_name = stream_name
        self._linger = linger_ms / 1000.0
        self._max_retries = max_retries
        self._backoff = backoff or Backoff()
        self._max_records = max(1, max_buffered_records)
        self._max_bytes = max(MAX_RECORD_BYTES, max_buffered_bytes)
        self._cond = threading.Condition()
        self._queue = BatchQueue(careful_seconds)
        self._in_flight = 0
        self._flushers = 0
        self._nudged_at = float("-inf")  # records queued before this need not linger
        self._closing = False
        self._aborted = False
        self._resume_at = 0.0  # monotonic time before which no call is made (slow-down)
        self._streak = 0  # consecutive calls with throttling or errors
        self._stats = WriterStats()
        self._times = stage_times if stage_times is not None else StageTimes()
        self._thread = threading.Thread(target=self._run, name=f"kds-writer-{stream_name}",
                                        daemon=True)
        self._thread.start()

    def put(self, data: bytes, partition_key: str, on_done: Callable[[bool], None],
            admit: Callable[[], bool] | None = None) -> None:
        """Queue one record; blocks while the buffer is full. RuntimeError once closed.
        `admit`: the fence, asked just before the record is sent (see module doc)."""
        try:
            size = record_size(data, partition_key)
        except RecordRejected as err:
            log.error("Kinesis stream %s: record rejected: %s", self.stream_name, err)
            with self._cond:
                self._stats.rejected += 1
                self._stats.failures += 1
            _call(on_done, False)
            return
        with self._cond:
            while not self._closing and self._queue and (
                    len(self._queue) >= self._max_records
                    or self._queue.bytes + size > self._max_bytes):
                self._cond.wait()
            if self._closing:
                raise RuntimeError(f"Kinesis writer for {self.stream_name} is closed")
            self._queue.append(Entry(bytes(data), partition_key, on_done, size,
                                     time.monotonic(), admit=admit))
            self._cond.notify_all()

    def nudge(self) -> None:
        """Send what is queued now without waiting for the linger (never blocks)."""
        with self._cond:
            self._nudged_at = time.monotonic()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued now, ignoring the linger; True once all was settled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flushers += 1
            self._cond.notify_all()
            try:
                while self._queue or self._in_flight:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return False
                    self._cond.wait(remaining)
                return True
            finally:
                self._flushers -= 1

    def close(self, timeout: float | None = None) -> bool:
        """Drain and stop. Records still queued at the timeout get on_done(False); False then."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            return True
        with self._cond:
            self._aborted = True
            left = self._queue.drain()
            self._stats.failures += len(left)
            self._cond.notify_all()
        if left:
            log.error("Kinesis stream %s: %d records not sent before close timed out",
                      self.stream_name, len(left))
        for entry in left:
            _call(entry.on_done, False)
        return False

    @property
    def alive(self) -> bool:
        """The writer thread runs (for the health endpoint)."""
        return self._thread.is_alive()

    def stats(self) -> WriterStats:
        """A snapshot of the counters, for status logs."""
        with self._cond:
            snapshot = WriterStats(**vars(self._stats))
            snapshot.pending = len(self._queue) + self._in_flight
            return snapshot

    # The writer thread.

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
                if batch is None:
                    return
                self._in_flight = len(batch)
                self._cond.notify_all()  # room in the buffer for blocked put() calls
            try:
                done = self._send(batch)
            except Exception:  # a bug must not kill the thread and strand every callback
                log.exception("Kinesis stream %s: unexpected error in the writer",
                              self.stream_name)
                done = self._settle(batch, [("error", None)] * len(batch), time.monotonic())
            for on_done, ok in done:
                _call(on_done, ok)
            with self._cond:
                self._in_flight = 0  # after the callbacks: a flush() that returns saw them all
                self._cond.notify_all()

    def _next_batch(self) -> list[Entry] | None:
        """Wait (holding the condition) until a batch is due; None when closed and drained."""
        while True:
            if self._aborted or (self._closing and not self._queue):
                return None
            if not self._queue:
                self._cond.wait()
                continue
            now = time.monotonic()
            if now < self._resume_at:
                self._cond.wait(self._resume_at - now)
                continue
            oldest = self._queue.oldest().enqueued
            due_at = oldest + self._linger
            if not (self._queue.full() or self._flushers or self._closing or now >= due_at
                    or oldest <= self._nudged_at):
                self._cond.wait(due_at - now)
                continue
            return self._queue.take(now)

    def _send(self, batch: list[Entry]) -> list[tuple[Callable[[bool], None], bool]]:
        verdicts: dict[int, bool] = {}  # one question per fence per batch
        admitted = [e.admit is None or verdicts.setdefault(id(e.admit), e.admit())
                    for e in batch]
        fenced = [(e.on_done, False) for e, ok in zip(batch, admitted) if not ok]
        if fenced:
            batch = [e for e, ok in zip(batch, admitted) if ok]
            with self._cond:
                self._stats.fenced += len(fenced)
            if not batch:
                return fenced
        return fenced + self._put_records(batch)

    def _put_records(self, batch: list[Entry]) -> list[tuple[Callable[[bool], None], bool]]:
        records = [{"Data": e.data, "PartitionKey": e.key} for e in batch]
        try:
            response = self._timed_put_records(batch, records)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            kind = "throttle" if code in THROTTLE_CODES else "error"
            log.log(logging.DEBUG if kind == "throttle" else logging.WARNING,
                    "Kinesis stream %s: PutRecords of %d records failed: %s",
                    self.stream_name, len(batch), code or err)
            return self._settle(batch, [(kind, code)] * len(batch), time.monotonic(), call=True)
        except Exception as err:  # noqa: BLE001 - connection errors, timeouts: retried
            log.warning("Kinesis stream %s: PutRecords of %d records failed: %s",
                        self.stream_name, len(batch), err)
            return self._settle(batch, [("error", None)] * len(batch), time.monotonic(),
                                call=True)
        outcomes = []
        for result in response.get("Records", []):
            code = result.get("ErrorCode")
            outcomes.append(("ok", None) if not code else
                            ("throttle" if code in THROTTLE_CODES else "error", code))
        if len(outcomes) != len(batch):  # never expected; retry what we cannot account for
            outcomes += [("error", "MissingResult")] * (len(batch) - len(outcomes))
        return self._settle(batch, outcomes, time.monotonic(), call=True, partial=True)

    def _timed_put_records(self, batch: list[Entry], records: list[dict]) -> dict:
        started = time.monotonic()
        for entry in batch:
            self._times.add(KDS_LINGER, started - entry.enqueued)
        try:
            return self._client.put_records(StreamName=self.stream_name, Records=records)
        finally:
            self._times.add(KDS_CALL, time.monotonic() - started, len(batch))

    def _settle(self, batch: list[Entry], outcomes: list[tuple[str, str | None]], now: float,
                call: bool = False, partial: bool = False
                ) -> list[tuple[Callable[[bool], None], bool]]:
        """Count, pace, requeue the retriable in order; return the callbacks to run.

        `partial`: outcomes are per record (a PutRecords response), so a key may have had
        records both accepted and refused; such keys go careful. A whole call that failed
        reordered nothing, so it only slows the writer down.
        """
        done: list[tuple[Callable[[bool], None], bool]] = []
        retry: list[Entry] = []
        failed_keys: set[str] = set()
        with self._cond:
            stats = self._stats
            stats.calls += int(call)
            for entry, (kind, code) in zip(batch, outcomes):
                if kind == "ok":
                    stats.records_sent += 1
                    stats.bytes_sent += entry.size
                    stats.reordered += entry.key in failed_keys
                    done.append((entry.on_done, True))
                    continue
                failed_keys.add(entry.key)
                if kind == "throttle":
                    stats.throttles += 1
                else:
                    entry.attempts += 1
                if self._aborted or (self._max_retries is not None
                                     and entry.attempts > self._max_retries):
                    stats.failures += 1
                    log.error("Kinesis stream %s: record failed after %d attempts (%s)",
                              self.stream_name, entry.attempts, code)
                    done.append((entry.on_done, False))
                else:
                    stats.retries += 1
                    retry.append(entry)
            if partial:
                self._queue.mark_careful(failed_keys, now)
            # Pace the next call: a struggling stream is given time, growing while it lasts.
            self._streak = self._streak + 1 if failed_keys else 0
            if failed_keys:
                self._resume_at = now + self._backoff.delay(self._streak)
            self._queue.requeue(retry)
        return done


def _call(on_done: Callable[[bool], None], ok: bool) -> None:
    try:
        on_done(ok)
    except Exception:  # one bad callback must not stop the writer
        log.exception("on_done callback raised")
