"""What each stream is doing, in one log line per stream plus a totals line: connected,
fragments, frames analysed, persons, skipped and undecodable frames, lag, checkpoint."""

from __future__ import annotations

import time


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def status_lines(service) -> list[str]:
    lines = []
    saved = service.checkpointer.saved
    for name, worker in sorted(service.workers.items()):
        stats = worker.stats
        behind = "-" if stats.millis_behind_now is None else f"{stats.millis_behind_now}ms"
        checkpoint = saved.get(worker.arn)
        lines.append(
            f"stream {name}: {worker.state}; fragments {stats.fragments}, frames analysed "
            f"{stats.frames_analysed} (skipped {stats.frames_skipped}), persons {stats.persons}, "
            f"decode errors {stats.decode_errors}, behind {behind}, lag "
            f"{_seconds(stats.lag_seconds)}, checkpoint "
            f"{'-' if checkpoint is None else checkpoint}")
    analyzer = service.analyzer
    elapsed = max(1e-6, time.monotonic() - service.started)
    sent = service.kinesis.stats()
    lines.append(
        f"total: {len(service.workers)} streams, {analyzer.frames} frames analysed "
        f"({analyzer.frames / elapsed:.1f}/s, processor busy {analyzer.busy_seconds / elapsed:.0%}), "
        f"queue {service.work.qsize()}/{service.work.maxsize}, records sent {sent.records_sent} "
        f"(throttled {sent.throttles}, failed {sent.failures}), checkpoint writes "
        f"{service.checkpointer.writes}, AWS API calls {sum(service.clients.calls.snapshot().values())}")
    return lines
