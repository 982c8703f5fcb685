"""The leases this worker holds: renewed, checkpointed and fenced, on one thread.

- Renewal: every `lease_seconds / 3` a held lease is written (a checkpoint write counts as one),
  conditional on owner and counter; the worker's own item is heart-beaten at the same rate.
  Due writes go out in parallel (`WRITERS` at a time), so a round takes about one call's
  latency, not one per lease: a slow table must not make a worker expire its own leases.
- Checkpoints: `checkpoint()` records the latest durable fragment of a stream (the latest wins);
  it rides on the lease's next renewal, which is written anyway, so checkpoints cost no extra
  write (one every `lease_seconds / 3`, not one per fragment); with `min_interval` a pending
  checkpoint is also written sooner, at most once per `min_interval`; everything pending is
  written on `flush()` (shutdown, release, hand-off). What was delivered past the checkpoint is
  read back by the next owner, so a sparser checkpoint repeats nothing; it only reads more.
- Fencing: a lease is lost when a conditional write fails (another worker took it), and also
  when this worker has not renewed it successfully for `lease_seconds` of its own clock (a
  paused or partitioned process must assume another has taken it). `holds()` says whether a
  stream may still emit; lost streams are reported once by `take_lost()` and never
  checkpointed again until won back.
- Stage times (`stage_times`): for every `checkpoint()` call, how long until a checkpoint write
  covering it succeeded (the latest wins, so one write may cover several calls).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from consumer.fleet.lease_table import Lease, LeaseLost, LeaseTable
from consumer.pipeline.stage_times import CHECKPOINT_WAIT, StageTimes

log = logging.getLogger(__name__)
WRITERS = 8  # lease writes in flight at once
MAX_ASKED = 64  # checkpoint() times kept per lease between writes (beyond: not timed)


@dataclass
class HeldLease:
    stream_arn: str
    stream_name: str
    counter: int
    renewed: float  # monotonic time the last successful write was sent
    checkpoint: int | None
    pending: tuple[int, float | None] | None = None  # (fragment number, producer time)
    last_checkpoint_write: float = 0.0
    asked: list[float] = field(default_factory=list)  # clock() of checkpoint() calls not written
    lost: bool = False
    writing: threading.Lock = field(default_factory=threading.Lock)  # one write at a time


class LeaseKeeper:
    def __init__(self, table: LeaseTable, lease_seconds: float, min_interval: float | None = None,
                 clock=time.monotonic, stage_times: StageTimes | None = None):
        self.table = table
        self.times = stage_times if stage_times is not None else StageTimes()
        self.lease_seconds = lease_seconds
        self.renew_every = lease_seconds / 3
        self.min_interval = min_interval
        self.clock = clock
        self.saved: dict[str, int] = {}  # stream ARN -> last checkpoint written by this worker
        self.writes = 0  # checkpoint writes
        self.renewals = 0
        self.lost = 0  # leases lost: a write found another owner, or not renewed in time
        self._held: dict[str, HeldLease] = {}
        self._lost: list[str] = []
        self._last_heartbeat = -float("inf")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._writers = ThreadPoolExecutor(WRITERS, thread_name_prefix="lease-write")
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    # --- what the supervisor and the sessions call ------------------------------------------

    def start(self) -> LeaseKeeper:
        self.heartbeat()
        self._thread.start()
        return self

    def adopt(self, lease: Lease, sent_at: float) -> None:
        """A lease just taken (the write was sent at `sent_at`, monotonic)."""
        with self._lock:
            self._held[lease.stream_arn] = HeldLease(
                lease.stream_arn, lease.stream_name or lease.stream_arn, lease.counter,
                sent_at, lease.checkpoint)
            # a loss of an earlier holding not yet reported is the caller's to handle now
            self._lost = [arn for arn in self._lost if arn != lease.stream_arn]

    def holds(self, stream_arn: str) -> bool:
        """May this stream still emit output? (the fence)"""
        with self._lock:
            held = self._held.get(stream_arn)
            return held is not None and not held.lost \
                and self.clock() - held.renewed < self.lease_seconds

    def held(self) -> set[str]:
        with self._lock:
            return {arn for arn, held in self._held.items() if not held.lost}

    def checkpoint(self, stream_arn: str, fragment_number: int,
                   producer_time: float | None = None) -> None:
        """This fragment and all before it are durable: checkpoint it (soon)."""
        with self._lock:
            held = self._held.get(stream_arn)
            if held is not None and not held.lost:
                held.pending = (fragment_number, producer_time)
                if len(held.asked) < MAX_ASKED:
                    held.asked.append(self.clock())

    def take_lost(self) -> list[str]:
        """Streams lost since the last call (each reported once, then forgotten)."""
        with self._lock:
            self._check_expiry()
            lost, self._lost = self._lost, []
            for arn in lost:
                held = self._held.get(arn)
                if held is not None and held.lost:
                    del self._held[arn]
            return lost

    def flush(self, stream_arns: set[str] | None = None) -> None:
        """Write every pending checkpoint now (of these streams only, if given)."""
        self._write_all([held for held in self._snapshot()
                         if stream_arns is None or held.stream_arn in stream_arns], force=True)

    def release(self, stream_arn: str) -> bool:
        """Flush the stream's checkpoint, then give its lease up; False if it was lost."""
        self.flush({stream_arn})
        with self._lock:
            held = self._held.pop(stream_arn, None)
        if held is None or held.lost:
            return False
        try:
            with held.writing:
                self.table.release(stream_arn, held.counter)
            return True
        except LeaseLost as err:
            log.warning("%s", err)
        except Exception as err:
            log.warning("stream %s: lease not released (%s); it will expire", held.stream_name,
                        err)
        return False

    def drop(self, stream_arn: str) -> None:
        """Forget a lost (or deleted) stream's lease without writing it."""
        with self._lock:
            self._held.pop(stream_arn, None)

    def heartbeat(self) -> None:
        try:
            self.table.heartbeat(socket.gethostname(), os.getpid())
            self._last_heartbeat = self.clock()
        except Exception as err:
            log.warning("worker heartbeat not written (%s)", err)

    @property
    def last_heartbeat(self) -> float:
        """clock() of the last heartbeat written (-inf: none yet): the table's reachability."""
        return self._last_heartbeat

    def checkpoint_written(self, stream_arn: str) -> float | None:
        """clock() of the last checkpoint written for a held stream since this worker took its
        lease (None: none yet, or not held)."""
        with self._lock:
            held = self._held.get(stream_arn)
            return (held.last_checkpoint_write or None) if held is not None else None

    @property
    def alive(self) -> bool:
        """The renewal thread runs (for the health endpoint)."""
        return self._thread.is_alive()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    # --- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.wait(0.1):
            try:
                self.tick()
            except Exception:  # a bug here must not end renewals silently
                log.exception("lease keeper tick failed")

    def tick(self) -> None:
        now = self.clock()
        if now - self._last_heartbeat >= self.renew_every:
            self.heartbeat()
        self._write_all(self._snapshot(), force=False)
        with self._lock:
            self._check_expiry()

    def _write_all(self, leases: list[HeldLease], force: bool) -> None:
        if len(leases) <= 1:
            for held in leases:
                self._write(held, force)
            return
        list(self._writers.map(lambda held: self._write(held, force), leases))

    def _snapshot(self) -> list[HeldLease]:
        with self._lock:
            return [held for held in self._held.values() if not held.lost]

    def _write(self, held: HeldLease, force: bool) -> None:
        with held.writing:
            self._write_locked(held, force)

    def _write_locked(self, held: HeldLease, force: bool) -> None:
        if held.lost:
            return
        now = self.clock()
        with self._lock:
            pending, asked = held.pending, len(held.asked)
        renewal_due = now - held.renewed >= self.renew_every
        checkpoint_due = pending is not None and (
            force or renewal_due or (self.min_interval is not None
                                     and now - held.last_checkpoint_write >= self.min_interval))
        if not checkpoint_due and not renewal_due:
            return
        try:
            if checkpoint_due:
                number, producer_time = pending
                counter = self.table.checkpoint(held.stream_arn, held.counter, number,
                                                producer_time)
            else:
                counter = self.table.renew(held.stream_arn, held.counter)
        except LeaseLost as err:
            log.warning("stream %s: %s; stopping it", held.stream_name, err)
            self._mark_lost(held)
            return
        except Exception as err:  # keep the checkpoint for the next round; never lose one
            log.warning("stream %s: lease write failed (%s); will retry", held.stream_name, err)
            return
        with self._lock:
            held.counter = counter
            held.renewed = now
            if checkpoint_due:
                if held.pending == pending:
                    held.pending = None
                held.last_checkpoint_write = now
                held.checkpoint = pending[0]
                self.saved[held.stream_arn] = pending[0]
                self.writes += 1
                covered = held.asked[:asked]
                del held.asked[:asked]
            else:
                self.renewals += 1
        if checkpoint_due:
            written = self.clock()
            for at in covered:
                self.times.add(CHECKPOINT_WAIT, written - at)

    def _mark_lost(self, held: HeldLease) -> None:
        with self._lock:
            if not held.lost:
                held.lost = True
                self.lost += 1
                self._lost.append(held.stream_arn)

    def _check_expiry(self) -> None:
        """(lock held) A lease not renewed for lease_seconds is lost, whatever the table says."""
        now = self.clock()
        for held in self._held.values():
            if not held.lost and now - held.renewed >= self.lease_seconds:
                log.warning("stream %s: lease not renewed for %.1f s; assuming it is lost",
                            held.stream_name, now - held.renewed)
                held.lost = True
                self.lost += 1
                self._lost.append(held.stream_arn)
