"""CloudWatch Embedded Metric Format lines for the stack's alarms (`health.emf`).

Every `health.emf_seconds` one JSON line on stdout, which CloudWatch Logs (the container's
awslogs driver) turns into metrics without an API call:

    {"_aws": {"Timestamp": 1764766840000, "CloudWatchMetrics": [{"Namespace": "KvsAnalytics",
     "Dimensions": [["Fleet"]], "Metrics": [{"Name": "LagSeconds", "Unit": "Seconds"},
     {"Name": "Errors", "Unit": "Count"}]}]}, "Fleet": "kvsa", "WorkerId": "...",
     "LagSeconds": 4.5, "Errors": 0}

- `LagSeconds`: the largest lag (a frame's producer time to its record being built) of the
  frames analysed in the interval, over the worker's streams, from the streams' lag histograms
  (within about 6 %); left out when no frame was analysed (the lag alarm treats missing data as
  missing).
- `Errors`: how many of these happened in the interval: fragments skipped or damaged in
  decoding, records and objects finally failed by the writers, session failures (restarts),
  processor calls that raised.

Several processes (and machines) write lines with one Fleet: CloudWatch takes the maximum and
the sum across them. A last line is written on `stop()`, so a shutdown's errors are counted.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from consumer.observe.histograms import dense, interval_max
from consumer.streams.stats import LAG

log = logging.getLogger(__name__)
NAMESPACE = "KvsAnalytics"


class EmfEmitter:
    def __init__(self, supervisor, fleet: str, every_seconds: float = 60.0, out=None,
                 clock=time.time):
        self.supervisor = supervisor
        self.fleet = fleet
        self.every = every_seconds
        self.out = out
        self.clock = clock
        self._errors: dict[tuple, int] = {}  # each source's count at the last line
        self._lags: dict[int, list[int]] = {}  # session key -> its lag histogram then
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="emf", daemon=True)

    def start(self) -> EmfEmitter:
        self.line()  # the baseline: what happened before counts in no interval
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.emit()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.emit()
            except Exception:  # never let the metrics end the consumer
                log.exception("EMF line not written")

    def emit(self) -> None:
        line = self.line()
        out = self.out or sys.stdout
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        out.flush()

    def line(self) -> dict:
        """The EMF object of what happened since the last call."""
        with self._lock:
            lag = self._lag()
            errors = self._new_errors()
        metrics = [{"Name": "Errors", "Unit": "Count"}]
        line = {"_aws": {"Timestamp": int(self.clock() * 1000),
                         "CloudWatchMetrics": [{"Namespace": NAMESPACE,
                                                "Dimensions": [["Fleet"]],
                                                "Metrics": metrics}]},
                "Fleet": self.fleet, "WorkerId": self.supervisor.worker_id, "Errors": errors}
        if lag is not None:
            metrics.insert(0, {"Name": "LagSeconds", "Unit": "Seconds"})
            line["LagSeconds"] = round(lag, 3)
        return line

    def _lag(self) -> float | None:
        largest = None
        seen = {}
        for session in list(self.supervisor.sessions.values()):
            figures = session.stats.lag_times.snapshot().get(LAG)
            now = dense(figures)
            seen[session.key] = now
            value = interval_max(self._lags.get(session.key), now,
                                 figures["max"] if figures else None)
            if value is not None and (largest is None or value > largest):
                largest = value
        self._lags = seen
        return largest

    def _new_errors(self) -> int:
        supervisor = self.supervisor
        counts: dict[tuple, int] = {("kinesis",): supervisor.kinesis.stats().failures}
        if supervisor.s3 is not None:
            counts[("s3",)] = supervisor.s3.stats().failures
        for i, analyzer in enumerate(supervisor.analyzers):
            counts[("analysis", i)] = analyzer.failures
        for session in list(supervisor.sessions.values()):
            counts[("decode", session.key)] = session.stats.decode_errors
        for arn, restart in list(supervisor.restarts.items()):
            counts[("restarts", arn)] = restart.count
        new = 0
        for source, count in counts.items():
            before = self._errors.get(source, 0)
            new += count - before if count >= before else count  # a count begun afresh
        self._errors = counts
        return new
