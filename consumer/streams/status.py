"""What each stream is doing, in one log line per stream plus a totals line: connected,
fragments, frames analysed, persons, events, skipped and undecodable frames, lag, checkpoint."""

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
        events = "" if worker.events is None else (
            f"events {worker.events.raised} (clips owed {worker.events.clips.pending}), "
            if worker.events.clips is not None else f"events {worker.events.raised}, ")
        lines.append(
            f"stream {name}: {worker.state}; fragments {stats.fragments}, frames analysed "
            f"{stats.frames_analysed} (skipped {stats.frames_skipped}), persons {stats.persons}, "
            f"{events}decode errors {stats.decode_errors}, behind {behind}, lag "
            f"{_seconds(stats.lag_seconds)}, checkpoint "
            f"{'-' if checkpoint is None else checkpoint}")
    analyzers = service.analyzers
    elapsed = max(1e-6, time.monotonic() - service.started)
    sent = service.kinesis.stats()
    frames = service.frames_analysed
    busy = sum(a.busy_seconds for a in analyzers) / len(analyzers)
    queued = sum(a.work.qsize() for a in analyzers)
    room = sum(a.work.maxsize for a in analyzers)
    lines.append(
        f"total: {len(service.workers)} streams, {frames} frames analysed "
        f"({frames / elapsed:.1f}/s, {len(analyzers)} workers {busy / elapsed:.0%} busy), "
        f"queue {queued}/{room}, records sent {sent.records_sent} "
        f"(throttled {sent.throttles}, failed {sent.failures}), checkpoint writes "
        f"{service.checkpointer.writes}, AWS API calls {sum(service.clients.calls.snapshot().values())}")
    return lines
