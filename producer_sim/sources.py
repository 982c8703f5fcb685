"""Camera sources: encoded H.264 video packets with millisecond timestamps, and the track they need.

A source is an iterable of `Packet`s (pts in ms from the source's own start, keyframe flag, AVCC
payload) with a `track` (CodecPrivate avcC, width, height) that is known once the first packet has
been yielded. H.264 inputs are re-muxed untouched; any other codec (or `reencode=True`) is decoded
and re-encoded with libx264 with a fixed GOP. Packet timestamps always increase (keyframes
strictly): a source whose own timestamps repeat or go back is put on a `Timeline`, and the packet
where that happened is marked `discontinuity` (re-encoded, it is made a keyframe); `discontinuities`
counts them. Sources:

* `FileSource`: any file PyAV can read, once or in a loop;
* `TestPatternSource`: colour bars, a moving subject and a burned-in clock (see `pattern`);
* `LiveSource`: an RTSP URL or a local webcam device, opened with `av.open` (thin by design).

`open_source(spec)` turns a command-line source string into one of these.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from consumer.wire import Track, ebml

from . import h264
from .pattern import draw_frame
from .timeline import Timeline

log = logging.getLogger(__name__)

CODEC_ID_H264 = "V_MPEG4/ISO/AVC"
VIDEO_TRACK_NUMBER = 1
DEFAULT_FPS = 30
DEFAULT_KEYFRAME_INTERVAL_S = 1.0
_GLOBAL_HEADER = 1 << 22  # AV_CODEC_FLAG_GLOBAL_HEADER: SPS/PPS in extradata, not in-band


class SourceError(Exception):
    """A source that cannot be opened or read; the message names it and says why."""


@dataclass(frozen=True, slots=True)
class Packet:
    """One encoded video frame: AVCC payload, presentation time in ms, keyframe flag, and whether
    the source's own timestamps repeated or went back here (a new fragment should start)."""

    pts_ms: int
    keyframe: bool
    data: bytes
    discontinuity: bool = False


def video_track(codec_private: bytes, width: int, height: int, fps: float | None = None) -> Track:
    return Track(
        number=VIDEO_TRACK_NUMBER, type=ebml.TRACK_TYPE_VIDEO, codec_id=CODEC_ID_H264,
        codec_private=codec_private, uid=VIDEO_TRACK_NUMBER, name="video", width=width,
        height=height, default_duration_ns=round(1e9 / fps) if fps else None,
    )


class Source:
    """Base class. Iterate for packets; `track` is set by the time the first packet is yielded."""

    name: str = "source"
    live: bool = False  # paced by the device itself: no real-time pacing needed
    epoch_ms: int | None = None  # wall-clock time of pts 0, when the source defines it
    duration_ms: int | None = None  # of one pass, when known
    loop: bool = False
    track: Track | None = None

    @property
    def discontinuities(self) -> int:
        """How many times the source's own timestamps repeated or went back (kept increasing)."""
        return 0

    def __iter__(self) -> Iterator[Packet]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


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


class _PassReader:
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


def _open_container(name: str, **kwargs):
    try:
        return av.open(name, **kwargs)
    except FileNotFoundError:
        raise SourceError(f"{name}: no such file") from None
    except av.error.FFmpegError as err:
        raise SourceError(f"{name}: cannot open: {err}") from None


