"""A stream session's counters and recent lags, for status lines, `--stats-file` and
`/metrics` (consumer.observe reads them at scrape time).

`lag_times` holds every analysed frame's lag (producer time -> its record built and handed to
the writers) as a `StageTimes` histogram under the stage name `LAG`: fixed log buckets from
the session's start, so a scrape or an EMF line reads a distribution, not the recent window."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from consumer.pipeline.stage_times import StageTimes

LAG = "lag"  # the stage name of `StreamStats.lag_times`


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
    lag_times: StageTimes = field(default_factory=StageTimes)  # every lag, histogram (LAG)

    def note_analysed(self, producer_time: float, persons: int) -> None:
        self.frames_analysed += 1
        self.persons += persons
        self.last_producer_time = producer_time
        lag = max(0.0, time.time() - producer_time)
        self.lags.append(lag)
        self.lag_times.add(LAG, lag)

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


class ThrottledWarning:
    """Warn the first time, then at most once per `interval` seconds with the count of the ones
    left out since: a broken camera sends a bad fragment every few seconds, and the log must
    stay readable."""

    def __init__(self, logger, interval: float):
        self._log = logger
        self._interval = interval
        self._last = -interval
        self._suppressed = 0

    def warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        more = f" ({self._suppressed} more since the last warning)" if self._suppressed else ""
        self._log.warning("%s%s", message, more)
        self._last, self._suppressed = now, 0
