"""Shared by the sink tests: acknowledgement collection and a fast backoff."""

from __future__ import annotations

import threading
from collections.abc import Callable

from consumer.cloud.backoff import Backoff

FAST = Backoff(base=0.01, cap=0.05)


class Acks:
    """Collects on_done results by record number."""

    def __init__(self):
        self._cond = threading.Condition()
        self.results: dict[object, list[bool]] = {}

    def __call__(self, tag) -> Callable[[bool], None]:
        def done(ok: bool) -> None:
            with self._cond:
                self.results.setdefault(tag, []).append(ok)
                self._cond.notify_all()
        return done

    def wait(self, count: int, timeout: float = 30) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.results) >= count, timeout)
