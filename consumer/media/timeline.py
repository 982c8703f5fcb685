"""A source's timestamps made fit for Kinesis Video Streams: always increasing, time kept.

Some cameras reset their clock at every fragment, or step it back when it is corrected; KVS
rejects a fragment whose timecode is not after the previous one (4004), and an encoder needs
increasing timestamps. A camera running the KVS producer SDK keeps its producer timestamps
monotonic; `Timeline` does the same for the simulator. It maps source timestamps to output
timestamps by an offset that changes only at a discontinuity:

* forward time is kept: a frame 40 ms after the previous one in the source is 40 ms after it in
  the output (gaps included), so 11 s of video stays 11 s of timestamps;
* a timestamp that repeats or goes back (a discontinuity) continues from the latest output
  timestamp plus one frame (the frame's own duration, else the stream's frame interval), and the
  packet is marked so that the fragmenter starts a new fragment there;
* the first discontinuity is logged; all are counted (`discontinuities`) for the summary.

Packets in decode order (`reordered=True`, re-muxed H.264) may step back within a group of
pictures when the stream has B-frames: only a keyframe that is not after everything before it, a
frame earlier than its own group's keyframe, or a repeated timestamp is a discontinuity there.
Decoded frames (`reordered=False`) come in presentation order: any step back or repeat is one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Mapped:
    """Where one source timestamp lands: the output ms, and whether a discontinuity starts here."""

    pts_ms: int
    discontinuity: bool


class Timeline:
    """Source timestamps (ms) in, strictly ordered output timestamps (ms) out; see the module."""

    def __init__(self, name: str, frame_ms: float, reordered: bool = True,
                 announce: bool = True):
        if frame_ms <= 0:
            raise ValueError(f"frame interval must be positive, got {frame_ms} ms")
        self.name = name
        self.frame_ms = frame_ms
        self.reordered = reordered
        self.announce = announce  # log the first discontinuity (a dry run does not)
        self.discontinuities = 0
        self.last_out_ms: int | None = None  # the latest output timestamp so far
        self._offset = 0  # output = source + offset, within a segment
        self._restart = True  # the next timestamp starts a segment (the first, or a new pass)
        self._last_raw: int | None = None
        self._max_raw: int | None = None  # latest source timestamp of the current segment
        self._gop_raw: int | None = None  # source timestamp of the current segment's keyframe

    def restart(self) -> None:
        """The source starts again (a file played in a loop): the next timestamp continues one
        frame after the latest output, and is not counted as a discontinuity."""
        self._restart = True

    def map(self, raw_ms: int, keyframe: bool = True, duration_ms: float | None = None) -> Mapped:
        """The output timestamp of a frame at source time `raw_ms`.

        `duration_ms` is the frame's own duration when the source knows it: the step taken
        after a discontinuity. Frames must come in the order they will be sent.
        """
        discontinuity = False
        if self._restart:
            start = 0 if self.last_out_ms is None else self.last_out_ms + self._step(duration_ms)
            self._begin_segment(raw_ms, start)
            self._restart = False
        elif self._goes_back(raw_ms, keyframe):
            start = self.last_out_ms + self._step(duration_ms)
            self._note(raw_ms, start)
            self._begin_segment(raw_ms, start)
            discontinuity = True
        self._last_raw = raw_ms
        self._max_raw = raw_ms if self._max_raw is None else max(self._max_raw, raw_ms)
        if keyframe:
            self._gop_raw = raw_ms
        out = raw_ms + self._offset
        self.last_out_ms = out if self.last_out_ms is None else max(self.last_out_ms, out)
        return Mapped(out, discontinuity)

    def _goes_back(self, raw_ms: int, keyframe: bool) -> bool:
        if keyframe or not self.reordered:
            return raw_ms <= self._max_raw
        # A B-frame may precede the frame before it, never its own group's keyframe.
        return raw_ms == self._last_raw or (self._gop_raw is not None and raw_ms < self._gop_raw)

    def _begin_segment(self, raw_ms: int, out_ms: int) -> None:
        self._offset = out_ms - raw_ms
        self._max_raw = self._gop_raw = None

    def _step(self, duration_ms: float | None) -> int:
        return max(1, round(duration_ms if duration_ms and duration_ms > 0 else self.frame_ms))

    def _note(self, raw_ms: int, out_ms: int) -> None:
        self.discontinuities += 1
        if self.discontinuities == 1 and self.announce:
            log.warning(
                "%s: timestamp %d ms is not after the previous %d ms (the source's clock repeated "
                "or went back); continuing at %d ms, one frame after the last, with a new "
                "fragment, as a KVS producer SDK does (further ones are counted in the summary)",
                self.name, raw_ms, self._max_raw, out_ms)
        else:
            log.debug("%s: timestamp %d ms is not after %d ms; continuing at %d ms", self.name,
                      raw_ms, self._max_raw, out_ms)
