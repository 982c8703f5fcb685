"""The fragment model: what one Kinesis Video Streams fragment is, once parsed."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import ebml

# Tags that Kinesis Video Streams adds to GetMedia output.
FRAGMENT_NUMBER = "AWS_KINESISVIDEO_FRAGMENT_NUMBER"
SERVER_TIMESTAMP = "AWS_KINESISVIDEO_SERVER_TIMESTAMP"
PRODUCER_TIMESTAMP = "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP"
MILLIS_BEHIND_NOW = "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW"
CONTINUATION_TOKEN = "AWS_KINESISVIDEO_CONTINUATION_TOKEN"
ERROR_CODE = "AWS_KINESISVIDEO_ERROR_CODE"
ERROR_ID = "AWS_KINESISVIDEO_ERROR_ID"
# GetMediaForFragmentList's names for the same timestamps.
SERVER_SIDE_TIMESTAMP = "AWS_KINESISVIDEO_SERVER_SIDE_TIMESTAMP"
PRODUCER_SIDE_TIMESTAMP = "AWS_KINESISVIDEO_PRODUCER_SIDE_TIMESTAMP"
AWS_TAG_PREFIX = "AWS_KINESISVIDEO_"

# Tags that close a fragment: KVS writes them after the cluster, last in the segment.
CLOSING_TAGS = frozenset({MILLIS_BEHIND_NOW, CONTINUATION_TOKEN, ERROR_CODE, ERROR_ID})


class MkvError(ValueError):
    """The byte stream is not the MKV that Kinesis Video Streams sends."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


class TruncatedMkvError(MkvError):
    """The stream ended inside an element or fragment."""


class InvalidMkvError(MkvError):
    """Bytes that cannot be MKV (garbage, corruption, or a wrong element)."""


class GetMediaError(Exception):
    """An error that Kinesis Video Streams reported inside a GetMedia stream through tags.

    AWS documents: 3002 error writing to the stream, 4000 requested fragment not found,
    4500-4504 KMS key problems, 5000 internal error.
    """

    def __init__(self, error_id: int | None, code: str):
        super().__init__(f"GetMedia error {error_id}: {code}")
        self.error_id = error_id
        self.code = code

    @property
    def retryable(self) -> bool:
        """Whether reconnecting can help: KMS errors (45xx) need a person, the rest may pass."""
        return not (self.error_id is not None and 4500 <= self.error_id < 4600)


@dataclass(frozen=True, slots=True)
class Track:
    number: int
    type: int
    codec_id: str
    codec_private: bytes = b""
    uid: int | None = None
    name: str | None = None
    width: int | None = None
    height: int | None = None
    sampling_frequency: float | None = None
    channels: int | None = None
    default_duration_ns: int | None = None

    @property
    def is_video(self) -> bool:
        return self.type == ebml.TRACK_TYPE_VIDEO

    @property
    def is_audio(self) -> bool:
        return self.type == ebml.TRACK_TYPE_AUDIO


@dataclass(slots=True)
class Frame:
    """One block's frame. `timecode` is absolute (cluster + block), in TimecodeScale units."""

    track: int
    timecode: int
    keyframe: bool
    data: memoryview | bytes
    duration: int | None = None


@dataclass(slots=True)
class Fragment:
    """One KVS fragment: a cluster with the tracks and tags that describe it.

    GetMedia sends each fragment as a standalone MKV segment; a producer-side MKV (PutMedia input,
    a file) has many clusters in one segment, and each cluster is a fragment of its own.
    """

    fragment_number: int | None = None
    server_timestamp: float | None = None
    producer_timestamp: float | None = None
    millis_behind_now: int | None = None
    continuation_token: str | None = None
    error: GetMediaError | None = None
    tags: dict[str, str] = field(default_factory=dict)
    tracks: tuple[Track, ...] = ()
    timecode_scale: int = 1_000_000
    cluster_timecode: int | None = None
    frames: list[Frame] = field(default_factory=list)
    size: int = 0  # bytes this fragment occupied on the wire
    stream_offset: int = 0  # where it began in the byte stream

    def track(self, number: int) -> Track | None:
        for track in self.tracks:
            if track.number == number:
                return track
        return None

    @property
    def video_track(self) -> Track | None:
        return next((t for t in self.tracks if t.is_video), None)

    def video_frames(self) -> list[Frame]:
        video = self.video_track
        if video is None:
            return []
        return [f for f in self.frames if f.track == video.number]

    def frame_time(self, frame: Frame) -> float:
        """Frame time in seconds on the MKV timeline."""
        return frame.timecode * self.timecode_scale / 1e9

    def frame_offset(self, frame: Frame) -> float:
        """Seconds from the start of the fragment (Rekognition's FrameOffsetInSeconds)."""
        start = self.cluster_timecode or 0
        return (frame.timecode - start) * self.timecode_scale / 1e9

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame, including the last frame's duration if known."""
        if not self.frames:
            return 0.0
        first = min(f.timecode for f in self.frames)
        last = max(f.timecode + (f.duration or 0) for f in self.frames)
        return (last - first) * self.timecode_scale / 1e9

    def apply_tags(self, tags: dict[str, str]) -> None:
        """Fold a Tags element into this fragment: AWS tags become fields, others stay in `tags`."""
        for name, value in tags.items():
            if not name.startswith(AWS_TAG_PREFIX):
                self.tags[name] = value
            elif name == FRAGMENT_NUMBER:
                self.fragment_number = int(value)
            elif name in (SERVER_TIMESTAMP, SERVER_SIDE_TIMESTAMP):
                self.server_timestamp = float(value)
            elif name in (PRODUCER_TIMESTAMP, PRODUCER_SIDE_TIMESTAMP):
                self.producer_timestamp = float(value)
            elif name == MILLIS_BEHIND_NOW:
                self.millis_behind_now = int(value)
            elif name == CONTINUATION_TOKEN:
                self.continuation_token = value
        if ERROR_CODE in tags or ERROR_ID in tags:
            raw_id = tags.get(ERROR_ID)
            self.error = GetMediaError(
                int(raw_id) if raw_id and raw_id.strip().isdigit() else None,
                tags.get(ERROR_CODE, "unknown error"),
            )

    @property
    def is_empty(self) -> bool:
        return not self.frames
