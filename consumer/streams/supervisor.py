"""The worker process: a `StreamSupervisor` runs the lease loop and the stream sessions.

It discovers the configured streams (every `relist_seconds`) and makes a lease for each new one;
every `lease_seconds / 3` it takes free and expired leases and balances by stealing
(`consumer.fleet.coordinator`); it starts a `StreamSession` for each lease won, abandons the
session of a lease lost (`consumer.fleet.keeper` fences it), restarts a session that failed
(with backoff, from its checkpoint), and lets a deleted stream go and removes its lease. The
shared stages (analysis workers, the Kinesis and S3 writers, the lease keeper) take and return
plain data keyed by stream; analysis results are routed back to sessions by key.

Shutdown (SIGTERM/SIGINT), within `shutdown_seconds`: stop reading, let queued frames through
analysis, write pose windows and clips, flush the writers, write the checkpoints of every
fragment that became durable, then release the leases (owner cleared) so other workers take the
streams at their next cycle instead of after an expiry. What did not make it is re-read after
the checkpoint by whoever takes the stream next.

Stage times: one recorder (`consumer.pipeline.stage_times`) shared by every stage of the worker,
its snapshot in `stats()` (the `--stats-file`).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import ClientError

from consumer.cloud.aws import ApiCalls, AwsContext
from consumer.cloud.backoff import Backoff
from consumer.cloud.discovery import discover
from consumer.config import Config
from consumer.fleet.coordinator import LeaseCoordinator, Won
from consumer.fleet.keeper import LeaseKeeper
from consumer.fleet.lease_table import LeaseTable
from consumer.pipeline.analysis import Analyzer
from consumer.pipeline.face_search import build_face_search
from consumer.pipeline.outputs import ProcessorInfo
from consumer.pipeline.stage_times import StageTimes
from consumer.sinks.kinesis import KinesisRecordWriter
from consumer.sinks.locations import S3Locations
from consumer.sinks.s3 import S3ObjectWriter
from consumer.streams.session import SharedStages, Start, StreamSession
from consumer.streams.status import status_lines
from processors.base import Processor

log = logging.getLogger(__name__)


@dataclass
class Clients:
    kvs: AwsContext
    kinesis: object
    s3: object | None
    dynamodb: object

    calls: ApiCalls

    @classmethod
    def from_config(cls, config: Config) -> Clients:
        endpoints = config.aws.endpoints
        calls = ApiCalls()

        def context(service: str, max_attempts: int = 5) -> AwsContext:
            return AwsContext(endpoints.get(service), config.aws.region,
                              max_attempts=max_attempts, calls=calls)
        s3 = context("s3").client("s3") if config.outputs.s3 is not None else None
        # Lease-table calls are made on the renewal cadence, and the keeper and the lease loop
        # try again on that cadence themselves: a call gives up within the lease (one retry,
        # timeouts of a renewal period) instead of backing off in botocore's retries for
        # 9-27 s while the lease runs out and the supervisor's loop stands still.
        renewal = max(1.0, config.checkpoint.lease_seconds / 3)
        dynamodb = context("dynamodb", max_attempts=1).client(
            "dynamodb", read_timeout=renewal, connect_timeout=renewal)
        return cls(context("kinesisvideo"), context("kinesis").client("kinesis"), s3,
                   dynamodb, calls)


@dataclass
class Restarts:
    count: int = 0  # in the life of this worker
    streak: int = 0  # failures in a row, each within STEADY_SECONDS of its start: the backoff
    last_error: str = ""
    due: float | None = None  # monotonic time of the next attempt


STEADY_SECONDS = 60.0  # a session that ran this long before failing starts the backoff afresh


class StreamSupervisor:
    def __init__(self, config: Config, processors: Processor | list[Processor],
                 clients: Clients | None = None):
        self.config = config
        # One analysis worker per processor, all taking from one queue: any idle worker takes
        # the next frame, so one camera's frames use every core (its session puts the results
        # back in order) and no worker idles while another has a backlog.
        self.processors = processors if isinstance(processors, list) else [processors]
        self.clients = clients or Clients.from_config(config)
        checkpoint = config.checkpoint
        self.worker_id = checkpoint.worker_id
        self.stage_times = times = StageTimes()  # one for every stage of this worker
        self.table = LeaseTable(self.clients.dynamodb, checkpoint.table, self.worker_id)
        self.keeper = LeaseKeeper(self.table, checkpoint.lease_seconds,
                                  checkpoint.min_interval_seconds, stage_times=times)
        self.coordinator = LeaseCoordinator(self.table, self.keeper, checkpoint.lease_seconds,
                                            checkpoint.max_streams)
        outputs = config.outputs
        self.kinesis = KinesisRecordWriter(self.clients.kinesis, outputs.kinesis.stream,
                                           linger_ms=outputs.kinesis.linger_ms,
                                           max_retries=outputs.kinesis.max_retries,
                                           stage_times=times)
        self.s3 = (S3ObjectWriter(self.clients.s3, outputs.s3.bucket,
                                  concurrency=outputs.s3.upload_concurrency, stage_times=times)
                   if outputs.s3 is not None else None)
        self.work: queue.Queue = queue.Queue(maxsize=max(1, config.processing.queue_frames))
        self.analyzers = [
            Analyzer(each, self.work, self._route,
                     config.processing.batch_size, config.processing.batch_wait_ms,
                     stage_times=times)
            for each in self.processors]
        locations = (S3Locations(self.clients.s3, outputs.s3.bucket,
                                 config.events.url_expiry_seconds)
                     if outputs.s3 is not None else None)
        self.face_search = build_face_search(config)
        self.stages = SharedStages(config, self.clients.kvs, self.clients.kinesis, self.kinesis,
                                   self.s3, locations, ProcessorInfo.of(self.processors[0]),
                                   self.keeper.checkpoint, self.keeper.holds, stage_times=times,
                                   face_search=self.face_search)
        self.sessions: dict[str, StreamSession] = {}  # by stream ARN; the last one of each
        self.restarts: dict[str, Restarts] = {}
        self.streams: dict[str, str] = {}  # ARN -> name of the streams the config selects
        self._by_key: dict[int, StreamSession] = {}
        self._keys = itertools.count(1)
        self._backoff = Backoff(base=1.0, cap=60.0)
        self.started = time.monotonic()
        self.loop_at = self.started  # monotonic time of the lease loop's last turn (liveness)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> StreamSupervisor:
        self.table.ensure_table()
        self.coordinator.check_unique_id()
        self.keeper.start()
        for analyzer in self.analyzers:
            analyzer.start()
        log.info("worker %s: lease table %s, lease %.0f s", self.worker_id, self.table.table,
                 self.keeper.lease_seconds)
        self.refresh_streams()
        self.balance()
        return self

    def run(self, stop: threading.Event) -> None:
        """Serve until `stop` is set."""
        config = self.config
        next_list = time.monotonic() + config.streams.relist_seconds
        next_cycle = time.monotonic() + self.keeper.renew_every
        next_status = time.monotonic() + config.logging.status_seconds
        while not stop.wait(0.2):
            now = self.loop_at = time.monotonic()
            if now >= next_list:
                self.refresh_streams()
                next_list = now + config.streams.relist_seconds
            if now >= next_cycle:
                self.balance()
                next_cycle = now + self.keeper.renew_every
            self.tend()
            if now >= next_status:
                for line in status_lines(self):
                    log.info("%s", line)
                next_status = now + config.logging.status_seconds

    def shutdown(self) -> bool:
        """Drain, flush, checkpoint and release within the budget; True if all was flushed."""
        deadline = time.monotonic() + self.config.shutdown_seconds

        def left(reserve: float = 0.0) -> float:
            return max(0.05, deadline - time.monotonic() - reserve)
        running = [s for s in self.sessions.values() if not s.retired]
        for session in running:
            session.stop()
        _wait(lambda: all(s.reading_ended for s in running), left(3.0))
        drained = self.analyzers[0].drain(left(2.5))  # the queue they share
        for analyzer in self.analyzers:
            analyzer.stop(0.5)
        # pose windows and owed clips are written once a session's last frame is through
        _wait(lambda: all(s.drained or s.ended or s.failure for s in running), left(2.0))
        flushed = self.kinesis.flush(timeout=left(1.5))
        if self.s3 is not None:
            flushed = self.s3.flush(timeout=left(1.0)) and flushed
        _wait(lambda: all(s.drained or s.ended for s in running), left(0.8))
        for session in running:
            session.close(0.1)
            if session.gone:  # deleted while it drained: remove its lease, do not release it
                self._let_go(session.arn, session.name)
        self.keeper.stop()
        with ThreadPoolExecutor(8) as pool:  # a write or two each: in parallel, within budget
            released = sum(pool.map(self.keeper.release, list(self.keeper.held())))
        try:
            self.table.retire()
        except Exception as err:
            log.warning("worker item not removed (%s); it will expire", err)
        self.kinesis.close(timeout=0.2)
        if self.s3 is not None:
            self.s3.close(timeout=0.2)
        if self.face_search is not None:
            self.face_search.close()
        done = bool(drained and flushed)
        log.info("shut down: %s; %d leases released; checkpoints %s",
                 "drained" if done else "some work left for the next owner", released,
                 {self.streams.get(arn, arn): number for arn, number in self.keeper.saved.items()})
        return done

    # --- streams and leases ----------------------------------------------------------------

    def refresh_streams(self) -> None:
        """List the configured streams; make leases for new ones; remove deleted ones'."""
        try:
            found = discover(self.clients.kvs.client("kinesisvideo"), self.config.streams)
        except Exception as err:  # listing failed: keep what runs, try again later
            log.warning("could not list streams: %s", err)
            return
        self.streams = {arn: name for name, arn in found.items()}
        try:
            self.coordinator.register(found)
        except Exception as err:
            log.warning("could not create leases: %s", err)
        for arn, name in self.coordinator.orphans().items():  # deleted while nobody held them?
            self._let_go(arn, name)

    def balance(self) -> None:
        """One lease cycle: start a session for each lease won."""
        try:
            won = self.coordinator.cycle(set(self.streams))
        except Exception as err:
            log.warning("lease cycle failed (%s); will try again", err)
            return
        for each in won:
            self._start_session(each)

    def tend(self) -> None:
        """Sessions whose lease was lost, that ended, failed, or are due a restart."""
        for arn in self.keeper.take_lost():
            session = self.sessions.get(arn)
            if session is not None and not session.retired:
                log.warning("stream %s: lease lost; stopping it (no more output or "
                            "checkpoints from this worker)", session.name)
                session.abandon()
            self.restarts.pop(arn, None)
        now = time.monotonic()
        for arn, session in list(self.sessions.items()):
            if session.retired or not session.reading_ended:
                continue
            if not (session.ended or session.drained or session.failure
                    or session.state == "lease lost"):
                continue
            session.close(0.5)
            session.retired = True
            self._by_key.pop(session.key, None)
            if session.gone:
                self._let_go(arn, session.name)
            elif session.failure and arn in self.keeper.held():
                restart = self.restarts.setdefault(arn, Restarts())
                restart.count += 1
                restart.streak = restart.streak + 1 if now - session.started < STEADY_SECONDS \
                    else 1
                restart.last_error = session.failure
                restart.due = now + self._backoff.delay(restart.streak)
                log.warning("stream %s: session failed (%s); restart %d in %.1f s",
                            session.name, session.failure, restart.count, restart.due - now)
        for arn, restart in self.restarts.items():
            if restart.due is not None and now >= restart.due and arn in self.keeper.held():
                restart.due = None
                lease = self.table.lease(arn)
                if lease is not None and lease.owner == self.worker_id:
                    self._start_session(Won(lease, self.worker_id, 0.0))

    def _start_session(self, won: Won) -> None:
        lease = won.lease
        arn = lease.stream_arn
        name = self.streams.get(arn) or lease.stream_name or arn
        start = Start(checkpoint=lease.checkpoint,
                      read_back=lease.counter > 1 or lease.checkpoint is not None,
                      read_back_since=lease.checkpoint_at or lease.created_at,
                      handoff_seconds=won.handoff_seconds)
        earlier = self.sessions.get(arn)
        if earlier is not None and not earlier.retired:
            earlier.abandon()  # it must not outlive its lease (fenced already; now stopped)
            earlier.close(0.5)
            earlier.retired = True
            self._by_key.pop(earlier.key, None)
        key = next(self._keys)
        session = StreamSession(key, name, arn, start, self.stages, self.work)
        self.sessions[arn] = session
        self._by_key[key] = session
        session.start()
        log.info("stream %s: lease won%s; reading from %s (sampling %s, policy %s)", name,
                 f" from {won.previous_owner}" if won.previous_owner not in (
                     None, self.worker_id) else "",
                 f"after checkpoint {lease.checkpoint}" if lease.checkpoint
                 else self.config.streams.start.value,
                 session.settings.sampling.mode.value, session.settings.policy.value)

    def _let_go(self, arn: str, name: str) -> None:
        """The stream was deleted: forget its lease, unless it exists after all."""
        try:
            self.clients.kvs.client("kinesisvideo").describe_stream(StreamARN=arn)
            return  # still there (a transient error ended the session): keep the lease
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                return
        self.streams.pop(arn, None)
        self.restarts.pop(arn, None)
        session = self.sessions.get(arn)
        if session is not None and (session.retired or session.ended):
            # else the status would report a deleted stream as "stopping" for the life of the
            # process, and every deleted stream's session would stay in memory
            del self.sessions[arn]
        try:
            self.coordinator.forget(arn)
        except Exception as err:
            log.warning("stream %s: lease not removed (%s)", name, err)
        log.info("stream %s: deleted; let go and its lease removed", name)

    # --- shared stages' plumbing ------------------------------------------------------------

    def _route(self, key: int, message: object) -> None:
        session = self._by_key.get(key)
        if session is not None:
            session.post(message)

    # --- figures ---------------------------------------------------------------------------

    def session_named(self, name: str) -> StreamSession | None:
        """The stream's (last) session in this worker, or None."""
        return next((s for s in self.sessions.values() if s.name == name), None)

    @property
    def frames_analysed(self) -> int:
        return sum(analyzer.frames for analyzer in self.analyzers)

    def stats(self) -> dict:
        """Counters for a stats file or a benchmark: per stream, analysis, writers, API calls."""
        streams = {}
        for arn, session in self.sessions.items():
            st = session.stats
            restart = self.restarts.get(arn)
            streams[session.name] = {
                "state": session.state,
                "fragments": st.fragments, "frames_decoded": st.frames_decoded,
                "frames_analysed": st.frames_analysed, "frames_skipped": st.frames_skipped,
                "persons": st.persons, "decode_errors": st.decode_errors,
                "events": session.events.raised if session.events is not None else 0,
                "millis_behind_now": st.millis_behind_now, "lag_p50": st.lag_percentile(0.5),
                "lag_max": st.lag_percentile(1.0),
                "restarts": restart.count if restart else 0,
                "checkpoint": str(self.keeper.saved.get(arn) or "") or None}
        return {
            "worker_id": self.worker_id,
            "elapsed_seconds": time.monotonic() - self.started,
            "streams": streams,
            "analysis": {"workers": len(self.analyzers), "frames": self.frames_analysed,
                         "batches": sum(a.batches for a in self.analyzers),
                         "mixed_batches": sum(a.mixed_batches for a in self.analyzers),
                         "busy_seconds": sum(a.busy_seconds for a in self.analyzers)},
            "leases": {"held": len(self.keeper.held()), "taken": self.coordinator.taken,
                       "stolen": self.coordinator.stolen, "cycles": self.coordinator.cycles,
                       "renewals": self.keeper.renewals},
            "kinesis": vars(self.kinesis.stats()),
            "s3": vars(self.s3.stats()) if self.s3 is not None else None,
            "checkpoint_writes": self.keeper.writes,
            "api_calls": self.clients.calls.snapshot(),
            "stage_times": self.stage_times.snapshot(),  # seconds (stage_times.STAGES)
        }


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
