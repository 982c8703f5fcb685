"""Loaded (through PYTHONPATH) by consumers that the fault tests run under libfaketime with
FAKETIME_DONT_FAKE_MONOTONIC=1, where only the wall clock is shifted.

libfaketime 0.9.10 (Debian 12) then fails clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), the
call `time.sleep` makes, with EINVAL: every `time.sleep` raises OSError. Timed waits on locks
and conditions work (their monotonic clock is the real one), so `time.sleep` waits on an event
that is never set instead: the same duration on the same clock. Nothing changes in a process
without libfaketime.
"""

from __future__ import annotations

import os
import threading
import time

if "libfaketime" in os.environ.get("LD_PRELOAD", ""):
    _never = threading.Event()

    def _sleep(seconds: float) -> None:
        """time.sleep on a condition wait (see the module doc)."""
        if seconds < 0:
            raise ValueError("sleep length must be non-negative")
        _never.wait(seconds)

    time.sleep = _sleep
