"""Pose sequence size, Parquet vs pickle+gzip, and pose speed: `python -m bench.pose_sequence_size`.

Decodes ../shared/kvs-captures/vogels_330.mkv (640x330, a person on a stage in about a third of
its frames), runs the real pose model (../shared/models) over its frames, cuts them into fragments
at keyframes (as a KVS producer does) and builds each group's pose sequence two ways:
  parquet      consumer.formats.pose_sequence.pose_sequence_parquet (what the consumer ships to S3)
  pickle+gzip  gzip.compress(pickle.dumps(items)) of the same (FrameSource, FrameResult) list: the
               baseline a naive script writes. Only dumped to count its bytes: never loaded.
Groups: one file per fragment with every frame; per fragment at the default 2 fps sampling; one
window of the whole capture. Also printed: the largest dequantisation error against the model's
float values, and the model's ms per frame at 640x330 and 1280x720 (the frames scaled up 2x
and letterboxed), on frames with a person (detector and landmark model) and without (detector).
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import gzip
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image

from consumer.config import Pose
from consumer.formats.pose_sequence import (
    UNIT_SCALE,
    XYZ_SCALE,
    pose_sequence_parquet,
    read_pose_sequence,
)
from processors.base import FrameResult
from processors.frames import FrameSource, VideoFrame
from processors.pose import PoseProcessor

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KVS_SHARED_DIR", REPO.parent / "shared"))
CAPTURE = SHARED / "kvs-captures" / "vogels_330.mkv"
ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/vogels/1700000000000"
FIRST_FRAGMENT = 91343852333181432392682062622220590765191907586
START = 1_700_000_000.0
Item = tuple[FrameSource, FrameResult]


def decode(path: Path, limit: int | None) -> list[tuple[np.ndarray, float, bool]]:
    """(rgb, seconds, keyframe) for the first `limit` video frames."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            frames.append((frame.to_ndarray(format="rgb24"), float(frame.time), frame.key_frame))
            if limit and len(frames) >= limit:
                break
    return frames


def fragments(frames: Sequence[tuple[np.ndarray, float, bool]]) -> list[list[VideoFrame]]:
    """Frames cut at keyframes into fragments, each with KVS-like provenance."""
    groups: list[list[tuple[np.ndarray, float, bool]]] = []
    for frame in frames:
        if frame[2] or not groups:
            groups.append([])
        groups[-1].append(frame)
    out = []
    for number, group in enumerate(groups):
        start = group[0][1]
        out.append([VideoFrame(FrameSource("vogels", ARN, FIRST_FRAGMENT + number,
                                           START + start + 0.4, START + start,
                                           round(t - start, 3), index), rgb, key)
                    for index, (rgb, t, key) in enumerate(group)])
    return out


def size_figures(groups: Sequence[Sequence[Item]]) -> tuple[int, int, int, int]:
    """(files, frames, Parquet bytes, pickle+gzip bytes) of one file per group."""
    frames = sum(len(g) for g in groups)
    parquet = sum(len(pose_sequence_parquet(g)) for g in groups)
    pickled = sum(len(gzip.compress(pickle.dumps(list(g)))) for g in groups)
    return len(groups), frames, parquet, pickled


def sizes(label: str, groups: Sequence[Sequence[Item]]) -> None:
    _, frames, parquet, pickled = size_figures(groups)
    print(f"  {label:<34} {len(groups):>3} files {frames:>4} frames  parquet "
          f"{parquet / frames:7.1f} B/frame  pickle+gzip {pickled / frames:7.1f} B/frame  "
          f"ratio {parquet / pickled:5.2f}")


