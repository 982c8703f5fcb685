"""`LiveSource`: an RTSP URL or a local webcam device, opened with `av.open` (thin by design).

Live sources pace themselves (`live = True`); their pts start at 0 at the first packet. H.264 is
re-muxed, anything else re-encoded. `webcam_format` names the platform's capture device format.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import av

from ..timeline import Timeline
from .base import DEFAULT_KEYFRAME_INTERVAL_S, Packet, Source, SourceError
from .container import PassReader, ffmpeg_reason, open_container


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
        self._container = container = open_container(self.url, format=self.format,
                                                      options=self.options)
        try:
            reader = PassReader(self, container, self.reencode, None, self.keyframe_interval_s)
            self._timeline = reader.timeline
            yield from reader.packets()
        except av.error.FFmpegError as err:
            raise SourceError(f"{self.name}: cannot read: {ffmpeg_reason(err)}") from None
        finally:
            container.close()
            self._container = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
