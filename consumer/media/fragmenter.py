"""Packets to fragments: a new cluster starts at the first keyframe at or after the fragment duration,
or at the first keyframe at or after a discontinuity in the source's timestamps.

A fragment is a `consumer.wire.Fragment` (cluster timecode, frames with absolute timecodes, the
track). Timecodes are whatever the caller feeds in, in milliseconds: the camera feeds wall-clock
producer timestamps, so the cluster timecode is the ABSOLUTE timecode PutMedia expects.
`encode_cluster` gives the bytes of one fragment as it goes on the wire.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from consumer.wire import Fragment, Frame, Track, writer

log = logging.getLogger(__name__)

DEFAULT_FRAGMENT_DURATION_MS = 2000
# A keyframe this close before the target still starts a fragment: a 29.97 fps source with a
# keyframe every 60 frames lands at 1998 ms, and should make 2 s fragments, not 4 s ones.
KEYFRAME_SLACK_MS = 50
# Kinesis Video Streams rejects longer fragments (error 4002, MAX_FRAGMENT_DURATION_REACHED).
KVS_MAX_FRAGMENT_MS = 10_000
# SimpleBlock timecodes are signed 16-bit offsets from the cluster timecode.
MAX_CLUSTER_SPAN_MS = 32_767


class FragmenterError(ValueError):
    """The packets cannot be cut into valid fragments (no keyframe for too long)."""


@dataclass(slots=True)
class _Open:
    timecode: int
    frames: list[Frame]


class Fragmenter:
    """Feed packets in decode order with `add`; it returns each fragment as it completes.

    Packets before the first keyframe are dropped (a live source joined mid-GOP). A packet marked
    `discontinuity` (the source's clock repeated or went back there; see `timeline`) ends the open
    fragment at the next keyframe (the marked packet itself, if it is one), whatever the
    fragment's duration, as a KVS producer starts a new fragment where its timeline breaks.
    `flush()` ends the stream and returns the last fragment.
    """

    def __init__(self, track: Track | None = None,
                 fragment_duration_ms: int = DEFAULT_FRAGMENT_DURATION_MS,
                 slack_ms: int = KEYFRAME_SLACK_MS):
        if fragment_duration_ms <= 0:
            raise ValueError(f"fragment duration must be positive, got {fragment_duration_ms} ms")
        self.track = track
        self.fragment_duration_ms = fragment_duration_ms
        self.slack_ms = min(slack_ms, fragment_duration_ms // 2)
        self.dropped_before_keyframe = 0
        self._open: _Open | None = None
        self._last_timecode: int | None = None
        self._cut_at_keyframe = False  # a discontinuity was seen in the open fragment

    def add(self, timecode_ms: int, keyframe: bool, data, track: Track | None = None,
            discontinuity: bool = False) -> list[Fragment]:
        if track is not None:
            self.track = track
        out: list[Fragment] = []
        current = self._open
        if discontinuity and current is not None:
            self._cut_at_keyframe = True
        if current is None:
            if not keyframe:
                self.dropped_before_keyframe += 1
                return out
        elif keyframe and timecode_ms < current.timecode:
            raise FragmenterError(
                f"keyframe at {timecode_ms} is before the fragment it follows ({current.timecode}):"
                " timestamps must increase")
        elif keyframe and (self._cut_at_keyframe or timecode_ms - current.timecode
                           >= self.fragment_duration_ms - self.slack_ms):
            out.append(self._close())
            current = None
        if current is None:
            if self._last_timecode is not None and timecode_ms <= self._last_timecode:
                raise FragmenterError(
                    f"fragment timecode {timecode_ms} is not after the previous fragment's "
                    f"{self._last_timecode}: timestamps must increase")
            current = self._open = _Open(timecode_ms, [])
            self._last_timecode = timecode_ms
        span = timecode_ms - current.timecode
        if not -32768 <= span <= MAX_CLUSTER_SPAN_MS:
            raise FragmenterError(
                f"no keyframe for {span / 1000:.1f} s after {current.timecode}: a fragment cannot "
                f"span more than {MAX_CLUSTER_SPAN_MS / 1000:.1f} s (re-encode the source with "
                "a shorter keyframe interval)")
        current.frames.append(Frame(self.track.number if self.track else 1, timecode_ms,
                                    keyframe, data))
        return out

    def flush(self) -> list[Fragment]:
        return [self._close()] if self._open is not None else []

    def _close(self) -> Fragment:
        current = self._open
        assert current is not None
        self._open = None
        self._cut_at_keyframe = False
        fragment = Fragment(
            tracks=(self.track,) if self.track else (), cluster_timecode=current.timecode,
            frames=current.frames,
        )
        span = max(f.timecode for f in current.frames) - current.timecode
        if span >= KVS_MAX_FRAGMENT_MS:
            log.warning("fragment at %d spans %.1f s: Kinesis Video Streams rejects fragments "
                        "over 10 s (re-encode the source with a shorter keyframe interval)",
                        current.timecode, span / 1000)
        return fragment


def encode_cluster(fragment: Fragment) -> bytes:
    """The fragment as one known-size MKV Cluster (SimpleBlocks relative to its timecode)."""
    return writer.cluster(fragment.cluster_timecode, fragment.frames)


def fragment_packets(packets, track: Track | None = None,
                     fragment_duration_ms: int = DEFAULT_FRAGMENT_DURATION_MS,
                     base_ms: int = 0) -> list[Fragment]:
    """Cut a whole packet sequence (objects with pts_ms, keyframe, data) into fragments."""
    fragmenter = Fragmenter(track, fragment_duration_ms)
    fragments = []
    for packet in packets:
        # A source's track is known once its first packet is out.
        fragments.extend(fragmenter.add(base_ms + packet.pts_ms, packet.keyframe, packet.data,
                                        track or getattr(packets, "track", None),
                                        getattr(packet, "discontinuity", False)))
    fragments.extend(fragmenter.flush())
    return fragments
