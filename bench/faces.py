"""What faces and hands cost: detection, embedding, hand landmarks, and exact embedding search.

    python -m bench.faces [--quick] [--models-dir DIR] [--capture FILE] [--repeats N]

Frames: the 640x330 capture vogels_330.mkv (a keynote: wide stage shots, the speaker in
close-up from ~18 s), decoded with PyAV to RGB as the consumer converts them.
  face detection   processors.faces.FaceAnalyzer(embed=False) on the close-up frames (one face
                   ~85 px each): MediaPipe BlazeFace short range; dlib's HOG at upsample 0 and 1;
                   also on the same frames scaled to 1280x660 (a 720p camera's pixels);
  embedding        per face: FaceAnalyzer(embed=True) minus embed=False on the same frames,
                   divided by the faces embedded (5-point alignment + dlib's ResNet);
  hand landmarks   processors.hands.HandAnalyzer (max_hands=2, IMAGE mode) on frames spread
                   over the whole clip, grouped by the number of hands found (0 / 1 / 2);
  search           exact cosine search as NumPy does it: a batch of Q unit query vectors
                   (float32, 128-d) against a gallery of N random unit vectors, scores = Q x N
                   dot products, then the top 5 of each row by argpartition, sorted; and the
                   gallery's bytes. Measured first: after the models have run, the small
                   cases took up to 8 ms (BLAS threads competing with the models' idle ones).
Times: wall ms per call (perf_counter, the median over the calls) and CPU ms per call
(process_time, all threads, the mean); each model is called once on a blank picture first (its
set-up is not a frame's cost). Prints Markdown; nothing else runs in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from .clip import SHARED

CAPTURE = SHARED / "kvs-captures" / "vogels_330.mkv"
CLOSE_UPS = (*range(615, 750, 5), *range(870, 900, 5))  # frame indices: the speaker's face
HAND_STEP = 10  # hands: every 10th frame of the clip
GALLERIES = (1_000, 10_000, 100_000)
QUERIES = (1, 8)
TOP_K = 5
DIM = 128


def decode(path: Path, indices: set[int] | None, step: int = 1) -> dict[int, np.ndarray]:
    """RGB frames at `indices` (or every `step`-th when None), by position in decode order."""
    frames = {}
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if (n in indices) if indices is not None else n % step == 0:
                frames[n] = frame.to_ndarray(format="rgb24")
            if indices is not None and len(frames) == len(indices):
                break
    return frames


def timed(work: Callable[[], object]) -> tuple[object, float, float]:
    """(result, wall s, CPU s) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _figures(walls: list[float], cpus: list[float]) -> dict[str, float]:
    return {"calls": len(walls), "wall_ms": 1000 * statistics.median(walls),
            "cpu_ms": 1000 * statistics.fmean(cpus)}


def face_costs(models: Path, images: list[np.ndarray]) -> dict[str, dict]:
    """Per detector (and size): ms per frame and faces found; and the embedding's ms per face."""
    from processors.faces import FaceAnalyzer

    large = [np.asarray(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
        width=image.shape[1] * 2, height=image.shape[0] * 2).to_ndarray(format="rgb24"))
        for image in images]
    setups = (("mediapipe", {}), ("dlib HOG, upsample 0", {"detector": "dlib", "upsample": 0}),
              ("dlib HOG, upsample 1", {"detector": "dlib", "upsample": 1}))
    out: dict[str, dict] = {}
    for name, options in setups:
        with FaceAnalyzer(models, embed=False, **options) as analyzer:
            analyzer.faces(np.zeros_like(images[0]))
            for label, batch in ((f"{w}x{h}", b) for b in (images, large)
                                 for h, w in [b[0].shape[:2]]):
                runs = [timed(lambda i=image: analyzer.faces(i)) for image in batch]
                found = sum(len(faces) for faces, _, _ in runs)
                out[f"{name} @ {label}"] = {**_figures([w for _, w, _ in runs],
                                                       [c for _, _, c in runs]),
                                            "frames_with_a_face": sum(bool(f) for f, _, _ in runs),
                                            "faces": found}
    with FaceAnalyzer(models, embed=False) as plain, FaceAnalyzer(models) as embedding:
        embedding.faces(np.zeros_like(images[0]))
        extra_wall, extra_cpu, faces = 0.0, 0.0, 0
        for image in images:
            _, wall0, cpu0 = timed(lambda i=image: plain.faces(i))
            found, wall1, cpu1 = timed(lambda i=image: embedding.faces(i))
            if found:
                extra_wall, extra_cpu, faces = (extra_wall + wall1 - wall0,
                                                extra_cpu + cpu1 - cpu0, faces + len(found))
    out["embedding"] = {"faces": faces, "wall_ms_per_face": 1000 * extra_wall / max(1, faces),
                        "cpu_ms_per_face": 1000 * extra_cpu / max(1, faces)}
    return out


