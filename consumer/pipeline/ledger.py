"""Which fragments of one stream are fully processed, in order: what may be checkpointed.

A fragment's ticket counts the work still owed for it: each frame queued for analysis, each
output (a Kinesis record, a JPEG, a pose sequence) not yet acknowledged as durable. A fragment is
complete when its ticket is sealed (the decoder has queued all its frames) and nothing is owed.
Completions are reported in fragment order per stream: a fragment completing early waits for the
ones before it. A failed output (given up after retries) blocks the stream's checkpoint there, so
a restart re-delivers it; nothing is lost.

Each stream session owns one ledger and changes it on its own thread (writers' acknowledgements
are brought back to that thread), so the callbacks (`on_analysed`: fragment-level outputs;
`on_complete`: the checkpoint) run there too. The lock only keeps the counts consistent for
readers such as status lines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from processors.base import FrameResult
from processors.frames import FrameSource

log = logging.getLogger(__name__)


class FragmentTicket:
    """The work still owed for one fragment. Methods are thread-safe."""

    def __init__(self, tracker: "FragmentLedger", stream_arn: str, fragment_number: int,
                 producer_time: float | None = None):
        self.tracker = tracker
        self.stream_arn = stream_arn
        self.fragment_number = fragment_number
        self.producer_time = producer_time  # the fragment's producer timestamp
        self.began = time.monotonic()
        self.owed = 0
        self.frames = 0
        self.skipped = 0
        self.analysed: list[tuple[FrameSource, FrameResult]] = []
        self.sealed = False
        self.failed = False
        self.reported = False  # on_analysed has run (or had nothing to run for)
        self._reporting = False

    def frame_queued(self) -> None:
        with self.tracker.lock:
            self.owed += 1
            self.frames += 1

    def frame_skipped(self) -> None:
        """A queued frame was dropped (real-time policy): it owes nothing any more."""
        def change():
            self.skipped += 1
        self._update(change)

    def frame_abandoned(self) -> None:
        """A queued frame will not be analysed (shutdown): keep the checkpoint before it."""
        def change():
            self.skipped += 1
            self.failed = True
        self._update(change)

    def frame_analysed(self, source: FrameSource, result: FrameResult) -> None:
        """Call after registering the frame's outputs with output_added()."""
        self._update(lambda: self.analysed.append((source, result)))

    def output_added(self, count: int = 1) -> None:
        with self.tracker.lock:
            self.owed += count

    def output_done(self, ok: bool) -> None:
        def change():
            self.failed = self.failed or not ok
        self._update(change)

    def seal(self) -> None:
        """The decoder has queued every frame of the fragment."""
        def change():
            self.sealed = True
        self._update(change, owed=0)

    @property
    def complete(self) -> bool:
        return self.sealed and self.reported and self.owed == 0

    def _update(self, change: Callable[[], None], owed: int = -1) -> None:
        tracker = self.tracker
        with tracker.lock:
            change()
            self.owed += owed
            report = (self.sealed and not self._reporting
                      and len(self.analysed) + self.skipped >= self.frames)
            if report:
                self._reporting = True
        if report:
            # Every frame is analysed or skipped: fragment-level outputs (the pose sequence)
            # are registered here, before the fragment can be seen as complete.
            if tracker.on_analysed is not None:
                tracker.on_analysed(self)
            with tracker.lock:
                self.reported = True
        tracker._advance()


class FragmentLedger:
    """The tickets of one stream's fragments in flight, oldest first."""

    def __init__(self, stream_arn: str, on_complete: Callable[[FragmentTicket], None],
                 on_analysed: Callable[[FragmentTicket], None] | None = None):
        self.lock = threading.RLock()
        self.stream_arn = stream_arn
        self.on_complete = on_complete
        self.on_analysed = on_analysed
        self._tickets: deque[FragmentTicket] = deque()
        self._by_number: dict[int, FragmentTicket] = {}
        self.blocked_at: int | None = None  # the fragment whose outputs failed
        self.fenced = False  # the stream is no longer ours: failures are expected, not errors

    def begin(self, fragment_number: int, producer_time: float | None = None) -> FragmentTicket:
        ticket = FragmentTicket(self, self.stream_arn, fragment_number, producer_time)
        with self.lock:
            self._tickets.append(ticket)
            self._by_number[fragment_number] = ticket
        return ticket

    def fence(self) -> None:
        """The stream's lease is lost: outputs refused or abandoned from now on are the fence
        at work (the next owner re-reads the fragment), not a delivery failure."""
        self.fenced = True

    def ticket(self, fragment_number: int) -> FragmentTicket | None:
        with self.lock:
            return self._by_number.get(fragment_number)

    def in_flight(self) -> int:
        with self.lock:
            return len(self._tickets)

    def oldest(self) -> FragmentTicket | None:
        """The ticket the checkpoint waits for, if any."""
        with self.lock:
            return self._tickets[0] if self._tickets else None

    def _advance(self) -> None:
        completed: list[FragmentTicket] = []
        with self.lock:
            queue = self._tickets
            while queue:
                head = queue[0]
                if not head.complete:
                    break
                if head.failed:
                    if self.blocked_at is None:
                        if self.fenced:
                            log.info("stream %s: lease lost; fragment %d and later are left to "
                                     "the next owner", self.stream_arn, head.fragment_number)
                        else:
                            log.error("stream %s: fragment %d has outputs that could not be "
                                      "delivered; the checkpoint stays before it",
                                      self.stream_arn, head.fragment_number)
                        self.blocked_at = head.fragment_number
                    break
                queue.popleft()
                self._by_number.pop(head.fragment_number, None)
                completed.append(head)
        for ticket in completed:
            self.on_complete(ticket)
