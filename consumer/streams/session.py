"""One thread per stream: GetMedia -> fragments -> decoder -> the shared analysis queue.

Lossless policy: a full analysis queue blocks this thread, and with it the GetMedia read
(backpressure). Real-time policy: frames older than `max_lag_seconds`, or that find the queue
full, are skipped; their fragment still completes, so checkpoints advance in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from consumer.cloud.media_source import MediaSource, StreamGone
from consumer.config import LagPolicy, StreamSettings
from consumer.pipeline.decode import DecodeError, StreamDecoder
from consumer.pipeline.event_stage import CameraEventState
from consumer.streams.ledger import FragmentTicket, FragmentLedger
from processors.frames import VideoFrame
from processors.tracking import PersonTracker

log = logging.getLogger(__name__)
DECODE_WARNING_INTERVAL = 60.0


@dataclass
class StreamStats:
    fragments: int = 0
    frames_decoded: int = 0
    frames_queued: int = 0
    frames_skipped: int = 0
    frames_analysed: int = 0
    persons: int = 0
    decode_errors: int = 0
    millis_behind_now: int | None = None
    last_producer_time: float | None = None  # of the last analysed frame
    last_fragment: int | None = None
    errors: list[str] = field(default_factory=list)
    # seconds from a frame's producer time to its analysis, recent frames
    lags: deque = field(default_factory=lambda: deque(maxlen=500))

    def note_analysed(self, producer_time: float, persons: int) -> None:
        self.frames_analysed += 1
        self.persons += persons
        self.last_producer_time = producer_time
        self.lags.append(max(0.0, time.time() - producer_time))

    def lag_percentile(self, fraction: float) -> float | None:
        if not self.lags:
            return None
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    @property
    def lag_seconds(self) -> float | None:
        if self.last_producer_time is None:
            return None
        return max(0.0, time.time() - self.last_producer_time)

    def note_error(self, message: str) -> None:
        self.errors = (self.errors + [message])[-5:]


@dataclass(frozen=True)
class WorkItem:
    frame: VideoFrame
    ticket: FragmentTicket
    settings: StreamSettings
    stats: StreamStats
    # the stream's state kept across frames by the analysis thread that serves it
    tracker: PersonTracker | None = None
    events: CameraEventState | None = None


class StreamWorker:
    def __init__(self, name: str, arn: str, source: MediaSource, settings: StreamSettings,
                 tracker: FragmentLedger, work: queue.Queue,
                 person_tracker: PersonTracker | None = None, events: CameraEventState | None = None):
        self.name = name
        self.person_tracker = person_tracker
        self.events = events
        self.arn = arn
        self.source = source
        self.settings = settings
        self.tracker = tracker
        self.work = work
        self.stats = StreamStats()
        self.gone = False
        self._decoder = StreamDecoder(name, arn, settings.sampling)
        self._stopping = threading.Event()
        self._last_decode_warning = -DECODE_WARNING_INTERVAL
        self._decode_warnings_suppressed = 0
        self._thread = threading.Thread(target=self._run, name=f"stream-{name}", daemon=True)

    def start(self) -> "StreamWorker":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop reading; fragments already queued are still analysed and delivered."""
        self._stopping.set()
        self.source.stop()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def state(self) -> str:
        return self.source.state

    def _run(self) -> None:
        try:
            for fragment in self.source.fragments():
                self._handle(fragment)
                if self._stopping.is_set():
                    break
        except StreamGone as err:
            self.gone = True
            log.warning("stream %s: %s; letting it go", self.name, err)
        except Exception as err:  # a bug for one stream must not stop the others
            log.exception("stream %s: worker failed", self.name)
            self.stats.note_error(f"worker failed: {err}")
        finally:
            self._decoder.close()

    def _handle(self, fragment) -> None:
        stats = self.stats
        stats.fragments += 1
        stats.last_fragment = fragment.fragment_number
        stats.millis_behind_now = fragment.millis_behind_now
        ticket = self.tracker.begin(self.arn, fragment.fragment_number)
        if self.events is not None and self.events.clips is not None:
            self.events.clips.add_fragment(fragment)  # kept for event clips
        try:
            frames = self._decoder.decode(fragment)
        except DecodeError as err:
            stats.decode_errors += 1
            stats.note_error(str(err))
            self._warn_decode_error(err)
            frames = []
        stats.frames_decoded = self._decoder.frames_decoded
        for frame in frames:
            self._enqueue(WorkItem(frame, ticket, self.settings, stats, self.person_tracker,
                                   self.events))
        ticket.seal()

    def _warn_decode_error(self, err: DecodeError) -> None:
        """One warning, then at most one a minute with a count: a broken camera sends a bad
        fragment every few seconds, and the log must stay readable."""
        now = time.monotonic()
        if now - self._last_decode_warning < DECODE_WARNING_INTERVAL:
            self._decode_warnings_suppressed += 1
            return
        more = (f" ({self._decode_warnings_suppressed} more since the last warning)"
                if self._decode_warnings_suppressed else "")
        log.warning("%s; skipping the fragment%s", err, more)
        self._last_decode_warning = now
        self._decode_warnings_suppressed = 0

    def _enqueue(self, item: WorkItem) -> None:
        item.ticket.frame_queued()
        self.stats.frames_queued += 1
        if self.settings.policy is LagPolicy.REALTIME:
            stale = time.time() - item.frame.source.producer_time > self.settings.max_lag_seconds
            try:
                if stale:
                    raise queue.Full
                self.work.put_nowait(item)
            except queue.Full:
                self.stats.frames_skipped += 1
                item.ticket.frame_skipped()
            return
        while True:  # lossless: wait for room, but notice a stop
            try:
                self.work.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stopping.is_set():
                    # shutting down: this frame will be re-read after the checkpoint
                    item.ticket.frame_abandoned()
                    return
