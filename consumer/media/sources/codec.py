"""H.264 in and out of PyAV: `H264Encoder` (libx264, fixed GOP, no B-frames) for sources that
re-encode, and `decode_packets` to turn AVCC payloads back into pictures (for checks and tests).

The encoder takes frames with millisecond pts and gives `Packet`s with AVCC payloads and the
`track` (avcC CodecPrivate) they need; pts are kept strictly increasing, and a frame marked as a
discontinuity is encoded as a keyframe whose packet keeps the mark.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from consumer.wire import Track

from .. import h264
from .base import DEFAULT_KEYFRAME_INTERVAL_S, Packet, SourceError, video_track

_GLOBAL_HEADER = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER: SPS/PPS in extradata, not in-band


class H264Encoder:
    """libx264 with a fixed GOP and no B-frames: a keyframe every `gop` frames, low latency."""

    def __init__(self, width: int, height: int, fps: float, keyframe_interval_s: float =
                 DEFAULT_KEYFRAME_INTERVAL_S, preset: str = "ultrafast"):
        # 4:2:0 needs even dimensions.
        self.width = width - width % 2
        self.height = height - height % 2
        self.fps = fps
        self.gop = max(1, round(fps * keyframe_interval_s))
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = self.width, self.height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1000)
        ctx.framerate = Fraction(fps).limit_denominator(1001)
        ctx.gop_size = self.gop
        ctx.max_b_frames = 0
        ctx.flags |= _GLOBAL_HEADER
        ctx.options = {
            "preset": preset, "tune": "zerolatency",
            "x264-params": f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0:bframes=0",
        }
        ctx.open()
        config = h264.avcc_config_from_annexb(ctx.extradata or b"")
        if config is None:
            raise SourceError("libx264 gave no SPS/PPS in its extradata")
        self._ctx = ctx
        self._last_pts: int | None = None
        self._discontinuities: set[int] = set()  # pts of frames that start a new fragment
        self.track = video_track(config, self.width, self.height, fps)

    def encode(self, frame: av.VideoFrame | None, pts_ms: int | None = None,
               discontinuity: bool = False) -> list[Packet]:
        """Encode one frame (None: flush). A `discontinuity` frame is encoded as a keyframe and
        its packet keeps the mark, so that a new fragment starts on it."""
        if frame is not None:
            if (frame.format.name != "yuv420p" or frame.width != self.width
                    or frame.height != self.height):
                frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
            if self._last_pts is not None and pts_ms <= self._last_pts:
                pts_ms = self._last_pts + 1  # libx264 needs strictly increasing pts
            self._last_pts = pts_ms
            # Our GOP, not the source's; but a discontinuity starts a fragment, so a keyframe.
            frame.pict_type = (av.video.frame.PictureType.I if discontinuity
                               else av.video.frame.PictureType.NONE)
            if discontinuity:
                self._discontinuities.add(pts_ms)
            frame.pts = pts_ms
            frame.time_base = self._ctx.time_base
        return [self._packet(p) for p in self._ctx.encode(frame)]

    def _packet(self, packet: av.Packet) -> Packet:
        pts = int(packet.pts)
        marked = pts in self._discontinuities
        self._discontinuities.discard(pts)
        return Packet(pts, bool(packet.is_keyframe), h264.annexb_to_avcc(bytes(packet)), marked)

    def flush(self) -> list[Packet]:
        return self.encode(None)


def decode_packets(track: Track, payloads, format: str | None = "rgb24") -> list[np.ndarray]:
    """Decode AVCC payloads with `track`'s CodecPrivate as extradata (for checks and tests).

    Frames come back as `format` arrays, or in the decoder's own pixel format with None.
    """
    ctx = av.CodecContext.create("h264", "r")
    ctx.extradata = bytes(track.codec_private)
    ctx.thread_type = "AUTO"
    frames = [frame for data in payloads for frame in ctx.decode(av.Packet(bytes(data)))]
    frames.extend(ctx.decode(None))
    return [frame.to_ndarray(format=format) if format else frame.to_ndarray()
            for frame in frames]
