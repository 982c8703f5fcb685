"""One pass over a PyAV container's video stream, for the sources that read containers.

`open_container` opens a file, URL or device, turning PyAV's errors into `SourceError`s that name
it (FFmpeg's reason, never its raw errno: a file FFmpeg cannot parse is "not a video file PyAV can
read"). `PassReader` reads its first video stream once: H.264 is re-muxed untouched (Annex B
converted to AVCC), anything else (or everything, with `reencode`) is decoded and re-encoded by an
`H264Encoder`. Packet timestamps are put on a `Timeline`, so they always increase (keyframes
strictly), and the packet where the source's own timestamps repeated or went back is marked
`discontinuity`. The reader sets its owner's `track` as soon as the stream's SPS/PPS are known.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fractions import Fraction

import av

from .. import h264
from ..timeline import Timeline
from .base import DEFAULT_FPS, Packet, Source, SourceError, video_track
from .codec import H264Encoder


def _ms(value: int | None, time_base: Fraction | None) -> int | None:
    if value is None or time_base is None:
        return None
    return round(value * time_base * 1000)


def _stream_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            fps = float(rate)
            if 1 <= fps <= 240:
                return fps
    return None


class PassReader:
    """One pass over a container's video stream: yields packets with pts on `timeline`.

    H.264 is re-muxed (Annex B converted to AVCC where needed); anything else is decoded and
    handed to an `H264Encoder` (made on the first frame), which may be shared across passes, as
    may the timeline (None: a new one that starts at 0).
    """

    def __init__(self, owner: Source, container, reencode: bool, encoder: H264Encoder | None,
                 keyframe_interval_s: float, timeline: Timeline | None = None):
        self.owner = owner
        self.container = container
        if not container.streams.video:
            raise SourceError(f"{owner.name}: no video stream")
        self.stream = container.streams.video[0]
        if self.stream.codec_context is None:  # a codec id FFmpeg does not know
            raise SourceError(f"{owner.name}: its video codec is not one FFmpeg can decode")
        self.stream.thread_type = "AUTO"
        self.fps = _stream_fps(self.stream)
        codec = self.stream.codec_context.name
        self.remux = codec == "h264" and not reencode
        self.encoder = encoder
        self.keyframe_interval_s = keyframe_interval_s
        self.frame_ms = 1000 / (self.fps or DEFAULT_FPS)
        # Re-muxed packets come in decode order (B-frames may step back); decoded frames come
        # in presentation order.
        self.timeline = timeline or Timeline(owner.name, self.frame_ms, reordered=self.remux)

    def packets(self) -> Iterator[Packet]:
        """This pass's packets, their pts mapped onto the timeline."""
        if self.remux:
            for pts_ms, keyframe, data, duration_ms in self._remux():
                mapped = self.timeline.map(pts_ms, keyframe, duration_ms)
                yield Packet(mapped.pts_ms, keyframe, data, mapped.discontinuity)
        else:
            yield from self._reencode()

    def timestamps(self) -> Iterator[tuple[int, bool, int | None]]:
        """(pts ms, keyframe, duration ms) of every packet, demuxed only (nothing decoded)."""
        for packet in self.container.demux(self.stream):
            pts = _ms(packet.pts if packet.pts is not None else packet.dts, packet.time_base)
            if packet.size and pts is not None:
                yield pts, bool(packet.is_keyframe), _ms(packet.duration, packet.time_base)

    def _remux(self):
        stream = self.stream
        ctx = stream.codec_context
        extradata = bytes(ctx.extradata or b"")
        config = extradata if h264.is_avcc_config(extradata) else (
            h264.avcc_config_from_annexb(extradata) if extradata else None)
        annexb = not h264.is_avcc_config(extradata)
        if config is not None:
            self.owner.track = video_track(config, ctx.width, ctx.height, self.fps)
        for packet in self.container.demux(stream):
            if packet.size == 0:
                continue
            data = bytes(packet)
            if annexb:  # (an AVCC length prefix can look like a start code: never sniff)
                if config is None and packet.is_keyframe:
                    config = h264.avcc_config_from_annexb(data)
                    if config is not None:
                        self.owner.track = video_track(config, ctx.width, ctx.height, self.fps)
                data = h264.annexb_to_avcc(data)
            if config is None:
                continue  # no SPS/PPS yet: wait for a keyframe that carries them
            pts = _ms(packet.pts if packet.pts is not None else packet.dts, packet.time_base)
            if pts is None:
                continue
            yield pts, bool(packet.is_keyframe), data, _ms(packet.duration, packet.time_base)

    def _reencode(self) -> Iterator[Packet]:
        for index, frame in enumerate(self.container.decode(self.stream)):
            raw = _ms(frame.pts, frame.time_base)
            mapped = self.timeline.map(raw if raw is not None else int(index * self.frame_ms),
                                       duration_ms=_ms(frame.duration, frame.time_base))
            if self.encoder is None:
                self.encoder = H264Encoder(frame.width, frame.height, self.fps or DEFAULT_FPS,
                                           self.keyframe_interval_s)
                self.owner.track = self.encoder.track
            yield from self.encoder.encode(frame, mapped.pts_ms, mapped.discontinuity)
        if self.encoder is not None and not self.owner.loop:
            yield from self.encoder.flush()


def ffmpeg_reason(err: av.error.FFmpegError) -> str:
    """FFmpeg's message without the errno and file name PyAV's str() wraps it in."""
    return err.strerror or str(err)


def open_container(name: str, **kwargs):
    try:
        return av.open(name, **kwargs)
    except FileNotFoundError:
        raise SourceError(f"{name}: no such file") from None
    except av.error.InvalidDataError:
        if os.path.isfile(name):
            raise SourceError(f"not a video file PyAV can read: {name}") from None
        raise SourceError(f"{name}: cannot open: not a video stream PyAV can read") from None
    except av.error.FFmpegError as err:
        raise SourceError(f"{name}: cannot open: {ffmpeg_reason(err)}") from None
