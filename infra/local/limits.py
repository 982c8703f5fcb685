"""AWS's Kinesis Video Streams limits, enforced by the local service with AWS's error types."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from .errors import ClientLimitExceeded


@dataclass(frozen=True)
class Limits:
    getmedia_connections_per_stream: int = 3
    calls_per_second: int = 5  # GetMedia and PutMedia calls, each, per stream
    max_fragment_bytes: int = 50 * 1024 * 1024
    max_fragment_ms: int = 10_000
    putmedia_max_connection_seconds: float = 45 * 60
    idle_ack_seconds: float = 3.0
    # A GetMedia reader that has caught up and sees no new fragment for this long gets the end of
    # its response; the consumer reconnects with its continuation token.
    getmedia_idle_seconds: float = 20.0

    def check_call_rate(self, calls: deque, api: str, stream_name: str) -> None:
        """Record a call in the stream's one-second window, or raise ClientLimitExceeded."""
        now = time.monotonic()
        while calls and now - calls[0] >= 1.0:
            calls.popleft()
        if len(calls) >= self.calls_per_second:
            raise ClientLimitExceeded(
                f"More than {self.calls_per_second} {api} calls a second on stream {stream_name}.")
        calls.append(now)
