"""Event clips: consecutive KVS fragments re-muxed to MP4 bytes from the original packets.

`clip_mp4(fragments, start_time=None, end_time=None) -> bytes`

- Video only: the first video track of each fragment, H.264 (`V_MPEG4/ISO/AVC`) with its avcC
  CodecPrivate as the MP4's extradata. Audio and other tracks are skipped.
- No decoding, no encoding: each frame's bytes become one MP4 sample unchanged (MKV and MP4 both
  store AVC as length-prefixed NAL units), with its keyframe flag.
- Trimming: times are seconds on the consumer's frame timeline, `producer_timestamp + frame_offset`
  (as in `consumer.pipeline.decode`; a missing producer timestamp counts as 0). The clip starts
  on the last keyframe at or before `start_time` (pre-roll, so the event frame decodes), or on
  the first keyframe if there is none before it; it ends with the last frame at or before
  `end_time`.
  Without `start_time` it starts at the first keyframe (leading non-keyframes cannot decode).
- Timeline: millisecond time base, starting at 0. Each fragment keeps its own frame spacing; a
  fragment whose timecodes repeat or go back is shifted to follow the previous one, so the clip's
  timestamps always increase. DTS equals PTS when frames are stored in presentation order; with
  B-frames, DTS are the sorted PTS delayed by the largest reordering.
- The MP4 is faststart (index first, playable while downloading); it is built in a temporary file.
- Raises ValueError when there is no video frame, no keyframe, or a codec this cannot mux.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from itertools import pairwise

import av

from consumer.wire import Fragment, Frame, Track, writer

CODECS = {"V_MPEG4/ISO/AVC": "h264"}
TIME_BASE = Fraction(1, 1000)


def _timeline(fragments: Sequence[Fragment]) -> list[tuple[Track, Frame, float, int]]:
    """(track, frame, event time s, clip pts ms) for every video frame, pts strictly increasing."""
    out: list[tuple[Track, Frame, float, int]] = []
    last_pts: int | None = None
    step, offset = 1, 0
    for fragment in fragments:
        track, frames = fragment.video_track, fragment.video_frames()
        if track is None or not frames:
            continue
        if track.codec_id not in CODECS:
            raise ValueError(f"cannot mux video codec {track.codec_id!r} into MP4 (H.264 only)")
        ms = [round(f.timecode * fragment.timecode_scale / 1e6) for f in frames]
        if last_pts is not None and min(ms) + offset <= last_pts:
            offset = last_pts + step - min(ms)  # repeated or backward timecodes: follow on
        base = fragment.producer_timestamp or 0.0
        for frame, t in zip(frames, ms):
            out.append((track, frame, base + fragment.frame_offset(frame), t + offset))
        ordered = sorted(ms)
        gaps = [b - a for a, b in pairwise(ordered) if b > a]
        step = max(1, round(frames[-1].duration * fragment.timecode_scale / 1e6)
                   if frames[-1].duration else (min(gaps) if gaps else step))
        last_pts = max(ms) + offset
    return out


def _select(items, start_time: float | None, end_time: float | None):
    keys = [i for i, item in enumerate(items) if item[1].keyframe]
    if not keys:
        raise ValueError("no keyframe in the fragments: a clip must start on one")
    first = keys[0]
    if start_time is not None:
        before = [i for i in keys if items[i][2] <= start_time]
        first = before[-1] if before else keys[0]
    chosen = [it for it in items[first:] if end_time is None or it[2] <= end_time]
    if not chosen:
        raise ValueError(f"no video frame between the clip start and end_time={end_time}")
    return chosen


def clip_mp4(fragments: Sequence[Fragment], start_time: float | None = None,
             end_time: float | None = None) -> bytes:
    """Re-mux the fragments' H.264 video to MP4 bytes, optionally trimmed; see the module doc."""
    items = _timeline(fragments)
    if not items:
        raise ValueError("no video frames in the fragments")
    items = _select(items, start_time, end_time)
    track = items[0][0]
    pts = [p - items[0][3] for *_, p in items]
    ordered = sorted(pts)
    delay = max(0, max(d - p for d, p in zip(ordered, pts)))
    dts = [d - delay for d in ordered]
    # faststart moves the index (moov) to the front in a second pass that reopens the file by
    # name, which a BytesIO cannot do: write to a temporary file and read it back.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        _write(path, track, items, pts, dts)
        with open(path, "rb") as f:
            return f.read()


def _template(track: Track, first: Frame) -> av.container.InputContainer:
    """A one-frame MKV of the track, opened by PyAV: its stream carries the avcC extradata."""
    data = writer.stream_header([track]) + writer.cluster(first.timecode, [first])
    return av.open(io.BytesIO(data))


def _write(path: str, track: Track, items, pts: list[int], dts: list[int]) -> None:
    # add_stream("h264") would open a libx264 encoder that replaces the extradata (and in PyAV 18
    # its muxed packets never reached the file); a stream copied from a demuxed template is the
    # stream-copy path: codec parameters and extradata as-is, no codec opened.
    with _template(track, items[0][1]) as template, \
            av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as output:
        stream = output.add_stream_from_template(template.streams.video[0])
        stream.time_base = TIME_BASE
        # Every sample needs a duration: MP4 gives the last one its packet's, and with 0 a
        # decoder drops that frame. Each frame lasts until the next; the last as long as the one
        # before it.
        order = sorted(pts)
        gap = order[-1] - order[-2] if len(order) > 1 else 1
        ends = dict(zip(order, order[1:] + [order[-1] + gap]))
        for (_, frame, _, _), p, d in zip(items, pts, dts):
            packet = av.Packet(bytes(frame.data))
            packet.stream = stream
            packet.time_base = TIME_BASE
            packet.pts, packet.dts, packet.duration = p, d, ends[p] - p
            packet.is_keyframe = frame.keyframe
            output.mux(packet)
