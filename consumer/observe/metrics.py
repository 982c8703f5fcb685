"""`/metrics`: a Prometheus collector that reads the supervisor's state at scrape time.

Nothing is counted here: every figure is one the consumer already keeps (a session's
`StreamStats`, the worker's `StageTimes`, the writers' `stats()`, the lease keeper's and the
coordinator's counts, the analysis workers' counts), read when Prometheus asks. Per-stream
counters belong to the stream's session in this worker: a new session (a restart, a lease won
back) starts them from zero, which Prometheus' `rate()` reads as a counter reset.
The README section "Health, metrics and logs" lists every family.
"""

from __future__ import annotations

import time

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from consumer.observe.histograms import prometheus_buckets
from consumer.observe.probes import checkpoint_age, stuck_streams
from consumer.pipeline.stage_times import INFERENCE, KDS_CALL, S3_CALL
from consumer.streams.stats import LAG

BATCH_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # processing.batch_size is at most 256

# (name, help, StreamStats attribute) of the per-stream counters
STREAM_COUNTERS = (
    ("kvsa_stream_fragments_read", "Fragments read from GetMedia", "fragments"),
    ("kvsa_stream_frames_decoded", "Frames through the decoder", "frames_decoded"),
    ("kvsa_stream_frames_analysed", "Frames analysed (one record each)", "frames_analysed"),
    ("kvsa_stream_frames_skipped", "Frames skipped by the real-time policy", "frames_skipped"),
    ("kvsa_stream_persons", "Persons found in analysed frames", "persons"),
    ("kvsa_stream_decode_errors", "Fragments skipped or damaged in decoding", "decode_errors"),
)


