"""One persistent PyAV decoder per stream, fed fragment by fragment, with a sampling policy.

The decoder is drained at the end of each fragment (KVS fragments start on a keyframe), so every
frame of a fragment comes out with that fragment's provenance, and frame threading can be used
without frames leaking into the next fragment. Only the video track is decoded. In keyframes mode
other frames are never decoded; in fps mode frames are decoded up to the fragment's last sampled
one (earlier frames are referenced by it; later ones are not needed), and only the sampled ones
are converted to RGB. Sampled frames come out as they are decoded, not when the whole fragment
is.

Damaged video (a frame cut short, bytes lost in transit: PutMedia checks the container, never the
codec payload) is decoded as far as it goes: a frame the codec rejects is skipped, the frames it
still makes (concealing errors from their references) are kept, and `damage` describes what was
lost. Only a fragment of which nothing decodes is an error. Which frames come out depends on
the bytes alone, so a replay after a crash analyses the same frames (the pixels FFmpeg's frame
threads conceal errors with may differ from run to run).

With `device` cuda or cuda:N (processing.decode.device) the codec runs on NVDEC through PyAV's
hardware acceleration (consumer.pipeline.nvdec); each picture is brought back to system memory
and converted to the same RGB as the CPU's. Which frames are fed and sampled, their provenance and
the damage accounting do not depend on the device. A stream whose decoder cannot open on the GPU
(no GPU or driver, a codec without a CUDA decoder), or whose first fragment the GPU decodes to
nothing while the CPU decodes it, is decoded on the CPU from then on, with one warning per
process (a fleet runs hundreds of streams): the stream goes on, slower, rather than stopping.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av

from consumer.config import Sampling, SamplingMode
from consumer.media import h264
from consumer.pipeline.nvdec import GpuUnavailable, open_cuda, planar, warn_fallback
from consumer.wire import Fragment, Frame, Track
from processors.frames import FileOrigin, FrameSource, VideoFrame

log = logging.getLogger(__name__)

CODECS = {
    "V_MPEG4/ISO/AVC": "h264",
    "V_MPEGH/ISO/HEVC": "hevc",
    "V_MJPEG": "mjpeg",
    "V_VP8": "vp8",
    "V_VP9": "vp9",
    "V_AV1": "av1",
}
_MS = Fraction(1, 1000)
# Frame offsets come in whole milliseconds (KVS timecodes), due times are multiples of 1/fps:
# a frame up to a millisecond early is on time.
TIMECODE_TOLERANCE = 0.001


class DecodeError(Exception):
    """A fragment (or its codec) cannot be decoded; the stream goes on with the next one."""

    def __init__(self, stream: str, fragment_number: int | None, reason: str):
        super().__init__(f"stream {stream}: fragment {fragment_number}: {reason}")
        self.stream = stream
        self.fragment_number = fragment_number
        self.reason = reason


@dataclass(frozen=True)
class Damage:
    """What went wrong decoding a fragment that still gave frames."""

    fed: int  # frames given to the codec
    lost: int  # of those, how many gave no picture
    concealed: int  # pictures the codec flagged as corrupt (errors concealed)
    first_error: str | None  # the codec's first complaint, if it made one

    def __str__(self) -> str:
        parts = []
        if self.lost:
            parts.append(f"{self.lost} of {self.fed} frames did not decode")
        if self.concealed:
            parts.append(f"{self.concealed} decoded with errors concealed")
        if not parts:
            parts.append("the decoder reported errors")
        return ", ".join(parts) + (f" ({self.first_error})" if self.first_error else "")


@dataclass
class _Sampler:
    """Chooses which frames of a fragment to analyse.

    The fps schedule restarts at each fragment's first frame, so the frames chosen depend on the
    fragment alone: a replay after a crash analyses the same frames, with the same record ids.
    """

    sampling: Sampling
    next_offset: float = 0.0

    def start_fragment(self) -> None:
        self.next_offset = 0.0

    def take(self, offset: float, keyframe: bool) -> bool:
        mode = self.sampling.mode
        if mode is SamplingMode.ALL:
            return True
        if mode is SamplingMode.KEYFRAMES:
            return keyframe
        if offset + TIMECODE_TOLERANCE < self.next_offset:
            return False
        interval = 1.0 / self.sampling.fps
        # stay on the grid unless a gap in the video left us more than a period behind it
        on_grid = offset < self.next_offset + interval
        self.next_offset = (self.next_offset if on_grid else offset) + interval
        return True


class StreamDecoder:
    def __init__(self, stream_name: str, stream_arn: str, sampling: Sampling,
                 threads: str = "AUTO", device: str = "cpu", origin: FileOrigin | None = None):
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.origin = origin  # a recorded file's (batch mode), carried by every frame
        self.threads = threads
        self.device = device  # as configured: cpu, cuda or cuda:N
        self._gpu = device != "cpu"  # False once this stream has fallen back to the CPU
        self._gpu_proven = False  # the GPU has made a picture of this stream
        self._sampler = _Sampler(sampling)
        self._context: av.CodecContext | None = None
        self._track_key: tuple | None = None
        self.frames_decoded = 0
        self.damage: Damage | None = None  # of the last fragment decoded

    def decode(self, fragment: Fragment) -> list[VideoFrame]:
        """The fragment's sampled frames, RGB, in presentation order (see `frames`)."""
        return list(self.frames(fragment))

    def frames(self, fragment: Fragment) -> Iterator[VideoFrame]:
        """The fragment's sampled frames, RGB, in presentation order, each as soon as the codec
        gives it (a sampled frame is analysed while later ones are still decoding).

        Which frames are sampled is decided from the container's timecodes before decoding, and
        only the packets up to the last sampled one (in decode order: everything a sampled frame
        may reference comes before it) go through the codec: with fps sampling the rest of a
        group of pictures is never decoded. After a damaged fragment, `damage` says what did not
        decode (None after a clean one); a sampled frame that did not decode is not replaced by
        another, so a replay picks the same frames. Raises DecodeError when the codec is not
        supported or nothing in the fragment decodes (before anything was yielded).
        """
        self.damage = None
        track = fragment.video_track
        if track is None or not fragment.frames:
            return
        in_order = fragment.video_frames()  # decode order, as the container holds them
        video = sorted(in_order, key=lambda f: f.timecode)
        sampled = self._plan(fragment, video)
        fed = _prefix(in_order, sampled, self._sampler.sampling.mode is SamplingMode.KEYFRAMES,
                      _disposable_test(track))
        index_of = {f.timecode: i for i, f in enumerate(video)}
        errors: list[str] = []
        decoded = concealed = 0
        for picture in self._decoded(track, fragment, fed, errors):
            decoded += 1
            self.frames_decoded += 1
            concealed += picture.is_corrupt
            if picture.pts in sampled:
                yield self._frame(fragment, video[index_of[picture.pts]], index_of[picture.pts],
                                  picture, sampled[picture.pts])
        if video and fed and not decoded:
            self._reset()  # a codec that made nothing may be in a bad state: start afresh
            first = f" ({errors[0]})" if errors else ""
            raise DecodeError(self.stream_name, fragment.fragment_number,
                              f"{len(fed)} {track.codec_id} frames decoded to nothing{first}")
        lost = max(0, len(fed) - decoded)
        if errors or lost or concealed:
            self.damage = Damage(len(fed), lost, concealed, errors[0] if errors else None)

    def _plan(self, fragment: Fragment, video: list[Frame]) -> dict[int, bool]:
        """Timecode -> keyframe, of the frames the sampling policy takes (presentation order)."""
        self._sampler.start_fragment()
        return {f.timecode: f.keyframe for f in video
                if self._sampler.take(fragment.frame_offset(f), f.keyframe)}

    def _frame(self, fragment: Fragment, frame: Frame, index: int, picture,
               keyframe: bool) -> VideoFrame:
        source = FrameSource(self.stream_name, self.stream_arn, fragment.fragment_number or 0,
                             fragment.server_timestamp or 0.0, fragment.producer_timestamp or 0.0,
                             fragment.frame_offset(frame), index, self.origin)
        return VideoFrame(source, planar(picture).to_ndarray(format="rgb24"), keyframe)

    @property
    def decoding_on(self) -> str:
        """Where this stream is decoded: the configured device, or "cpu" after a fallback."""
        return self.device if self._gpu else "cpu"

    def _decoded(self, track: Track, fragment: Fragment, fed: list,
                 errors: list[str]) -> Iterator:
        """The pictures of the fed frames. Until the GPU has made a picture of this stream, a
        fragment it makes nothing of is decoded again on the CPU (nothing was given out yet):
        if the CPU makes pictures of it, the CPU takes the stream over; if not, the fragment
        is damaged, the GPU is kept, and `errors` are the CPU's (as on a CPU-only stream)."""
        context = self._context_for(track, fragment)
        on_trial = context.is_hwaccel and not self._gpu_proven
        made = 0
        for picture in _pictures(context, fed, errors):
            made += 1
            yield picture
        if not on_trial or made or not fed:
            self._gpu_proven |= on_trial and made > 0
            return
        codec = CODECS[track.codec_id]
        gpu_errors, errors[:] = errors[:], []
        cpu = self._open(codec, track, gpu=False)
        for picture in _pictures(cpu, fed, errors):
            made += 1
            yield picture
        if made:
            first = f" ({gpu_errors[0]})" if gpu_errors else ""
            self._fall_back(codec, f"NVDEC decoded nothing of a fragment the CPU decodes{first}")
            self._context = cpu

    def _context_for(self, track: Track, fragment: Fragment) -> av.CodecContext:
        key = (track.codec_id, track.codec_private)
        if self._context is not None and key == self._track_key:
            return self._context
        codec = CODECS.get(track.codec_id)
        if codec is None:
            raise DecodeError(self.stream_name, fragment.fragment_number,
                              f"codec {track.codec_id!r} is not supported "
                              f"(supported: {', '.join(sorted(CODECS))})")
        self._reset()
        context = self._open(codec, track, gpu=self._gpu)
        self._context, self._track_key = context, key
        return context

    def _open(self, codec: str, track: Track, gpu: bool) -> av.CodecContext:
        context = None
        if gpu:
            try:
                # FFmpeg's threading default is kept: NVDEC does the work, and frame threads
                # would only hold more of its surfaces
                context = open_cuda(codec, self.device)
            except GpuUnavailable as err:
                self._fall_back(codec, str(err))
        if context is None:
            context = av.CodecContext.create(codec, "r")
            context.thread_type = self.threads
        if track.codec_private:
            context.extradata = bytes(track.codec_private)
        return context

    def _fall_back(self, codec: str, reason: str) -> None:
        self._gpu = False
        warn_fallback(self.device, self.stream_name, codec, reason)

    def _reset(self) -> None:
        self._context = None
        self._track_key = None

    def close(self) -> None:
        self._reset()


