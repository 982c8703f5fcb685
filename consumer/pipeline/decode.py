"""One persistent PyAV decoder per stream, fed fragment by fragment, with a sampling policy.

The decoder is drained at the end of each fragment (KVS fragments start on a keyframe), so every
frame of a fragment comes out with that fragment's provenance, and frame threading can be used
without frames leaking into the next fragment. Only the video track is decoded. In keyframes mode
other frames are never decoded; in fps mode every frame is decoded (later frames reference them)
but only the sampled ones are converted to RGB, which is the expensive step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

import av

from consumer.config import Sampling, SamplingMode
from consumer.wire import Fragment, Track
from processors.frames import FrameSource, VideoFrame

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
                 threads: str = "AUTO"):
        self.stream_name = stream_name
        self.stream_arn = stream_arn
        self.threads = threads
        self._sampler = _Sampler(sampling)
        self._context: av.CodecContext | None = None
        self._track_key: tuple | None = None
        self.frames_decoded = 0

    def decode(self, fragment: Fragment) -> list[VideoFrame]:
        """The fragment's sampled frames, RGB, in presentation order. Raises DecodeError."""
        track = fragment.video_track
        if track is None or not fragment.frames:
            return []
        video = sorted(fragment.video_frames(), key=lambda f: f.timecode)
        index_of = {f.timecode: i for i, f in enumerate(video)}
        context = self._context_for(track, fragment)
        keyframes_only = self._sampler.sampling.mode is SamplingMode.KEYFRAMES
        base_time = fragment.producer_timestamp or 0.0
        output: list[VideoFrame] = []
        try:
            decoded = []
            for frame in fragment.video_frames():
                if keyframes_only and not frame.keyframe:
                    continue
                packet = av.Packet(frame.data)
                packet.pts = packet.dts = frame.timecode
                packet.time_base = _MS
                decoded.extend(context.decode(packet))
            decoded.extend(context.decode(None))
        except av.error.FFmpegError as err:
            self._reset()
            raise DecodeError(self.stream_name, fragment.fragment_number, str(err)) from None
        finally:
            if self._context is not None:
                self._context.flush_buffers()
        self.frames_decoded += len(decoded)
        keyframe_times = {f.timecode for f in video if f.keyframe}
        self._sampler.start_fragment()
        for picture in sorted(decoded, key=lambda p: p.pts):
            timecode = picture.pts
            index = index_of.get(timecode)
            if index is None:
                continue  # a frame the container did not list: cannot be placed, skip it
            offset = fragment.frame_offset(video[index])
            keyframe = timecode in keyframe_times
            if not self._sampler.take(offset, keyframe):
                continue
            source = FrameSource(self.stream_name, self.stream_arn,
                                 fragment.fragment_number or 0,
                                 fragment.server_timestamp or 0.0, base_time, offset, index)
            output.append(VideoFrame(source, picture.to_ndarray(format="rgb24"), keyframe))
        if video and not decoded:
            raise DecodeError(self.stream_name, fragment.fragment_number,
                              f"{len(video)} {track.codec_id} frames decoded to nothing")
        return output

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
        context = av.CodecContext.create(codec, "r")
        if track.codec_private:
            context.extradata = bytes(track.codec_private)
        context.thread_type = self.threads
        self._context, self._track_key = context, key
        return context

    def _reset(self) -> None:
        self._context = None
        self._track_key = None

    def close(self) -> None:
        self._reset()
