"""What each stream is doing, in one log line per stream plus a totals line: its session's
state (restarts included), fragments, frames analysed, persons, events, skipped and undecodable
frames, lag, checkpoint; and the worker's leases."""

from __future__ import annotations

import time


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


WAITING_SECONDS = 10.0  # a fragment waiting longer than this for its outputs is reported


def _waiting(session) -> str:
    """What the checkpoint waits for, when it has waited long: outputs still owed (a writer
    retrying through an outage), or a failed output that holds it until a restart."""
    ledger = session.ledger
    if ledger.blocked_at is not None:
        return (f" (checkpoint held at fragment ...{str(ledger.blocked_at)[-10:]}: an output "
                "failed; a restart re-delivers it)")
    oldest = ledger.oldest()
    if oldest is None or time.monotonic() - oldest.began < WAITING_SECONDS:
        return ""
    return (f" (fragment ...{str(oldest.fragment_number)[-10:]} waiting "
            f"{time.monotonic() - oldest.began:.0f}s for {oldest.owed} frames and outputs)")


def status_lines(supervisor) -> list[str]:
    lines = []
    saved = supervisor.keeper.saved
    for arn, session in sorted(supervisor.sessions.items(), key=lambda item: item[1].name):
        stats = session.stats
        behind = "-" if stats.millis_behind_now is None else f"{stats.millis_behind_now}ms"
        checkpoint = saved.get(arn)
        events = session.events
        events = "" if events is None else (
            f"events {events.raised} (clips owed {events.clips.pending}), "
            if events.clips is not None else f"events {events.raised}, ")
        restart = supervisor.restarts.get(arn)
        state = session.state
        if restart is not None and restart.count:
            due = restart.due
            state = (f"restarting in {max(0.0, due - time.monotonic()):.1f}s" if due is not None
                     else state) + f" (restarted {restart.count}x, last: {restart.last_error})"
        state += _waiting(session)
        lines.append(
            f"stream {session.name}: {state}; fragments {stats.fragments}, frames analysed "
            f"{stats.frames_analysed} (skipped {stats.frames_skipped}), persons {stats.persons}, "
            f"{events}decode errors {stats.decode_errors}, behind {behind}, lag "
            f"{_seconds(stats.lag_seconds)}, checkpoint "
            f"{'-' if checkpoint is None else checkpoint}")
    analyzers = supervisor.analyzers
    elapsed = max(1e-6, time.monotonic() - supervisor.started)
    sent = supervisor.kinesis.stats()
    frames = supervisor.frames_analysed
    busy = sum(a.busy_seconds for a in analyzers) / len(analyzers)
    queued, room = supervisor.work.qsize(), supervisor.work.maxsize
    coordinator = supervisor.coordinator
    lines.append(
        f"total: worker {supervisor.worker_id} holds {len(supervisor.keeper.held())} leases "
        f"(target {coordinator.last_target}, {coordinator.live_workers} live workers), "
        f"{frames} frames analysed "
        f"({frames / elapsed:.1f}/s, {len(analyzers)} analysis workers {busy / elapsed:.0%} "
        f"busy), queue {queued}/{room}, records sent {sent.records_sent} "
        f"(throttled {sent.throttles}, failed {sent.failures}, fenced {sent.fenced}), "
        f"{_s3(supervisor.s3)}"
        f"checkpoint writes {supervisor.keeper.writes}, AWS API calls "
        f"{sum(supervisor.clients.calls.snapshot().values())}")
    return lines


def _s3(writer) -> str:
    if writer is None:
        return ""
    stats = writer.stats()
    return (f"S3 objects written {stats.objects_written} (pending {stats.pending}, retrying "
            f"{stats.retrying}), ")