def hand_costs(models: Path, images: list[np.ndarray]) -> dict[int, dict]:
    """Per number of hands found (0, 1, 2): ms per frame."""
    from processors.hands import HandAnalyzer

    walls, cpus = defaultdict(list), defaultdict(list)
    with HandAnalyzer(models, max_hands=2) as analyzer:
        analyzer.hands(np.zeros_like(images[0]))
        for image in images:
            hands, wall, cpu = timed(lambda i=image: analyzer.hands(i))
            walls[len(hands)].append(wall)
            cpus[len(hands)].append(cpu)
    return {count: _figures(walls[count], cpus[count]) for count in sorted(walls)}


def search_costs(galleries: tuple[int, ...], queries: tuple[int, ...], repeats: int,
                 seed: int = 0) -> list[dict]:
    """Exact top-k cosine search of Q queries in N unit vectors: ms per batch, and bytes."""
    rng = np.random.default_rng(seed)
    rows = []
    for size in galleries:
        gallery = _unit(rng.standard_normal((size, DIM), dtype=np.float32))
        for count in queries:
            batch = _unit(rng.standard_normal((count, DIM), dtype=np.float32))
            calls = max(repeats, min(200, 2_000_000 // size))  # small galleries: more calls
            runs = [timed(lambda g=gallery, q=batch: top_k(g, q, TOP_K)) for _ in range(calls)]
            best = runs[0][0][0]
            assert best.shape == (count, min(TOP_K, size))
            rows.append({"gallery": size, "queries": count,
                         **_figures([w for _, w, _ in runs], [c for _, _, c in runs]),
                         "gallery_bytes": gallery.nbytes})
    return rows


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def top_k(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosines) of each query's k best gallery rows, best first (unit vectors)."""
    scores = queries @ gallery.T
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    chosen = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-chosen, axis=1)
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(chosen, order, axis=1)


def report(faces: dict, hands: dict, search: list[dict], load: tuple[float, float],
           frames: int, hand_frames: int) -> str:
    lines = [(f"Faces and hands on {os.cpu_count()} cores; load average (1 min) {load[0]:.2f} "
              f"before, {load[1]:.2f} after."), "",
             (f"Face detection, {frames} close-up frames of vogels_330.mkv (one face, ~85 px "
              "at 640x330; 1280x660 is the same frames scaled 2x):"), "",
             "| detector | frames with a face | faces | wall ms/frame | CPU ms/frame |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in faces.items():
        if name != "embedding":
            lines.append(f"| {name} | {row['frames_with_a_face']}/{row['calls']} | "
                         f"{row['faces']} | {row['wall_ms']:.1f} | {row['cpu_ms']:.1f} |")
    embed = faces["embedding"]
    lines += ["", (f"Face embedding (5-point alignment + dlib ResNet, 128-d): "
                   f"{embed['wall_ms_per_face']:.1f} ms wall, {embed['cpu_ms_per_face']:.1f} ms "
                   f"CPU per face ({embed['faces']} faces)."), "",
              f"Hand landmarks (max_hands=2, IMAGE mode), {hand_frames} frames over the clip:", "",
              "| hands found | frames | wall ms/frame | CPU ms/frame |", "| --- | --- | --- | --- |"]
    for count, row in hands.items():
        lines.append(f"| {count} | {row['calls']} | {row['wall_ms']:.1f} | {row['cpu_ms']:.1f} |")
    lines += ["", (f"Exact search, NumPy: scores = queries @ gallery.T (float32 unit vectors, "
                   f"{DIM}-d), top {TOP_K} by argpartition:"), "",
              "| gallery | queries | calls | wall ms/batch | CPU ms/batch | gallery MB |",
              "| --- | --- | --- | --- | --- | --- |"]
    for row in search:
        lines.append(f"| {row['gallery']} | {row['queries']} | {row['calls']} | "
                     f"{row['wall_ms']:.3f} | {row['cpu_ms']:.3f} | "
                     f"{row['gallery_bytes'] / 1e6:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.faces", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--models-dir", type=Path, default=SHARED / "models",
                        help="folder with face_detector.tflite and hand_landmarker.task "
                             "(default: %(default)s)")
    parser.add_argument("--capture", type=Path, default=CAPTURE, help="default: %(default)s")
    parser.add_argument("--repeats", type=int, default=5,
                        help="search calls per case at least (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 3 face frames, 4 hand frames, a 1k gallery (tests)")
    args = parser.parse_args(argv)
    from processors.faces import FacesExtraMissing
    from processors.models import ModelNotFoundError

    close_ups = CLOSE_UPS[::9] if args.quick else CLOSE_UPS
    galleries = GALLERIES[:1] if args.quick else GALLERIES
    repeats = 2 if args.quick else args.repeats
    load_before = os.getloadavg()[0]
    # first: once the models have run, their idle worker threads slow NumPy's BLAS threads
    search = search_costs(galleries, QUERIES, repeats)
    try:
        faces_at = decode(args.capture, set(close_ups))
        hand_frames = decode(args.capture, {600, 660, 885, 900} if args.quick else None,
                             HAND_STEP)
        images = [faces_at[i] for i in sorted(faces_at)]
        faces = face_costs(args.models_dir, images)
        hands = hand_costs(args.models_dir, [hand_frames[i] for i in sorted(hand_frames)])
    except (ModelNotFoundError, FacesExtraMissing, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(faces, hands, search, (load_before, os.getloadavg()[0]), len(images),
                 len(hand_frames)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
