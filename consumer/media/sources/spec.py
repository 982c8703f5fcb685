"""Sources from their command-line spelling: `open_source(spec)` and `parse_size_rate`.

``testpattern[:WxH@FPS]``, ``rtsp://...``, ``webcam:DEVICE[@WxH@FPS]``, or a media file.
"""

from __future__ import annotations

from .base import DEFAULT_FPS, DEFAULT_KEYFRAME_INTERVAL_S, Source, SourceError
from .file import FileSource
from .live import LiveSource
from .testpattern import TestPatternSource


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