def dequantisation_error(items: Sequence[Item]) -> None:
    back = read_pose_sequence(pose_sequence_parquet(items))
    rows = [p for _, r in items for p in (r.persons or [None])]
    truth = np.array([[(m.x, m.y, m.z, m.visibility, m.presence) for m in p.landmarks]
                      if p else np.full((33, 5), np.nan) for p in rows])
    boxes = np.array([p.bbox if p else (np.nan,) * 4 for p in rows])
    err = np.nanmax(np.abs(back.landmarks - truth), axis=(0, 1))
    print(f"  max |error|  x {err[0]:.2e}  y {err[1]:.2e}  z {err[2]:.2e}  (bound "
          f"{0.5 / XYZ_SCALE:.2e})  visibility {err[3]:.2e}  presence {err[4]:.2e}  (bound "
          f"{0.5 / UNIT_SCALE:.2e})  bbox {np.nanmax(np.abs(back.bbox - boxes)):.2e}")


def letterbox(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` scaled to fit `size` (aspect kept), centred on black: a camera of that size."""
    if (image.shape[1], image.shape[0]) == size:
        return image
    scale = min(size[0] / image.shape[1], size[1] / image.shape[0])
    fitted = Image.fromarray(image).resize((round(image.shape[1] * scale),
                                            round(image.shape[0] * scale)), Image.BILINEAR)
    canvas = Image.new("RGB", size)
    canvas.paste(fitted, ((size[0] - fitted.width) // 2, (size[1] - fitted.height) // 2))
    return np.asarray(canvas)


def speed(processor: PoseProcessor, frames: Sequence[VideoFrame], size: tuple[int, int],
          label: str) -> None:
    batch = [VideoFrame(f.source, letterbox(f.image, size), f.keyframe) for f in frames]
    processor.process(batch[:2])  # warm-up
    start = time.perf_counter()
    results = processor.process(batch)
    ms = (time.perf_counter() - start) * 1000 / len(batch)
    found = sum(bool(r.persons) for r in results)
    print(f"  {size[0]}x{size[1]} {label:<16} {ms:6.1f} ms/frame over {len(batch)} frames "
          f"({found} with a person found)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None, help="first N frames (default all)")
    parser.add_argument("--speed-frames", type=int, default=60,
                        help="frames timed at each size (from the frames with a person)")
    parser.add_argument("--models-dir", type=Path, default=SHARED / "models")
    args = parser.parse_args(argv)

    decoded = decode(CAPTURE, args.frames)
    groups = fragments(decoded)
    print(f"{CAPTURE.name}: {len(decoded)} frames, {len(groups)} fragments (cut at keyframes)")
    with PoseProcessor(Pose(models_dir=args.models_dir)) as processor:
        print(f"model {processor.model} ({processor.model_version})")
        start = time.perf_counter()
        analysed = [list(zip((f.source for f in g), processor.process(g))) for g in groups]
        every = [f for g in groups for f in g]
        print(f"  analysed all frames at 640x330: "
              f"{(time.perf_counter() - start) * 1000 / len(every):.1f} ms/frame")
        flat = [item for g in analysed for item in g]
        with_person = [f for f, (_, r) in zip(every, flat) if r.persons][:args.speed_frames]
        without = [f for f, (_, r) in zip(every, flat) if not r.persons][:args.speed_frames]
        print(f"pose speed (IMAGE mode, one frame at a time, {os.cpu_count()} CPU cores):")
        for size in ((640, 330), (1280, 720)):
            for label, chosen in (("with a person", with_person), ("no person", without)):
                if chosen:
                    speed(processor, chosen, size, label)

    persons = sum(len(r.persons) for _, r in flat)
    print(f"pose sequence sizes ({persons} persons in {len(flat)} frames):")
    sizes("per fragment, every frame", analysed)
    step = max(1, round(30 / 2))  # about 2 fps of 29.97 fps
    sizes("per fragment, 2 fps sampling", [g[::step] for g in analysed])
    sizes("one window (whole capture)", [flat])
    sizes("one window, frames with a person", [[i for i in flat if i[1].persons]])
    dequantisation_error(flat)


if __name__ == "__main__":
    main()