class FileSource(Source):
    """A media file: H.264 re-muxed as is, other codecs re-encoded; once or in a loop.

    In a loop every pass continues the timeline: pts of pass n+1 start one frame after the last
    frame of pass n, so fragment timecodes keep increasing. `duration_ms` is the container's
    duration, or, when the container does not say (live-style MKV), the span of its timestamps
    as they will be sent (read from the packets without decoding, on first use).
    """

    def __init__(self, path: str | os.PathLike, loop: bool = False, reencode: bool = False,
                 keyframe_interval_s: float = DEFAULT_KEYFRAME_INTERVAL_S):
        self.path = Path(path)
        self.name = str(path)
        self.loop = loop
        self.reencode = reencode
        self.keyframe_interval_s = keyframe_interval_s
        self._timeline: Timeline | None = None
        self._duration_ms: int | None = None
        self._duration_read = False  # from the container, or by the scan
        if not self.path.exists():
            raise SourceError(f"{self.name}: no such file")
        if not self.path.is_file():
            raise SourceError(f"{self.name}: not a file")
        # Probe now so a bad file is reported before any connection is made.
        container = _open_container(self.name)
        try:
            reader = _PassReader(self, container, reencode, None, keyframe_interval_s)
            self.codec = reader.stream.codec_context.name
            self.remuxed = reader.remux
            if container.duration:
                self._duration_ms = int(container.duration / 1000)
                self._duration_read = True
        finally:
            container.close()
        self._container = None

    @property
    def duration_ms(self) -> int | None:  # type: ignore[override]
        if not self._duration_read:
            self._duration_ms = self._timestamps_span_ms()
            self._duration_read = True
        return self._duration_ms

    @property
    def discontinuities(self) -> int:
        return self._timeline.discontinuities if self._timeline is not None else 0

    def _timestamps_span_ms(self) -> int | None:
        """One pass's length as sent: its last timestamp on a timeline, plus one frame."""
        container = _open_container(self.name)
        try:
            reader = _PassReader(self, container, self.reencode, None, self.keyframe_interval_s)
            # Packets in decode order; the push itself reports the discontinuities, not this.
            timeline = Timeline(self.name, reader.frame_ms, reordered=True, announce=False)
            for pts, keyframe, duration in reader.timestamps():
                timeline.map(pts, keyframe, duration)
        except av.error.FFmpegError:
            return None
        finally:
            container.close()
        if timeline.last_out_ms is None:
            return None
        return timeline.last_out_ms + round(reader.frame_ms)

    def __iter__(self) -> Iterator[Packet]:
        encoder = None
        self._timeline = None
        passes = 0
        while True:
            self._container = container = _open_container(self.name)
            try:
                reader = _PassReader(self, container, self.reencode, encoder,
                                     self.keyframe_interval_s, self._timeline)
                self._timeline = reader.timeline
                count = 0
                for packet in reader.packets():
                    count += 1
                    yield packet
                encoder = reader.encoder
            except av.error.FFmpegError as err:
                raise SourceError(f"{self.name}: cannot read: {err}") from None
            finally:
                container.close()
                self._container = None
            passes += 1
            if not self.loop or count == 0:
                if passes == 1 and count == 0:
                    raise SourceError(f"{self.name}: no video frames")
                return
            self._timeline.restart()  # the next pass continues one frame after this one

    def close(self) -> None:
        if self._container is not None:
            self._container.close()