class SupervisorCollector(Collector):
    """Yields the consumer's metric families; nothing until a supervisor is attached."""

    def __init__(self, supervisor=None, stuck_seconds: float = 120.0):
        self.supervisor = supervisor
        self.stuck_seconds = stuck_seconds

    def describe(self):
        return []  # families vary with the streams held: collected, not pre-declared

    def collect(self):
        supervisor = self.supervisor
        if supervisor is None:
            return
        now = time.monotonic()
        times = supervisor.stage_times.snapshot()
        yield from self._worker(supervisor)
        yield from self._streams(supervisor, now)
        yield from self._sinks(supervisor, times)
        yield from self._leases(supervisor, now)
        yield from self._analysis(supervisor, times)
        yield from self._stages(times)

    # --- families --------------------------------------------------------------------------

    def _worker(self, supervisor):
        info = InfoMetricFamily("kvsa_worker", "This consumer process")
        first = supervisor.processors[0]
        info.add_metric([], {"worker_id": supervisor.worker_id, "processor": first.name,
                             "model": first.model})
        yield info
        calls = CounterMetricFamily("kvsa_aws_calls", "AWS API calls made (retries not counted)",
                                    labels=["operation"])
        for operation, count in sorted(supervisor.clients.calls.snapshot().items()):
            calls.add_metric([operation], count)
        yield calls

    def _streams(self, supervisor, now: float):
        sessions = {}
        for arn, session in list(supervisor.sessions.items()):
            if session.name not in sessions or session.key > sessions[session.name][1].key:
                sessions[session.name] = (arn, session)  # one series per stream name
        held = supervisor.keeper.held()
        counters = {name: CounterMetricFamily(name, text, labels=["stream"])
                    for name, text, _ in STREAM_COUNTERS}
        events = CounterMetricFamily("kvsa_stream_events", "Events raised by the stream's rules",
                                     labels=["stream"])
        restarts = CounterMetricFamily("kvsa_stream_restarts",
                                       "Sessions restarted after a failure", labels=["stream"])
        lag = HistogramMetricFamily(
            "kvsa_stream_lag_seconds",
            "Producer time of an analysed frame to its record being built", labels=["stream"])
        behind = GaugeMetricFamily("kvsa_stream_millis_behind_now",
                                   "MillisBehindNow of the last fragment read", labels=["stream"])
        age = GaugeMetricFamily("kvsa_stream_checkpoint_age_seconds",
                                "Seconds since this worker last wrote the stream's checkpoint "
                                "(since its session started, before the first)",
                                labels=["stream"])
        holding = GaugeMetricFamily("kvsa_stream_held", "1 while this worker holds the lease",
                                    labels=["stream"])
        stuck = GaugeMetricFamily("kvsa_stream_stuck", "1 while the stream is stuck (/readyz)",
                                  labels=["stream"])
        stuck_names = {s["stream"] for s in stuck_streams(supervisor, self.stuck_seconds, now)}
        for name, (arn, session) in sorted(sessions.items()):
            stats = session.stats
            for family, (_, _, attribute) in zip(counters.values(), STREAM_COUNTERS):
                family.add_metric([name], getattr(stats, attribute))
            events.add_metric([name], session.events.raised if session.events is not None else 0)
            restart = supervisor.restarts.get(arn)
            restarts.add_metric([name], restart.count if restart is not None else 0)
            buckets, total = prometheus_buckets(stats.lag_times.snapshot().get(LAG))
            lag.add_metric([name], buckets, total)
            if stats.millis_behind_now is not None:
                behind.add_metric([name], stats.millis_behind_now)
            is_held = arn in held and not session.retired
            holding.add_metric([name], int(is_held))
            if is_held:
                age.add_metric([name], checkpoint_age(supervisor, arn, session, now))
                stuck.add_metric([name], int(name in stuck_names))
        yield from counters.values()
        yield from (events, restarts, lag, behind, age, holding, stuck)

    def _sinks(self, supervisor, times: dict):
        written = CounterMetricFamily("kvsa_sink_written", "Records (kinesis) or objects (s3) "
                                      "acknowledged as durable", labels=["sink"])
        size = CounterMetricFamily("kvsa_sink_bytes", "Bytes acknowledged", labels=["sink"])
        retries = CounterMetricFamily("kvsa_sink_retries", "Puts attempted again",
                                      labels=["sink"])
        failures = CounterMetricFamily("kvsa_sink_failures", "Records or objects finally failed "
                                       "(their fragment is re-read after a restart)",
                                       labels=["sink"])
        pending = GaugeMetricFamily("kvsa_sink_pending", "Queued or in flight now",
                                    labels=["sink"])
        throttled = CounterMetricFamily("kvsa_sink_throttled", "Records throttled by Kinesis "
                                        "(slowed down, not failed)", labels=["sink"])
        fenced = CounterMetricFamily("kvsa_sink_fenced", "Records not sent: their stream's "
                                     "lease was lost", labels=["sink"])
        put = HistogramMetricFamily("kvsa_sink_put_seconds", "PutRecords (per record sent) or "
                                    "PutObject (per object) call duration", labels=["sink"])
        kinesis = supervisor.kinesis.stats()
        written.add_metric(["kinesis"], kinesis.records_sent)
        size.add_metric(["kinesis"], kinesis.bytes_sent)
        retries.add_metric(["kinesis"], kinesis.retries)
        failures.add_metric(["kinesis"], kinesis.failures)
        pending.add_metric(["kinesis"], kinesis.pending)
        throttled.add_metric(["kinesis"], kinesis.throttles)
        fenced.add_metric(["kinesis"], kinesis.fenced)
        put.add_metric(["kinesis"], *prometheus_buckets(times.get(KDS_CALL)))
        if supervisor.s3 is not None:
            s3 = supervisor.s3.stats()
            written.add_metric(["s3"], s3.objects_written)
            size.add_metric(["s3"], s3.bytes_written)
            retries.add_metric(["s3"], s3.retries)
            failures.add_metric(["s3"], s3.failures)
            pending.add_metric(["s3"], s3.pending)
            put.add_metric(["s3"], *prometheus_buckets(times.get(S3_CALL)))
        yield from (written, size, retries, failures, pending, throttled, fenced, put)

    def _leases(self, supervisor, now: float):
        keeper, coordinator = supervisor.keeper, supervisor.coordinator
        yield _gauge("kvsa_leases_held", "Stream leases this worker holds", len(keeper.held()))
        yield _counter("kvsa_leases_taken", "Free or expired leases taken", coordinator.taken)
        yield _counter("kvsa_leases_stolen", "Leases taken from a busier worker to balance",
                       coordinator.stolen)
        yield _counter("kvsa_leases_lost", "Leases lost: another worker took them, or they "
                       "were not renewed in time", keeper.lost)
        yield _counter("kvsa_lease_renewals", "Lease renewals written", keeper.renewals)
        yield _counter("kvsa_checkpoint_writes", "Checkpoints written", keeper.writes)
        yield _gauge("kvsa_lease_target", "Leases this worker aims to hold",
                     coordinator.last_target)
        yield _gauge("kvsa_live_workers", "Live workers seen in the lease table",
                     coordinator.live_workers)
        since = now - keeper.last_heartbeat
        if since != float("inf"):
            yield _gauge("kvsa_lease_table_success_age_seconds",
                         "Seconds since the last successful heartbeat write", since)

    def _analysis(self, supervisor, times: dict):
        analyzers = supervisor.analyzers
        yield _gauge("kvsa_analysis_workers", "Analysis workers (a model each)", len(analyzers))
        yield _counter("kvsa_analysis_frames", "Frames through the processor",
                       sum(a.frames for a in analyzers))
        yield _counter("kvsa_analysis_batches", "Processor calls",
                       sum(a.batches for a in analyzers))
        yield _counter("kvsa_analysis_mixed_batches", "Batches with frames of several streams",
                       sum(a.mixed_batches for a in analyzers))
        yield _counter("kvsa_analysis_failures", "Batches the processor raised on",
                       sum(a.failures for a in analyzers))
        yield _counter("kvsa_analysis_busy_seconds", "Seconds in processor calls",
                       sum(a.busy_seconds for a in analyzers))
        yield _gauge("kvsa_analysis_queue_frames", "Frames waiting for analysis",
                     supervisor.work.qsize())
        sizes: dict[int, int] = {}
        for analyzer in analyzers:
            for size, n in dict(analyzer.batch_sizes).items():
                sizes[size] = sizes.get(size, 0) + n
        batch = HistogramMetricFamily("kvsa_analysis_batch_size", "Frames per processor call")
        cumulative = [(str(edge), float(sum(n for s, n in sizes.items() if s <= edge)))
                      for edge in BATCH_EDGES]
        cumulative.append(("+Inf", float(sum(sizes.values()))))
        batch.add_metric([], cumulative, float(sum(s * n for s, n in sizes.items())))
        yield batch
        inference = HistogramMetricFamily(
            "kvsa_analysis_inference_seconds",
            "The processor call of an analysed frame's batch (a sample per frame)")
        inference.add_metric([], *prometheus_buckets(times.get(INFERENCE)))
        yield inference

    def _stages(self, times: dict):
        stages = HistogramMetricFamily("kvsa_stage_seconds", "Time spent per pipeline stage "
                                       "(consumer.pipeline.stage_times.STAGES)",
                                       labels=["stage"])
        for stage, figures in sorted(times.items()):
            stages.add_metric([stage], *prometheus_buckets(figures))
        yield stages


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)