def _prefix(in_order: list[Frame], sampled: dict[int, bool], keyframes_only: bool,
            disposable: Callable[[Frame], bool] | None = None) -> list:
    """The packets to decode: up to the last sampled frame in decode order (keyframes alone in
    keyframes mode), less the frames not sampled that no other frame references (`disposable`:
    H.264's non-reference B-frames, about half the frames of a file encoded with B-frames;
    cameras rarely send any). Closed GOPs, as KVS producers send, need nothing after the last
    sampled frame; an open GOP's leading B-frames belong to the next fragment's keyframe and are
    not sampled from here."""
    last = max((i for i, f in enumerate(in_order) if f.timecode in sampled), default=-1)
    return [f for f in in_order[:last + 1]
            if (f.keyframe or not keyframes_only)
            and (disposable is None or f.timecode in sampled or not disposable(f))]


def _disposable_test(track: Track) -> Callable[[Frame], bool] | None:
    """How to tell a frame no other references, for the codecs where that is cheap (H.264)."""
    if track.codec_id != "V_MPEG4/ISO/AVC":
        return None
    length_size = h264.avcc_length_size(track.codec_private)
    return lambda frame: h264.is_disposable(frame.data, length_size)


def _pictures(context: av.CodecContext, frames: list, errors: list[str]) -> Iterator:
    """Every frame through the codec, then a drain: the pictures as they come; the codec's
    complaints appended to `errors`.

    A frame the codec rejects is skipped (FFmpeg has taken the packet, and resynchronises at the
    next slice or keyframe) and decoding goes on. An error during the drain ends it: PyAV cannot
    receive past it, so pictures still inside the codec then are lost.
    """
    try:
        for frame in frames:
            if not len(frame.data):
                continue  # an empty packet would tell FFmpeg to drain
            try:
                pictures = context.decode(_packet(frame))
            except av.error.FFmpegError as err:
                errors.append(str(err))
                continue
            yield from pictures
        try:
            pictures = context.decode(None)
        except av.error.FFmpegError as err:
            errors.append(str(err))
            return
        yield from pictures
    finally:
        context.flush_buffers()


def _run_codec(context: av.CodecContext, frames: list) -> tuple[list, list[str]]:
    """Every frame through the codec, then a drain: (the pictures, the codec's complaints)."""
    errors: list[str] = []
    return list(_pictures(context, frames, errors)), errors


def _packet(frame: Frame) -> av.Packet:
    """The frame as a packet whose bytes FFmpeg owns (a copy, with FFmpeg's zeroed padding).

    Why a copy: a packet wrapping Python memory is freed through a callback that takes the GIL,
    and FFmpeg's frame threads free the packets they hold. PyAV frees a codec context holding
    the GIL and waiting for those threads; after a decoding error (no drain) a thread still holds
    a packet, waits for the GIL, and the whole process hangs.
    """
    packet = av.Packet(len(frame.data))
    packet.update(frame.data)
    packet.pts = packet.dts = frame.timecode
    packet.time_base = _MS
    return packet
