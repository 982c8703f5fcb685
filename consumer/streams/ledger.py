"""Which fragments are fully processed, per stream, in order: what may be checkpointed.

A fragment's ticket counts the work still owed for it: each frame queued for analysis, each
output (a Kinesis record, a JPEG, a pose sequence) not yet acknowledged as durable. A fragment is
complete when its ticket is sealed (the decoder has queued all its frames) and nothing is owed.
Completions are reported in fragment order per stream: a fragment completing early waits for the
ones before it. A failed output (given up after retries) blocks the stream's checkpoint there, so
a restart re-delivers it; nothing is lost.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from processors.frames import FrameSource
from processors.base import FrameResult

log = logging.getLogger(__name__)


class FragmentTicket:
    """The work still owed for one fragment. Methods are thread-safe."""

    def __init__(self, tracker: "FragmentLedger", stream_arn: str, fragment_number: int):
        self.tracker = tracker
        self.stream_arn = stream_arn
        self.fragment_number = fragment_number
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
        tracker._advance(self.stream_arn)


class FragmentLedger:
    def __init__(self, on_complete: Callable[[str, int], None],
                 on_analysed: Callable[[FragmentTicket], None] | None = None):
        self.lock = threading.RLock()
        self.on_complete = on_complete
        self.on_analysed = on_analysed
        self._streams: dict[str, deque[FragmentTicket]] = {}
        self._blocked: dict[str, int] = {}  # stream -> fragment whose outputs failed

    def begin(self, stream_arn: str, fragment_number: int) -> FragmentTicket:
        ticket = FragmentTicket(self, stream_arn, fragment_number)
        with self.lock:
            self._streams.setdefault(stream_arn, deque()).append(ticket)
        return ticket

    def in_flight(self, stream_arn: str | None = None) -> int:
        with self.lock:
            if stream_arn is not None:
                return len(self._streams.get(stream_arn, ()))
            return sum(len(q) for q in self._streams.values())

    def blocked_at(self, stream_arn: str) -> int | None:
        with self.lock:
            return self._blocked.get(stream_arn)

    def forget(self, stream_arn: str) -> None:
        with self.lock:
            self._streams.pop(stream_arn, None)
            self._blocked.pop(stream_arn, None)

    def _advance(self, stream_arn: str) -> None:
        completed: list[int] = []
        with self.lock:
            queue = self._streams.get(stream_arn)
            while queue:
                head = queue[0]
                if not head.complete:
                    break
                if head.failed:
                    if not self._blocked.get(stream_arn):
                        log.error("stream %s: fragment %d has outputs that could not be "
                                  "delivered; the checkpoint stays before it",
                                  stream_arn, head.fragment_number)
                        self._blocked[stream_arn] = head.fragment_number
                    break
                queue.popleft()
                completed.append(head.fragment_number)
        for number in completed:
            self.on_complete(stream_arn, number)
