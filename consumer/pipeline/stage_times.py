"""Where a frame's time goes: durations per pipeline stage, recorded always, from any thread.

    times = StageTimes()
    times.add(QUEUE_WAIT, taken - request.enqueued)     # seconds
    times.add(INFERENCE, call_seconds, count=len(batch))  # one call, attributed to each frame
    times.snapshot()  # {stage: {"count", "mean", "p50", "p90", "max", "histogram"}}, seconds

Contract:
- `add()` is thread-safe and cheap enough to be always on: a lock, a log10 and an integer
  increment; after a stage's first sample it allocates nothing. A sample with `count` n counts
  as n samples of that duration (a batch's processor call attributed to each of its frames).
- Each stage is a fixed histogram, `BUCKETS_PER_DECADE` log-spaced buckets from `LOWEST` to
  `HIGHEST` seconds (shorter and longer samples fall in the end buckets; `max` stays exact), so
  memory is bounded whatever the run's length, and a percentile is the geometric middle of its
  bucket: within about 6 % of the true value. Counts run from the process's start (no window).
- `snapshot()` is plain JSON data; `merge()` combines the snapshots of several processes (the
  benchmark's naive consumers, `consumer run --processes N`) exactly, bucket by bucket.
- The times a frame needs to carry between threads travel with it as plain data (an enqueue
  time on the analysis request, a routing time on the result, a put time on the writer's entry);
  the recorder is only ever written to, so no stage reaches back up the pipeline.

`STAGES` names the consumer's stages in pipeline order with what each measures; `PATH` those a
frame's record waits through on its way to Kinesis (their p50s roughly add up to its latency).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

ARRIVAL = "arrival"
DECODE = "decode"
DECODE_FRAME = "decode_frame"
QUEUE_WAIT = "queue_wait"
BATCH_WAIT = "batch_wait"
INFERENCE = "inference"
INFERENCE_FRAME = "inference_frame"
HANDLER_WAIT = "handler_wait"
RECORD_BUILD = "record_build"
JPEG_ENCODE = "jpeg_encode"
KDS_LINGER = "kds_linger"
KDS_CALL = "kds_call"
S3_CALL = "s3_call"
ACK_WAIT = "ack_wait"
CHECKPOINT_WAIT = "checkpoint_wait"

STAGES = {  # name -> what it measures (per what)
    ARRIVAL: "fragment fully read from GetMedia - producer time of its last frame (per fragment)",
    DECODE: "the fragment's decode: frames through the codec, sampled ones to RGB (per fragment)",
    DECODE_FRAME: "decode per decoded frame: the fragment's decode / its frames (per fragment)",
    QUEUE_WAIT: "decoded -> taken into a batch, waiting for room included (per analysed frame)",
    BATCH_WAIT: "taken -> its batch closed (batch_size, batch_wait_ms) (per analysed frame)",
    INFERENCE: "the processor call of the frame's batch (per analysed frame)",
    INFERENCE_FRAME: "processor call / frames in the batch: the cost of a frame (per batch)",
    HANDLER_WAIT: "result routed -> handled on the stream's own thread (per analysed frame)",
    RECORD_BUILD: "tracking, events, JPEG, record, hand-off to the writers (per analysed frame)",
    JPEG_ENCODE: "JPEG encoding, annotation included (per JPEG)",
    KDS_LINGER: "record put -> its PutRecords call starts (per record sent)",
    KDS_CALL: "the PutRecords call (per record sent)",
    S3_CALL: "the PutObject call (per object; not on a record's path)",
    ACK_WAIT: "writer's acknowledgement -> settled on the stream's thread (per acknowledgement)",
    CHECKPOINT_WAIT: "fragment durable -> its checkpoint written to the table (per fragment)",
}
PATH = (ARRIVAL, DECODE, QUEUE_WAIT, BATCH_WAIT, INFERENCE, HANDLER_WAIT, RECORD_BUILD,
        KDS_LINGER, KDS_CALL)

LOWEST = 1e-6  # seconds: the first bucket's lower bound
HIGHEST = 1e4
BUCKETS_PER_DECADE = 20
BUCKETS = round(math.log10(HIGHEST / LOWEST) * BUCKETS_PER_DECADE)
_LOG_LOWEST = math.log10(LOWEST)


def bucket_of(seconds: float) -> int:
    """The histogram bucket of a duration (clamped to the first and last buckets)."""
    if seconds <= LOWEST:
        return 0
    index = int((math.log10(seconds) - _LOG_LOWEST) * BUCKETS_PER_DECADE)
    return index if index < BUCKETS else BUCKETS - 1


def bucket_middle(index: int) -> float:
    """The geometric middle of a bucket, in seconds."""
    return 10 ** (_LOG_LOWEST + (index + 0.5) / BUCKETS_PER_DECADE)


class _Stage:
    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self):
        self.buckets = [0] * BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0


class StageTimes:
    """Thread-safe recorder of durations per stage name (see module doc)."""

    def __init__(self):
        self._stages: dict[str, _Stage] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        """Record `count` samples of `seconds` (negative durations count as 0)."""
        if count <= 0:
            return
        seconds = max(0.0, seconds)
        index = bucket_of(seconds)
        with self._lock:
            entry = self._stages.get(stage)
            if entry is None:
                entry = self._stages[stage] = _Stage()
            entry.buckets[index] += count
            entry.count += count
            entry.total += seconds * count
            entry.max = max(entry.max, seconds)

    def snapshot(self) -> dict[str, dict]:
        """Per stage: count, mean, p50, p90, max (seconds) and the sparse histogram."""
        with self._lock:
            copies = {name: (list(s.buckets), s.count, s.total, s.max)
                      for name, s in self._stages.items()}
        return {name: summary(buckets, count, total, top)
                for name, (buckets, count, total, top) in copies.items()}


def summary(buckets: list[int], count: int, total: float, top: float) -> dict:
    """A stage's JSON figures from its dense histogram."""
    return {"count": count, "mean": total / count if count else None,
            "p50": percentile(buckets, count, 0.5, top),
            "p90": percentile(buckets, count, 0.9, top), "max": top,
            "histogram": [[i, n] for i, n in enumerate(buckets) if n]}


def percentile(buckets: list[int], count: int, fraction: float, top: float) -> float | None:
    """Nearest-rank percentile: the middle of the bucket holding it, never above the max."""
    if count <= 0:
        return None
    rank = max(1, math.ceil(fraction * count))
    seen = 0
    for index, n in enumerate(buckets):
        seen += n
        if seen >= rank:
            return min(bucket_middle(index), top)
    return top


def merge(snapshots: Iterable[dict[str, dict] | None]) -> dict[str, dict]:
    """One snapshot from several (None and missing stages are skipped): histograms add up."""
    dense: dict[str, list] = {}
    for snapshot in snapshots:
        for name, figures in (snapshot or {}).items():
            buckets, count, total, top = dense.setdefault(name, [[0] * BUCKETS, 0, 0.0, 0.0])
            for index, n in figures.get("histogram", []):
                buckets[int(index)] += n
            dense[name][1] = count + figures["count"]
            dense[name][2] = total + (figures["mean"] or 0.0) * figures["count"]
            dense[name][3] = max(top, figures["max"] or 0.0)
    return {name: summary(*values) for name, values in dense.items()}
