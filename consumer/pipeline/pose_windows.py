"""Pose sequences per window of producer time (`outputs.s3.pose_window_seconds` > 0).

A Parquet file costs ~3-4 KB however few rows it holds, so at sparse sampling one file per
fragment is larger than the data; a window of several fragments amortises it. Windows are
aligned to producer time (a fragment belongs to the window of its producer timestamp), so the
key of a window does not depend on where a run started. Each flush rewrites the window's file
with every row gathered so far (the same key, a superset), and the first flush of a window in a
run merges what an earlier run wrote there for other fragments: a replay after a crash, or a
flush on idle followed by more fragments, never loses rows. A window's file has the hand
columns (consumer.formats.pose_sequence) once any of its frames, or the earlier run's file,
has them; rows without a hand carry nulls there.

A fragment owes one output to its window until a flush that includes it is durable, so its
checkpoint waits for the window: a window is flushed when the stream's next window begins, when
it has been idle for a window length, and at shutdown.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from consumer.formats import pose_sequence, s3_layout
from consumer.pipeline.ledger import FragmentTicket

Fetch = Callable[[str], "bytes | None"]


@dataclass
class _Window:
    key: str
    stream_name: str
    stream_arn: str
    start: float
    items: list = field(default_factory=list)
    fragments: set[str] = field(default_factory=set)
    waiting: list[FragmentTicket] = field(default_factory=list)
    base: pa.Table | None = None  # rows an earlier run wrote for other fragments
    merged: bool = False
    touched: float = field(default_factory=time.monotonic)


class PoseWindows:
    def __init__(self, seconds: float, prefix: str, s3, fetch: Fetch, metadata: dict[str, str],
                 landmark_set: str = pose_sequence.LANDMARK_SET):
        self.seconds = seconds
        self.landmark_set = landmark_set
        self.prefix = prefix
        self.s3 = s3  # consumer.sinks.s3.S3ObjectWriter
        self.fetch = fetch  # key -> existing object bytes, or None
        self.metadata = metadata
        self.flushes = 0
        self._windows: dict[tuple[str, float], _Window] = {}
        self._lock = threading.Lock()

    def add(self, ticket: FragmentTicket) -> None:
        """A fragment is fully analysed: its rows join their window."""
        first = ticket.analysed[0][0]
        start = math.floor(first.producer_timestamp / self.seconds) * self.seconds
        ticket.output_added()
        with self._lock:
            window = self._windows.get((first.stream_arn, start))
            if window is None:
                key = s3_layout.pose_window_key(self.prefix, first.stream_name, start,
                                                self.seconds)
                window = _Window(key, first.stream_name, first.stream_arn, start)
                self._windows[(first.stream_arn, start)] = window
            window.items.extend(ticket.analysed)
            window.fragments.add(str(first.fragment_number))
            window.waiting.append(ticket)
            window.touched = time.monotonic()
            older = [k for k in self._windows if k[0] == first.stream_arn and k[1] < start]
        for key in older:
            self._flush(key, drop=True)

    def flush_idle(self) -> None:
        """Flush windows that gathered nothing for a window length (a stalled camera)."""
        now = time.monotonic()
        with self._lock:
            idle = [k for k, w in self._windows.items()
                    if w.waiting and now - w.touched >= self.seconds]
        for key in idle:
            self._flush(key, drop=False)

    def flush_all(self) -> None:
        with self._lock:
            keys = list(self._windows)
        for key in keys:
            self._flush(key, drop=True)

    def _flush(self, key: tuple[str, float], drop: bool) -> None:
        with self._lock:
            window = self._windows.pop(key, None) if drop else self._windows.get(key)
            if window is None or not window.waiting:
                return
            waiting, window.waiting = window.waiting, []
            items, fragments = list(window.items), set(window.fragments)
            first_flush = not window.merged
            window.merged = True
        table = pose_sequence.pose_sequence_table(items, self.landmark_set)
        if first_flush:
            existing = self.fetch(window.key)
            if existing:
                merged = pose_sequence.merge_pose_tables(existing, table, fragments)
                window.base = merged.slice(0, merged.num_rows - table.num_rows)
        if window.base is not None:
            table = pose_sequence.concat_pose_tables([window.base, table])
        body = pose_sequence.write_pose_table(table, metadata=self.metadata)
        metadata = s3_layout.window_metadata(window.stream_name, window.stream_arn,
                                             window.start, self.seconds)

        def done(ok: bool) -> None:
            for ticket in waiting:
                ticket.output_done(ok)
        self.flushes += 1
        self.s3.put(window.key, body, "application/vnd.apache.parquet", metadata, done)
