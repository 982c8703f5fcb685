"""Writes completed fragments to the checkpoint table: at most once per `min_interval` per
stream (the latest completed fragment wins), and everything outstanding on flush()."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Checkpointer:
    def __init__(self, store, min_interval: float = 1.0):
        self.store = store  # consumer.cloud.leases.CheckpointStore
        self.min_interval = min_interval
        self.saved: dict[str, int] = {}
        self.writes = 0
        self._pending: dict[str, int] = {}
        self._last_write: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checkpointer", daemon=True)

    def start(self) -> "Checkpointer":
        self._thread.start()
        return self

    def completed(self, stream_arn: str, fragment_number: int) -> None:
        """Tracker callback: this fragment and all before it are durable."""
        with self._lock:
            self._pending[stream_arn] = fragment_number

    def flush(self) -> None:
        self._write(force=True)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self.flush()

    def _run(self) -> None:
        while not self._stopping.wait(0.1):
            self._write(force=False)

    def _write(self, force: bool) -> None:
        now = time.monotonic()
        with self._lock:
            due = {arn: number for arn, number in self._pending.items()
                   if force or now - self._last_write.get(arn, 0.0) >= self.min_interval}
            for arn in due:
                del self._pending[arn]
        for arn, number in due.items():
            try:
                self.store.save(arn, number)
            except Exception as err:  # keep it for the next round; never lose a checkpoint
                log.warning("checkpoint for %s not saved (%s); will retry", arn, err)
                with self._lock:
                    self._pending.setdefault(arn, number)
                continue
            self.saved[arn] = number
            self.writes += 1
            self._last_write[arn] = now
