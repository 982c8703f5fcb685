"""The test videos of `python -m bench.batch` (see its docstring): made from real captures with
PyAV, 1280x720 (aspect kept, black bars), at 30 and 15 fps, a keyframe every 2 s exactly, and
cached under bench/.cache/batch-videos/<parameters>/ (each written under a temporary name, then
renamed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
WIDTH, HEIGHT, GOP_SECONDS, OFFSET_SECONDS = 1280, 720, 2, 7.0
KBITS = {30: 4000, 15: 2000}
RATES = (30, 15)


def _fit(frame: av.VideoFrame) -> np.ndarray:
    """The frame scaled to fit WIDTH x HEIGHT (aspect kept, even sides), centred on black, RGB."""
    scale = min(WIDTH / frame.width, HEIGHT / frame.height)
    w, h = (min(limit, round(side * scale / 2) * 2)
            for limit, side in ((WIDTH, frame.width), (HEIGHT, frame.height)))
    rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
    canvas = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    top, left = (HEIGHT - h) // 2, (WIDTH - w) // 2
    canvas[top:top + h, left:left + w] = rgb
    return canvas


def _source_frames(sources: list[Path], rate: int, skip: int):
    """Endless RGB 1280x720 frames at `rate` from the sources in turn, looped, the first `skip`
    left out (every frame of a ~30 fps source at 30, every other at 15)."""
    n = 0
    while True:
        for source in sources:
            with av.open(str(source)) as reader:
                stream = reader.streams.video[0]
                step = max(1, round(float(stream.average_rate or 30) / rate))
                for i, frame in enumerate(reader.decode(stream)):
                    if i % step:
                        continue
                    n += 1
                    if n > skip:
                        yield _fit(frame)


def encode_video(target: Path, sources: list[Path], rate: int, seconds: float, skip: int) -> None:
    partial = target.with_name(target.name + ".partial")
    frames = round(seconds * rate)
    with av.open(str(partial), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.bit_rate = KBITS.get(rate, 3000) * 1000
        gop = GOP_SECONDS * rate
        stream.options = {"preset": "veryfast",
                          "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        source = _source_frames(sources, rate, skip)
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(next(source), format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, rate)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    partial.replace(target)


@dataclass
class Video:
    path: str
    fps: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def prepare_videos(sources: list[Path], seconds: float, per_rate: int,
                   rates: tuple[int, ...] = RATES, log=print) -> tuple[Path, list[Video]]:
    """The cached folder of test videos (made first where missing) and its videos."""
    for source in sources:
        if not source.is_file():
            raise FileNotFoundError(f"video source {source} not found (set KVS_SHARED_DIR to "
                                    f"the folder holding kvs-captures/)")
    tag = hashlib.sha256("|".join(s.name for s in sources).encode()).hexdigest()[:8]
    folder = (CACHE / "batch-videos" / f"{WIDTH}x{HEIGHT}-{seconds:g}s-x{per_rate}-"
              f"{'-'.join(map(str, rates))}fps-gop{GOP_SECONDS}s-{tag}")
    folder.mkdir(parents=True, exist_ok=True)
    videos = []
    for rate in rates:
        for i in range(per_rate):
            path = folder / f"{rate}fps-{i + 1}.mp4"
            if not path.is_file():
                log(f"making {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
                encode_video(path, sources, rate, seconds, skip=round(i * OFFSET_SECONDS * rate))
            videos.append(Video(str(path), rate, round(seconds * rate)))
    return folder, videos
