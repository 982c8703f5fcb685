"""The benchmark's camera clip: a real clip with a person in it, re-encoded as a 720p camera sends.

    path = prepare_clip()          # bench/.cache/vogels_330-1280x720-15fps-gop30-2000k.mkv

The source (`../shared/kvs-captures/vogels_330.mkv`, 640x330 at 29.97 fps, a person on a stage,
30 s) is scaled 2x to 1280x660 and **letterboxed** to 1280x720 (30-pixel black bars above and
below, so people keep their proportions for the pose model), every other frame is kept (15 fps),
and the result is encoded with libx264: a keyframe every 30 frames exactly (2 s: scene-cut
keyframes off, so the simulator cuts 2 s fragments), no B-frames (as most IP cameras), about
2 Mbit/s. Prepared once and cached under `bench/.cache/` (gitignored); the file name carries every
parameter, so a change of parameters prepares a new file. Written to a temporary name and renamed,
so an interrupted preparation never leaves a half file behind.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KVS_SHARED_DIR", REPO.parent / "shared"))
SOURCE = SHARED / "kvs-captures" / "vogels_330.mkv"
CACHE = REPO / "bench" / ".cache"

WIDTH, HEIGHT, FPS, GOP, KBITS = 1280, 720, 15, 30, 2000


def clip_path(source: Path = SOURCE) -> Path:
    """Where the prepared clip of `source` is cached."""
    return CACHE / f"{source.stem}-{WIDTH}x{HEIGHT}-{FPS}fps-gop{GOP}-{KBITS}k.mkv"


def prepare_clip(source: Path = SOURCE, force: bool = False) -> Path:
    """The cached 720p/15 fps/GOP-30 H.264 clip of `source`, encoding it first if needed."""
    target = clip_path(source)
    if target.is_file() and not force:
        return target
    if not source.is_file():
        raise FileNotFoundError(f"clip source {source} not found (set KVS_SHARED_DIR to the "
                                f"folder holding kvs-captures/)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.mkv")
    _encode(source, partial)
    partial.replace(target)
    return target


def _letterbox(frame: av.VideoFrame) -> np.ndarray:
    """The frame scaled to WIDTH wide (aspect kept) and centred between black bars, RGB."""
    height = round(frame.height * WIDTH / frame.width / 2) * 2
    rgb = frame.to_ndarray(width=WIDTH, height=min(height, HEIGHT), format="rgb24")
    canvas = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    top = (HEIGHT - rgb.shape[0]) // 2
    canvas[top:top + rgb.shape[0]] = rgb
    return canvas


def _encode(source: Path, target: Path) -> None:
    with av.open(str(source)) as reader, av.open(str(target), "w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = KBITS * 1000
        stream.options = {
            "preset": "veryfast",
            "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:"
                           f"vbv-maxrate={KBITS * 5 // 4}:vbv-bufsize={KBITS * 2}"}
        source_fps = float(reader.streams.video[0].average_rate or 30)
        step = max(1, round(source_fps / FPS))  # 29.97 -> keep every other frame
        index = 0
        for n, frame in enumerate(reader.decode(video=0)):
            if n % step:
                continue
            picture = av.VideoFrame.from_ndarray(_letterbox(frame), format="rgb24")
            picture.pts = index
            picture.time_base = Fraction(1, FPS)
            index += 1
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))


if __name__ == "__main__":
    print(prepare_clip())
