"""Event clips for one stream: the recent fragments kept as read, and the clips owed for events.

The stream's reader thread adds every fragment as it arrives (`add_fragment`); the analysis
thread asks for a clip when an event is raised (`request`), registering it on the event frame's
fragment ticket so that fragment is not checkpointed before its clip is durable. A clip covers
`pre_roll` seconds before the event frame to `post_roll` after it (producer time), re-muxed from
the original packets by `consumer.formats.clips.clip_mp4`, starting on the keyframe at or before its
start. It is built (`ready`) once the reader has the post-roll video, or, when the stream goes
quiet or the consumer stops, with what there is (`ready(force=True)`).

Memory: fragments are kept while an owed clip or the pre-roll of the newest analysed frame may
need them, and never more than `max_fragments` (a stream far behind keeps its newest).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from consumer.formats import clips
from consumer.pipeline.ledger import FragmentTicket
from consumer.wire import Fragment

log = logging.getLogger(__name__)


@dataclass
class PendingClip:
    key: str
    event_time: float  # producer time of the frame that raised the event
    ticket: FragmentTicket  # of that frame's fragment: owes this clip until it is written
    metadata: dict[str, str]
    requested: float = field(default_factory=time.monotonic)


@dataclass
class ReadyClip:
    pending: PendingClip
    body: bytes | None  # None: nothing could be cut (no keyframe, codec), nothing to write


def fragment_span(fragment: Fragment) -> tuple[float, float] | None:
    """(first, last) video frame time in producer seconds, or None without video frames."""
    frames = fragment.video_frames()
    if not frames:
        return None
    base = fragment.producer_timestamp or 0.0
    offsets = [fragment.frame_offset(f) for f in frames]
    return base + min(offsets), base + max(offsets)


class ClipRecorder:
    def __init__(self, stream_name: str, pre_roll: float, post_roll: float,
                 max_fragments: int = 256, idle_seconds: float = 30.0):
        self.stream_name = stream_name
        self.pre_roll = pre_roll
        self.post_roll = post_roll
        self.max_fragments = max_fragments
        self.idle_seconds = idle_seconds  # a clip waits at most this long for its post-roll
        self._fragments: deque[tuple[Fragment, float, float]] = deque()
        self._pending: list[PendingClip] = []
        self._analysed_time: float | None = None
        self._lock = threading.Lock()

    def add_fragment(self, fragment: Fragment) -> None:
        span = fragment_span(fragment)
        if span is None:
            return
        with self._lock:
            self._fragments.append((fragment, *span))
            while len(self._fragments) > self.max_fragments:
                self._fragments.popleft()

    def request(self, key: str, event_time: float, ticket: FragmentTicket,
                metadata: dict[str, str]) -> None:
        ticket.output_added()
        with self._lock:
            self._pending.append(PendingClip(key, event_time, ticket, metadata))

    def note_analysed(self, producer_time: float) -> None:
        """The analysis reached this time: older fragments are needed only for owed clips."""
        with self._lock:
            self._analysed_time = producer_time
            horizon = min([producer_time] + [p.event_time for p in self._pending]) \
                - self.pre_roll
            while len(self._fragments) > 1 and self._fragments[0][2] < horizon:
                self._fragments.popleft()

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def ready(self, force: bool = False) -> list[ReadyClip]:
        """Clips whose video is all here (or, with force or after idle_seconds, as it is)."""
        now = time.monotonic()
        with self._lock:
            newest = self._fragments[-1][2] if self._fragments else None
            due = [p for p in self._pending
                   if force or now - p.requested > self.idle_seconds
                   or (newest is not None and newest >= p.event_time + self.post_roll)]
            if not due:
                return []
            self._pending = [p for p in self._pending if p not in due]
            windows = [(p, [f for f, first, last in self._fragments
                            if last >= p.event_time - self.pre_roll
                            and first <= p.event_time + self.post_roll]) for p in due]
        return [ReadyClip(p, self._cut(p, fragments)) for p, fragments in windows]

    def _cut(self, pending: PendingClip, fragments: list[Fragment]) -> bytes | None:
        try:
            return clips.clip_mp4(fragments, pending.event_time - self.pre_roll,
                                  pending.event_time + self.post_roll)
        except ValueError as err:
            log.warning("stream %s: no clip for %s: %s", self.stream_name, pending.key, err)
            return None
