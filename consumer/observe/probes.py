"""What `/healthz` and `/readyz` answer, from what the supervisor already knows: no AWS call
is made for a probe.

- Liveness (`/healthz`): the process serves, and its essential threads run: the supervisor's
  lease loop turned within `LOOP_STALL_SECONDS` (a turn may wait on a slow AWS call, hence the
  margin), the lease keeper's renewal thread, every analysis worker, the Kinesis writer's
  thread, the S3 writer (open). Before the supervisor has started (models loading, the table
  being checked) and while it shuts down, the process counts as alive.
- Readiness (`/readyz`): the configuration loaded (else the process would have exited 2), the
  supervisor started and not stopping, the lease table reachable (the keeper's last heartbeat,
  written every `lease_seconds / 3`, succeeded within `lease_seconds`), and no stream stuck.
- Stuck: a stream this worker holds whose oldest fragment not yet checkpointed was read more
  than `health.stuck_seconds` ago, while its checkpoint has not been written for as long (since
  its session started, when it has not been yet). An idle camera is not stuck (nothing waits);
  a writer retrying through an outage, or an output that failed (the checkpoint stays before
  it until a restart), is.

`checkpoint_age()` is the figure `/metrics` exports as `kvsa_stream_checkpoint_age_seconds`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

LOOP_STALL_SECONDS = 120.0


@dataclass(frozen=True)
class Verdict:
    ok: bool
    body: dict  # the JSON answer

    @property
    def status(self) -> int:
        return 200 if self.ok else 503


def liveness(supervisor, stopping: bool = False, now: float | None = None) -> Verdict:
    if supervisor is None or stopping:
        return Verdict(True, {"alive": True, "state": "stopping" if stopping else "starting"})
    now = time.monotonic() if now is None else now
    dead = []
    stalled = now - supervisor.loop_at
    if stalled > LOOP_STALL_SECONDS:
        dead.append(f"lease loop: no turn for {stalled:.0f} s")
    if not supervisor.keeper.alive:
        dead.append("lease keeper thread")
    dead += [f"analysis worker {i}" for i, a in enumerate(supervisor.analyzers) if not a.alive]
    if not supervisor.kinesis.alive:
        dead.append("Kinesis writer thread")
    if supervisor.s3 is not None and not supervisor.s3.alive:
        dead.append("S3 writer")
    body = {"alive": not dead, "state": "running", "worker_id": supervisor.worker_id}
    if dead:
        body["dead"] = dead
    return Verdict(not dead, body)


def readiness(supervisor, stuck_seconds: float, stopping: bool = False,
              now: float | None = None) -> Verdict:
    if stopping:
        return Verdict(False, {"ready": False, "config": "loaded", "reason": "shutting down"})
    if supervisor is None:
        return Verdict(False, {"ready": False, "config": "loaded",
                               "reason": "starting: the supervisor has not started yet"})
    now = time.monotonic() if now is None else now
    keeper = supervisor.keeper
    since = now - keeper.last_heartbeat
    reachable = since < keeper.lease_seconds
    stuck = stuck_streams(supervisor, stuck_seconds, now)
    body = {"ready": reachable and not stuck, "config": "loaded",
            "lease_table": {"reachable": reachable,
                            "last_success_seconds_ago": round(since, 1) if since != float("inf")
                            else None},
            "streams": len(keeper.held()), "stuck": stuck}
    reasons = []
    if not reachable:
        reasons.append(f"lease table {supervisor.table.table}: no successful call for "
                       f"{since:.0f} s (lease {keeper.lease_seconds:.0f} s)")
    reasons += [f"stream {s['stream']} stuck: {s['reason']}" for s in stuck]
    if reasons:
        body["reason"] = "; ".join(reasons)
    return Verdict(body["ready"], body)


def checkpoint_age(supervisor, arn: str, session, now: float) -> float:
    """Seconds since this worker last wrote the stream's checkpoint (since its session started,
    when it has not yet)."""
    written = supervisor.keeper.checkpoint_written(arn)
    return now - (written if written is not None else session.started)


def stuck_streams(supervisor, stuck_seconds: float, now: float) -> list[dict]:
    held = supervisor.keeper.held()
    stuck = []
    for arn, session in list(supervisor.sessions.items()):
        if session.retired or arn not in held:
            continue
        oldest = session.ledger.oldest()
        if oldest is None:
            continue  # nothing read waits for its checkpoint: idle, not stuck
        age = checkpoint_age(supervisor, arn, session, now)
        waiting = now - oldest.began
        if min(age, waiting) < stuck_seconds:
            continue
        fragment = oldest.fragment_number
        blocked = session.ledger.blocked_at
        reason = (f"fragment {blocked} has an output that failed: the checkpoint stays before "
                  "it until a restart re-delivers it" if blocked is not None else
                  f"fragment {fragment}, read {waiting:.0f} s ago, still waits for "
                  f"{oldest.owed} frames and outputs")
        stuck.append({"stream": session.name, "state": session.state,
                      "checkpoint_age_seconds": round(age, 1), "fragment": str(fragment),
                      "waiting_seconds": round(waiting, 1), "owed": oldest.owed,
                      "reason": f"checkpoint not advanced for {age:.0f} s; {reason}"})
    return stuck
