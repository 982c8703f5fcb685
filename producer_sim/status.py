"""What a camera reports: live counters while it runs (`CameraStatus`, with the status line and
the bitrate), and its outcome when it ends (`CameraResult`, with the fragments the service
rejected, `Rejection`).
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field


@dataclass
class Rejection:
    timecode: int
    error_id: int | None
    error_code: str


@dataclass
class CameraStatus:
    """Live counters, read by the status line (from the event loop's thread)."""

    name: str
    stream: str
    state: str = "starting"
    fragments: int = 0  # cut from the source
    frames: int = 0
    sent: int = 0  # distinct fragments written to a connection
    resent: int = 0
    persisted: int = 0
    rejected: int = 0
    dropped: int = 0
    errors: int = 0  # error acks, failed connections and source failures
    discontinuities: int = 0  # times the source's timestamps repeated or went back
    connections: int = 0
    bytes_sent: int = 0
    last_error: str = ""
    last_fragment_number: str | None = None
    started: float = field(default_factory=time.monotonic)
    _window: collections.deque = field(default_factory=lambda: collections.deque(maxlen=64))

    def add_bytes(self, count: int) -> None:
        self.bytes_sent += count
        self._window.append((time.monotonic(), count))

    def bitrate(self, window_s: float = 5.0) -> float:
        """Bits per second sent over the last `window_s` seconds."""
        now = time.monotonic()
        recent = sum(n for t, n in self._window if now - t <= window_s)
        span = min(window_s, max(now - self.started, 1e-3))
        return recent * 8 / span

    def line(self) -> str:
        text = (f"{self.name:<10} {self.stream:<24} {self.state:<10} sent {self.sent:>5} "
                f"persisted {self.persisted:>5} errors {self.errors:>3} "
                f"{self.bitrate() / 1e6:6.2f} Mbit/s")
        if self.rejected or self.dropped:
            text += f" rejected {self.rejected} dropped {self.dropped}"
        if self.discontinuities:
            text += f" timecode resets {self.discontinuities}"
        if self.last_error and self.state in ("backoff", "failed"):
            text += f"  [{self.last_error[:80]}]"
        return text


@dataclass
class CameraResult:
    ok: bool
    status: CameraStatus
    rejections: list[Rejection]
    error: str | None = None
    unacknowledged: int = 0
    interrupted: bool = False

    def summary(self) -> str:
        s = self.status
        text = (f"{s.name}: {s.persisted}/{s.fragments} fragments ({s.frames} frames) persisted "
                f"to {s.stream}, {s.bytes_sent / 1e6:.1f} MB sent over {s.connections} "
                f"connection(s), {s.errors} error(s)")
        if s.rejected:
            text += f", {s.rejected} rejected"
        if s.dropped:
            text += f", {s.dropped} dropped"
        if self.unacknowledged:
            text += f", {self.unacknowledged} not acknowledged"
        if s.discontinuities:
            text += (f"; the source's timecodes repeated or went back {s.discontinuities} "
                     "time(s): kept increasing, a new fragment at each")
        if self.error:
            text += f": {self.error}"
        return text
