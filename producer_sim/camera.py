"""One camera: source -> fragmenter -> PutMedia sessions, until the source ends or it is stopped.

A capture thread (`capture`) reads the source (PyAV decodes/encodes outside the event loop), paces
it in real time unless asked to go as fast as possible, gives each packet its wall-clock producer
timestamp, cuts fragments and encodes their clusters. The event loop sends them over a PutMedia
connection and reads the acknowledgements on the same connection:

* PERSISTED (or RECEIVED for a stream without retention) retires a fragment;
* an ERROR ack is logged with its id and handled by type (`acks.ErrorAction`): a rejected
  fragment is dropped and counted; a transient error reconnects with exponential backoff and
  jitter, and every fragment not yet retired is sent again on the new connection;
* a connection is renewed before AWS's 45-minute limit, and after any failure.

Fragments not yet retired stay in memory, at most `max_pending_fragments`: beyond that, a real-time
camera drops the oldest (as the producer SDK does) and an as-fast-as-possible push waits.
What the camera reports, live and at the end, is in `status`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.media.fragmenter import DEFAULT_FRAGMENT_DURATION_MS
from consumer.media.sources import Source
from consumer.wire import Track, writer

from .acks import Ack, AckEvent, ErrorAction
from .capture import SOURCE_END, Capture, PendingFragment, SourceFailed
from .control import StreamTarget
from .putmedia import (
    DEFAULT_MAX_CONNECTION_S,
    PutMediaConnection,
    PutMediaConnectionError,
    PutMediaError,
)
from .status import CameraResult, CameraStatus, Rejection

log = logging.getLogger(__name__)


@dataclass
class CameraConfig:
    fragment_duration_ms: int = DEFAULT_FRAGMENT_DURATION_MS
    realtime: bool = True  # pace the source on the wall clock; False: as fast as PutMedia takes
    max_connection_s: float = DEFAULT_MAX_CONNECTION_S  # renew before AWS's 45-minute limit
    max_pending_fragments: int = 150
    ack_timeout_s: float = 30.0  # fragments sent but nothing heard for this long: reconnect
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retries: int | None = None  # consecutive failed connections before giving up; None: never
    stop_timeout_s: float = 15.0  # after stop(), how long to try to deliver what is left
    connect_timeout_s: float = 10.0


class AckError(PutMediaError):
    """An ERROR acknowledgement that ends the session (transient or fatal by its id)."""

    def __init__(self, ack: Ack):
        self.ack = ack
        super().__init__(ack.describe())

    @property
    def retryable(self) -> bool:  # type: ignore[override]
        return self.ack.action != ErrorAction.FATAL

    @property
    def renew(self) -> bool:
        """4003: the connection is simply too old; reconnect at once, it is no failure."""
        return self.ack.error_id == 4003


END_GRACE_S = 2.0


class Camera:
    """Streams one source into one stream; `await run()` returns a CameraResult."""

    def __init__(self, name: str, source: Source, target: StreamTarget,
                 config: CameraConfig | None = None,
                 connection_factory: Callable[[StreamTarget], PutMediaConnection] | None = None):
        self.name = name
        self.source = source
        self.target = target
        self.config = config or CameraConfig()
        self.connection_factory = connection_factory or self._default_connection
        self.status = CameraStatus(name, target.stream_name)
        self.rejections: list[Rejection] = []
        self._stop = threading.Event()
        self._stop_deadline: float | None = None
        self._pending: collections.OrderedDict[int, PendingFragment] = collections.OrderedDict()
        self._in_flight: dict[int, PendingFragment] = {}  # sent on the current connection
        self._track: Track | None = None
        self._source_done = False
        self._source_error: str | None = None
        self._fatal: str | None = None
        self._progress = False
        self._sender_finished = False
        self._queue: asyncio.Queue | None = None
        self._acked: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None

    def _default_connection(self, target: StreamTarget) -> PutMediaConnection:
        return PutMediaConnection(target.data_endpoint, region=target.region,
                                  credentials=target.credentials, stream_name=target.stream_name,
                                  connect_timeout=self.config.connect_timeout_s)

    def stop(self) -> None:
        """Stop capturing; what was captured is still delivered, for up to stop_timeout_s."""
        if not self._stop.is_set():
            self._stop.set()
            self._stop_deadline = time.monotonic() + self.config.stop_timeout_s
        if self._wake is not None:
            self._wake.set()

    # --- event loop ------------------------------------------------------------------------

    async def run(self) -> CameraResult:
        loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(maxsize=0 if self.config.realtime else 4)
        self._acked = asyncio.Event()
        self._wake = asyncio.Event()
        capture = Capture(self.name, self.source, self.config, self._queue, self._stop)
        thread = threading.Thread(target=capture.run, args=(loop,), name=f"capture-{self.name}",
                                  daemon=True)
        thread.start()
        failures = 0
        try:
            while True:
                await self._admit_queued()
                if self._fatal:
                    break
                if self._source_done and not self._pending:
                    break
                if self._stopping_expired():
                    break
                if not self._pending:
                    # Nothing to send yet: wait for the first fragment before connecting.
                    self.status.state = "waiting"
                    try:
                        item = await asyncio.wait_for(self._queue.get(), 0.5)
                    except TimeoutError:
                        continue
                    self._admit(item)
                    continue
                self._progress = False
                try:
                    await self._session()
                    failures = 0
                except PutMediaError as err:
                    if not isinstance(err, AckError):  # an error ack is counted on arrival
                        self.status.errors += 1
                    self.status.last_error = str(err)
                    if isinstance(err, AckError) and err.renew and self._progress:
                        log.info("%s: %s; reconnecting", self.name, err)
                        continue  # an old connection, not a failure: no backoff
                    if not err.retryable:
                        log.error("%s: %s (not retryable)", self.name, err)
                        self._fatal = str(err)
                        break
                    failures = 1 if self._progress else failures + 1
                    if self.config.max_retries is not None and failures > self.config.max_retries:
                        self._fatal = f"giving up after {failures} failed attempts: {err}"
                        log.error("%s: %s", self.name, self._fatal)
                        break
                    delay = self._backoff(failures)
                    log.warning("%s: %s; reconnecting in %.1f s", self.name, err, delay)
                    self.status.state = "backoff"
                    await self._sleep(delay)
        finally:
            self._stop.set()
            await self._drain_thread(thread)
        return self._result()

    def _stopping_expired(self) -> bool:
        return self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with full jitter (AWS's recommendation)."""
        cap = min(self.config.backoff_max_s,
                  self.config.backoff_initial_s * (2 ** max(0, failures - 1)))
        return random.uniform(cap / 2, cap)

    async def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._stopping_expired():
            await self._admit_queued()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), min(left, 0.5))
            except TimeoutError:
                pass

    async def _drain_thread(self, thread: threading.Thread, timeout: float = 10.0) -> None:
        # Unblock a capture thread waiting on a full queue, then let it finish. A live source
        # blocked in a read cannot be interrupted: after `timeout` it is left behind (a daemon).
        deadline = time.monotonic() + timeout
        while thread.is_alive() and time.monotonic() < deadline:
            while self._queue is not None and not self._queue.empty():
                self._queue.get_nowait()
            await asyncio.sleep(0.05)
        while self._queue is not None and not self._queue.empty():
            self._admit(self._queue.get_nowait())

    def _result(self) -> CameraResult:
        self.status.discontinuities = self.source.discontinuities
        self.status.state = "failed" if self._fatal or self._source_error else "done"
        error = self._fatal or self._source_error
        unacked = len(self._pending)
        if unacked and not error:
            error = "stopped before every fragment was acknowledged"
        ok = not error and not self.status.rejected and not self.status.dropped and not unacked
        if not ok and self.status.state == "done":
            self.status.state = "incomplete"
        return CameraResult(ok, self.status, list(self.rejections), error, unacked)

    # --- fragments -------------------------------------------------------------------------

    def _admit(self, item) -> bool:
        """Take one item from the capture queue into the pending set. False: nothing more comes."""
        if item is SOURCE_END:
            self._source_done = True
            return False
        if isinstance(item, SourceFailed):
            self._source_error = str(item)
            self.status.errors += 1
            self.status.last_error = str(item)
            return True
        self.status.discontinuities = self.source.discontinuities
        self.status.fragments += 1
        self.status.frames += item.frames
        if len(self._pending) >= self.config.max_pending_fragments and self.config.realtime:
            _, oldest = self._pending.popitem(last=False)
            self._in_flight.pop(oldest.timecode, None)
            self.status.dropped += 1
            log.warning("%s: %d fragments unacknowledged; dropping the oldest (%d)", self.name,
                        len(self._pending) + 1, oldest.timecode)
        self._pending[item.timecode] = item
        return True

    async def _admit_queued(self) -> None:
        while self._queue is not None and not self._queue.empty():
            self._admit(self._queue.get_nowait())

    def _retire(self, fragment: PendingFragment, ack: Ack) -> None:
        self._pending.pop(fragment.timecode, None)
        self._in_flight.pop(fragment.timecode, None)
        self.status.persisted += 1
        self.status.last_fragment_number = ack.fragment_number
        self._progress = True
        self._acked.set()

    def _reject(self, fragment: PendingFragment, ack: Ack) -> None:
        self._pending.pop(fragment.timecode, None)
        self._in_flight.pop(fragment.timecode, None)
        self.status.rejected += 1
        self.rejections.append(Rejection(fragment.timecode, ack.error_id, ack.error_name))
        self._acked.set()

    # --- one PutMedia connection -----------------------------------------------------------

    async def _session(self) -> None:
        conn = self.connection_factory(self.target)
        self._in_flight = {}
        self._sender_finished = False
        self.status.state = "connecting"
        try:
            await conn.open()
            self.status.connections += 1
            self.status.state = "streaming"
            sender = asyncio.create_task(self._send_loop(conn), name=f"send-{self.name}")
            reader = asyncio.create_task(self._ack_loop(conn), name=f"acks-{self.name}")
            try:
                done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
                if sender in done and sender.exception() is None:
                    await reader  # body finished: collect the acks still due
                    if self._in_flight and not self._stopping_expired():
                        raise PutMediaConnectionError(
                            f"the service ended the PutMedia response with {len(self._in_flight)}"
                            " fragment(s) unacknowledged")
                    return
                if sender in done:
                    # A write failed; the answer may say why (a 404 before the close).
                    await asyncio.wait({reader}, timeout=1.0)
                    if reader.done() and not reader.cancelled() and reader.exception():
                        raise reader.exception()
                    raise sender.exception()
                error = reader.exception()
                if error is not None:
                    raise error
                if self._in_flight or not self._sender_finished:
                    raise PutMediaConnectionError("the service ended the PutMedia response early")
            finally:
                for task in (sender, reader):
                    if not task.done():
                        task.cancel()
                await asyncio.gather(sender, reader, return_exceptions=True)
        finally:
            await conn.close()
            self._in_flight = {}

    async def _send_loop(self, conn: PutMediaConnection) -> None:
        first = next(iter(self._pending.values()))
        self._track = first.track or self._track or self.source.track
        if self._track is None:
            raise PutMediaError("the source gave no video track")
        await self._send_bytes(conn, writer.stream_header([self._track]))
        for fragment in list(self._pending.values()):  # resend what is not retired yet
            if fragment.track is not None and fragment.track != self._track:
                break  # sent after a codec change: on the next connection, with its header
            if fragment.timecode in self._pending:
                await self._send_fragment(conn, fragment)
        else:
            await self._stream_new_fragments(conn)
        self._sender_finished = True
        await conn.finish()

    async def _stream_new_fragments(self, conn: PutMediaConnection) -> None:
        config = self.config
        while True:
            if conn.age >= config.max_connection_s:
                log.info("%s: renewing the PutMedia connection after %.0f s", self.name, conn.age)
                break
            if self._fatal or self._stopping_expired():
                break
            if self._source_done:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), 1.0)
            except TimeoutError:
                continue
            if not self._admit(item):
                break
            if isinstance(item, SourceFailed):
                continue
            if item.track is not None and item.track != self._track:
                log.info("%s: codec settings changed; starting a new connection", self.name)
                break  # the new header goes out on a new connection
            if not config.realtime:
                while len(self._pending) > config.max_pending_fragments:
                    self._acked.clear()
                    await self._acked.wait()
            if item.timecode in self._pending:
                await self._send_fragment(conn, item)

    async def _send_bytes(self, conn: PutMediaConnection, data: bytes) -> None:
        await conn.send(data)
        self.status.add_bytes(len(data))

    async def _send_fragment(self, conn: PutMediaConnection, fragment: PendingFragment) -> None:
        fragment.sent_at = time.monotonic()
        self._in_flight[fragment.timecode] = fragment
        if fragment.sends == 0:
            self.status.sent += 1
        else:
            self.status.resent += 1
        fragment.sends += 1
        fragment.state = "sent"
        await self._send_bytes(conn, fragment.data)

    async def _ack_loop(self, conn: PutMediaConnection) -> None:
        timeout = self.config.ack_timeout_s
        last_heard = time.monotonic()
        settled_at = None
        while True:
            if self._sender_finished and not self._in_flight:
                # All answered: give the service a moment to end the response, so that it has
                # let go of the stream's connection slot before we open the next one.
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at > END_GRACE_S:
                    return
            if self._stopping_expired():
                return
            try:
                ack = await conn.next_ack(timeout=0.5 if settled_at is None else 0.1)
            except TimeoutError:
                if self._in_flight:
                    oldest = min(f.sent_at for f in self._in_flight.values())
                    if time.monotonic() - max(last_heard, oldest) > timeout:
                        raise PutMediaConnectionError(
                            f"no acknowledgement for {timeout:g} s with {len(self._in_flight)} "
                            "fragment(s) outstanding") from None
                continue
            if ack is None:
                return
            last_heard = time.monotonic()
            self._handle_ack(ack)

    def _handle_ack(self, ack: Ack) -> None:
        event = ack.event_type
        if event == AckEvent.IDLE:
            return
        fragment = self._pending.get(ack.fragment_timecode) if ack.fragment_timecode is not None \
            else None
        if event == AckEvent.ERROR:
            self.status.errors += 1
            self.status.last_error = ack.describe()
            action = ack.action
            log.warning("%s: %s (ErrorId %s): %s", self.name, ack.describe(), ack.error_id,
                        action.value)
            if action == ErrorAction.SKIP and fragment is not None:
                self._reject(fragment, ack)
                return
            raise AckError(ack)
        if fragment is None:
            log.debug("%s: %s for an unknown or retired fragment", self.name, ack.describe())
            return
        fragment.state = event
        if event == self.target.done_event or event == AckEvent.PERSISTED:
            self._retire(fragment, ack)
