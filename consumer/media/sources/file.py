"""`FileSource`: a media file PyAV can read, played once or in a loop.

H.264 is re-muxed as is, other codecs (or everything, with `reencode`) are re-encoded with libx264.
The file is probed when the source is made, so a missing or unreadable file is reported before any
connection is made. In a loop each pass continues the previous pass's timeline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import av

from ..timeline import Timeline
from .base import DEFAULT_KEYFRAME_INTERVAL_S, Packet, Source, SourceError
from .container import PassReader, ffmpeg_reason, open_container


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
        container = open_container(self.name)
        try:
            reader = PassReader(self, container, reencode, None, keyframe_interval_s)
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
        container = open_container(self.name)
        try:
            reader = PassReader(self, container, self.reencode, None, self.keyframe_interval_s)
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
            self._container = container = open_container(self.name)
            try:
                reader = PassReader(self, container, self.reencode, encoder,
                                     self.keyframe_interval_s, self._timeline)
                self._timeline = reader.timeline
                count = 0
                for packet in reader.packets():
                    count += 1
                    yield packet
                encoder = reader.encoder
            except av.error.FFmpegError as err:
                raise SourceError(f"{self.name}: cannot read: {ffmpeg_reason(err)}") from None
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