class TestPatternSource(Source):
    """Synthetic camera: colour bars, a bouncing subject, the producer clock burned in.

    `epoch_ms` is the wall-clock time of pts 0 (now, by default); the clock on each frame is
    epoch_ms + pts, which is the producer timestamp the camera gives that frame. `frames` limits
    the length (None: endless). A keyframe comes every `keyframe_interval_s`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, width: int = 640, height: int = 480, fps: float = DEFAULT_FPS,
                 frames: int | None = None, epoch_ms: int | None = None,
                 keyframe_interval_s: float = DEFAULT_KEYFRAME_INTERVAL_S):
        if width < 16 or height < 16 or width > 4096 or height > 4096:
            raise SourceError(f"test pattern size {width}x{height} is out of range (16..4096)")
        if not 1 <= fps <= 120:
            raise SourceError(f"test pattern frame rate {fps} is out of range (1..120)")
        self.name = f"testpattern:{width}x{height}@{fps:g}"
        self.width, self.height, self.fps = width - width % 2, height - height % 2, fps
        self.frames = frames
        self.epoch_ms = epoch_ms
        self.keyframe_interval_s = keyframe_interval_s
        if frames is not None:
            self.duration_ms = int(frames * 1000 / fps)

    def frame_pts(self, index: int) -> int:
        return round(index * 1000 / self.fps)

    def __iter__(self) -> Iterator[Packet]:
        if self.epoch_ms is None:
            self.epoch_ms = int(time.time() * 1000)
        encoder = H264Encoder(self.width, self.height, self.fps, self.keyframe_interval_s)
        self.track = encoder.track
        index = 0
        while self.frames is None or index < self.frames:
            pts = self.frame_pts(index)
            rgb = draw_frame(self.width, self.height, pts, self.epoch_ms, index)
            yield from encoder.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24"), pts)
            index += 1
        yield from encoder.flush()


def webcam_format() -> str:
    if sys.platform.startswith("linux"):
        return "v4l2"
    if sys.platform == "darwin":
        return "avfoundation"
    return "dshow"


class LiveSource(Source):
    """An RTSP URL or a webcam device via av.open: re-muxed when H.264, re-encoded otherwise.

    Live sources pace themselves, so the camera does not pace them; their pts start at 0 at the
    first packet.
    """

    live = True

    def __init__(self, url: str, format: str | None = None, options: dict | None = None,
                 reencode: bool = False, keyframe_interval_s: float = DEFAULT_KEYFRAME_INTERVAL_S):
        self.name = url
        self.url = url
        self.format = format
        self.options = dict(options or {})
        self.reencode = reencode
        self.keyframe_interval_s = keyframe_interval_s
        self._container = None
        self._timeline: Timeline | None = None

    @property
    def discontinuities(self) -> int:
        return self._timeline.discontinuities if self._timeline is not None else 0

    @classmethod
    def rtsp(cls, url: str, **kwargs) -> LiveSource:
        # TCP interleaving survives NAT and loss better than UDP; timeout is in microseconds.
        return cls(url, options={"rtsp_transport": "tcp", "timeout": "10000000"}, **kwargs)

    @classmethod
    def webcam(cls, device: str, width: int | None = None, height: int | None = None,
               fps: float | None = None, **kwargs) -> LiveSource:
        options = {}
        if width and height:
            options["video_size"] = f"{width}x{height}"
        if fps:
            options["framerate"] = f"{fps:g}"
        return cls(device, format=webcam_format(), options=options, **kwargs)

    def __iter__(self) -> Iterator[Packet]:
        self._container = container = _open_container(self.url, format=self.format,
                                                      options=self.options)
        try:
            reader = _PassReader(self, container, self.reencode, None, self.keyframe_interval_s)
            self._timeline = reader.timeline
            yield from reader.packets()
        except av.error.FFmpegError as err:
            raise SourceError(f"{self.name}: cannot read: {err}") from None
        finally:
            container.close()
            self._container = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()


def parse_size_rate(text: str, default_fps: float = DEFAULT_FPS) -> tuple[int | None, int | None,
                                                                            float | None]:
    """'640x480@25' -> (640, 480, 25.0); '640x480' -> (640, 480, None); '' -> (None,)*3."""
    if not text:
        return None, None, None
    size, _, rate = text.partition("@")
    width = height = None
    fps = None
    try:
        if size:
            w, _, h = size.lower().partition("x")
            width, height = int(w), int(h)
        if rate:
            fps = float(rate)
    except ValueError:
        raise SourceError(f"bad size/rate {text!r}: expected WIDTHxHEIGHT[@FPS], e.g. "
                          "640x480@30") from None
    return width, height, fps


def open_source(spec: str, *, loop: bool = False, reencode: bool = False,
                keyframe_interval_s: float = DEFAULT_KEYFRAME_INTERVAL_S) -> Source:
    """A source from its command-line spelling.

    * ``testpattern`` or ``testpattern:1280x720@25``: the synthetic camera;
    * ``rtsp://...`` / ``rtsps://...``: an RTSP camera;
    * ``webcam:/dev/video0`` (Linux), ``webcam:0`` (macOS), optionally ``@640x480@30`` after it;
    * anything else: a media file (played once, or in a loop with `loop`).
    """
    if spec == "testpattern" or spec.startswith("testpattern:"):
        width, height, fps = parse_size_rate(spec.partition(":")[2])
        return TestPatternSource(width or 640, height or 480, fps or DEFAULT_FPS,
                                 keyframe_interval_s=keyframe_interval_s)
    if spec.startswith(("rtsp://", "rtsps://")):
        return LiveSource.rtsp(spec, reencode=reencode, keyframe_interval_s=keyframe_interval_s)
    if spec.startswith("webcam:"):
        device, _, rest = spec[len("webcam:"):].partition("@")
        if not device:
            raise SourceError(f"{spec!r}: name the device, e.g. webcam:/dev/video0")
        width, height, fps = parse_size_rate(rest)
        return LiveSource.webcam(device, width, height, fps, reencode=True,
                                 keyframe_interval_s=keyframe_interval_s)
    return FileSource(spec, loop=loop, reencode=reencode, keyframe_interval_s=keyframe_interval_s)


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
