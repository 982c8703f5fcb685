"""A camera's capture side: the thread that reads its source and hands fragments to the event loop.

The thread paces the source in real time unless asked to go as fast as possible, gives each packet
its wall-clock producer timestamp, cuts fragments and encodes their clusters (`PendingFragment`).
It puts them on the event loop's queue, then `SOURCE_END`; a source failure is put there as a
`SourceFailed` first. In real time the queue is unbounded and the capture never blocks; as fast
as possible the queue is bounded and the thread waits (backpressure).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumer.media.fragmenter import Fragmenter, encode_cluster
from consumer.media.sources import Source
from consumer.wire import Fragment, Track

if TYPE_CHECKING:
    from .camera import CameraConfig

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class PendingFragment:
    timecode: int
    data: bytes
    frames: int
    track: Track | None
    sends: int = 0
    state: str = "new"  # new, sent, BUFFERING, RECEIVED
    sent_at: float = 0.0


SOURCE_END = object()


class SourceFailed(Exception):
    pass


class Capture:
    """One camera's capture thread: `run(loop)` reads `source` until it ends, fails or `stop` is
    set, and puts what it cuts on `queue` (the event loop's), ending with SOURCE_END."""

    def __init__(self, name: str, source: Source, config: CameraConfig, queue: asyncio.Queue,
                 stop: threading.Event):
        self.name = name
        self.source = source
        self.config = config
        self._queue = queue
        self._stop = stop

    def run(self, loop: asyncio.AbstractEventLoop) -> None:
        config = self.config
        source = self.source
        fragmenter = Fragmenter(None, config.fragment_duration_ms)
        base: int | None = None
        if not source.live:
            # Producer timestamps come from the wall clock. In real time, pts 0 is now; as fast
            # as possible, the recording is placed so that it ends now (no future timestamps).
            # A source that defines its own epoch (the test pattern burns it in) keeps it.
            if source.epoch_ms is None:
                source.epoch_ms = now_ms() - (0 if config.realtime else (source.duration_ms or 0))
            base = source.epoch_ms
        try:
            for packet in source:
                if self._stop.is_set():
                    break
                if base is None:
                    base = now_ms() - packet.pts_ms
                timecode = base + packet.pts_ms
                if config.realtime and not source.live:
                    delay = (timecode - now_ms()) / 1000
                    if delay > 0 and self._stop.wait(delay):
                        break
                for fragment in fragmenter.add(timecode, packet.keyframe, packet.data,
                                               source.track, packet.discontinuity):
                    self._deliver(loop, fragment)
        except Exception as err:  # noqa: BLE001 - any source failure: report it, end cleanly
            log.error("%s: source %s failed: %s", self.name, source.name, err)
            self._deliver(loop, SourceFailed(f"source {source.name}: {err}"))
        try:
            # The fragment in progress starts on a keyframe: it is valid, send it.
            for fragment in fragmenter.flush():
                self._deliver(loop, fragment)
        finally:
            self._deliver(loop, SOURCE_END)
            try:
                source.close()
            except Exception as err:  # noqa: BLE001 - closing is best effort
                log.debug("%s: closing %s: %s", self.name, source.name, err)

    def _deliver(self, loop: asyncio.AbstractEventLoop, item) -> None:
        if isinstance(item, Fragment):
            track = item.tracks[0] if item.tracks else None
            item = PendingFragment(item.cluster_timecode, encode_cluster(item), len(item.frames),
                                   track)
        queue = self._queue
        if self.config.realtime:  # unbounded queue: never blocks the capture
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed
                pass
            return
        # As fast as possible: block this thread while the queue is full (backpressure).
        future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while True:
            try:
                future.result(timeout=0.5)
                return
            except TimeoutError:
                if self._stop.is_set() and loop.is_closed():
                    future.cancel()
                    return
