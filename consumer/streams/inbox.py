"""What reaches a stream session's own thread: the messages its reader posts, and `Port`, a
shared writer as the session sees it (acknowledgements come back as `Settle` messages).

Messages go through the session's inbox in order: a fragment's `FragmentRead`, one `FrameQueued`
per frame before that frame goes to analysis (so it is always ahead of the frame's result),
then `Sealed`; `READER_DONE` when the reader stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from consumer.wire import Fragment


@dataclass(frozen=True)
class FragmentRead:
    """The reader has a new fragment; its frames follow as `FrameQueued`, then `Sealed`."""

    fragment: Fragment


@dataclass(frozen=True)
class FrameQueued:
    """One more of the fragment's frames goes to analysis (posted before it does, so it is
    always ahead of the frame's result in the inbox)."""

    fragment_number: int


@dataclass(frozen=True)
class Sealed:
    """Every frame of the fragment has been queued."""

    fragment_number: int


@dataclass(frozen=True)
class Settle:
    on_done: Callable[[bool], None]
    ok: bool
    posted: float = 0.0  # time.perf_counter() of the writer's acknowledgement


READER_DONE = object()


class InOrder:
    """Analysis outcomes (anything with a `seq`, numbered 0, 1, ... as frames were submitted)
    put back in submission order: `arrived(x)` gives the outcomes now due, holding later ones
    until those before them have come."""

    def __init__(self) -> None:
        self._early: dict[int, object] = {}
        self._next = 0

    def arrived(self, outcome) -> Iterator:
        self._early[outcome.seq] = outcome
        while (due := self._early.pop(self._next, None)) is not None:
            self._next += 1
            yield due


class Port:
    """A shared writer as the session sees it: the same `put(..., on_done)`; the
    acknowledgement is brought back to the session's thread; with `admit`, the writer asks it
    just before sending (the Kinesis writer's fence)."""

    def __init__(self, writer, post: Callable[[object], None],
                 admit: Callable[[], bool] | None = None):
        self._writer = writer
        self._post = post
        self._extra = {"admit": admit} if admit is not None else {}

    def nudge(self) -> None:
        self._writer.nudge()

    def put(self, *args) -> None:
        *payload, on_done = args
        post = self._post
        self._writer.put(*payload, lambda ok: post(Settle(on_done, ok, time.perf_counter())),
                         **self._extra)
