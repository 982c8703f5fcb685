"""A recorded file as the fragments a camera would have sent: the session's media source in
batch mode.

The camera simulator's file reader (`consumer.media.sources.FileSource`: H.264 re-muxed as it is,
other codecs re-encoded with libx264, timestamps made increasing) and its fragmenter (a new
fragment at the first keyframe after `fragment_seconds`) make the same `Fragment`s GetMedia
would return for the file streamed into KVS, without the round trip. Fragments are numbered from
0 in file order; their producer timestamp is the container's `creation_time` (seconds since the
epoch) plus the fragment's start in the file, or, when the container does not state one, the
start in the file alone.

Interface of `consumer.cloud.media_source.MediaSource` as the session uses it: `fragments()`,
`stop()` (the iteration ends before the next fragment) and `state`. `max_frames` ends the file
after that many video frames. A file that cannot be read raises `VideoError` naming the file and
why (not a video, no video track, a codec FFmpeg cannot decode, damaged), from `probe()` or
while iterating.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import av

from consumer.cloud.media_source import StreamGone
from consumer.media.fragmenter import Fragmenter, FragmenterError
from consumer.media.sources import FileSource, SourceError
from consumer.wire import Fragment


class VideoError(StreamGone):
    """The file cannot be analysed (further); the message says why. A `StreamGone`: the
    session ends its reading and delivers what it read, as for a deleted stream."""


class FileFragments:
    def __init__(self, path: Path, fragment_seconds: float = 2.0, max_frames: int | None = None):
        self.path = Path(path)
        self.fragment_ms = max(1, round(fragment_seconds * 1000))
        self.max_frames = max_frames
        self.state = "starting"
        self.start = 0.0  # producer time of the first frame (creation_time, else 0)
        self.duration_seconds: float | None = None
        self.codec: str | None = None
        self.frames_read = 0
        self.seconds_read = 0.0  # of video: the last frame read's time from the first's
        self.error: str | None = None  # why the file could not be read to its end
        self._file: FileSource | None = None
        self._stopping = threading.Event()

    def probe(self) -> FileFragments:
        """Open the file (fails fast on what is not a readable video) and read its metadata."""
        try:
            if self.path.stat().st_size == 0:
                raise self._failed("empty file (0 bytes)")
            self._file = FileSource(self.path)
        except FileNotFoundError:
            raise self._failed("the file disappeared") from None
        except SourceError as err:
            raise self._failed(_reason(err, self.path)) from None
        self.codec = self._file.codec
        self.start, self.duration_seconds = _metadata(self.path)
        return self

    def stop(self) -> None:
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def fragments(self) -> Iterator[Fragment]:
        if self._file is None:
            self.probe()
        self.state = "reading"
        fragmenter = Fragmenter(fragment_duration_ms=self.fragment_ms)
        numbers = iter(range(1 << 62))
        try:
            for packet in self._file:
                if self._stopping.is_set():
                    break
                if self.max_frames is not None and self.frames_read >= self.max_frames:
                    break
                self.frames_read += 1
                self.seconds_read = max(self.seconds_read, packet.pts_ms / 1000)
                for fragment in fragmenter.add(packet.pts_ms, packet.keyframe, packet.data,
                                               self._file.track, packet.discontinuity):
                    yield self._stamped(fragment, next(numbers))
            else:
                for fragment in fragmenter.flush():
                    yield self._stamped(fragment, next(numbers))
                self.state = "done"
                return
            if not self._stopping.is_set():  # max_frames: the frames read so far still count
                for fragment in fragmenter.flush():
                    yield self._stamped(fragment, next(numbers))
            self.state = "done" if not self._stopping.is_set() else "stopped"
        except FileNotFoundError:
            raise self._failed("the file disappeared while it was read") from None
        except SourceError as err:
            raise self._failed(_reason(err, self.path)) from None
        except FragmenterError as err:
            raise self._failed(f"cannot cut into fragments: {err}") from None
        finally:
            self._file.close()

    def _failed(self, reason: str) -> VideoError:
        self.error = self.error or reason
        self.state = "failed"
        return VideoError(reason)

    def _stamped(self, fragment: Fragment, number: int) -> Fragment:
        fragment.fragment_number = number
        fragment.producer_timestamp = self.start + fragment.cluster_timecode / 1000
        fragment.server_timestamp = fragment.producer_timestamp
        fragment.size = sum(len(frame.data) for frame in fragment.frames)
        return fragment


def _reason(err: SourceError, path: Path) -> str:
    """The simulator's message without the file name (the manifest names the file)."""
    text = str(err)
    for name in (str(path), path.name):
        text = text.replace(f"{name}: ", "").replace(f": {name}", "")
    return text


def _metadata(path: Path) -> tuple[float, float | None]:
    """(creation_time as seconds since the epoch or 0.0, duration in seconds or None)."""
    try:
        with av.open(str(path)) as container:
            stated = container.metadata.get("creation_time")
            duration = container.duration / av.time_base if container.duration else None
    except av.error.FFmpegError:
        return 0.0, None
    start = 0.0
    if stated:
        try:
            start = max(0.0, datetime.fromisoformat(stated).timestamp())
        except ValueError:
            start = 0.0
    return start, duration
