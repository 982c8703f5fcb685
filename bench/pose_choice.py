"""Which pose configuration: the cost and the agreement of the lite / full / heavy models, and of
MediaPipe's VIDEO mode (one landmarker per stream) against the shared IMAGE-mode one.

    python -m bench.pose_choice [--clips bench,mosaic] [--repeats 3] [--models-dir DIR ...]

Clips (decoded with PyAV, RGB as the consumer converts them):
  bench   the benchmark's 720p/15 fps camera clip (bench.clip: one speaker, on stage or in
          close-up, in about a third of the frames);
  mosaic  a several-person stream made from it: 2x2 tiles of the clip scaled to 640x360, each
          tile 2 s later in the clip than the one before (wrapping), 1280x720 at 15 fps: 0 to 4
          persons a frame, moving. (The shared KVS captures hold no clip with several people.)

Measured, per clip, frame by frame in one pass (every configuration gets the same frame one
after the other, so a load that comes and goes weighs on all of them alike), `--repeats` passes:
  IMAGE mode, per variant  the pose processor (processors.pose.PoseProcessor, IMAGE mode, as the
          consumer runs it) on every `--variant-step`-th frame, full on every frame;
  VIDEO mode, per rate     a landmarker in VIDEO mode fed only the frames a stream analysed at
          S = 1 and S = 2 frames per second would be (the first frame of each 1/S-second slot,
          every 15th / every 7th-8th frame at 15 fps) and every frame, with the frame's time in ms,
          against the IMAGE-mode full processor's results on the same frames.
CPU: `time.process_time` around each call (every thread of this process: MediaPipe's count),
the median over the passes of the mean per frame; frames/s per core = 1000 / CPU ms.
Agreement, against IMAGE-mode full on the same frame: "same count" is the share of frames where
both find as many persons; "mean |d|" the Euclidean distance between matched persons'
landmarks in normalised image coordinates (x / width, y / height), averaged over the 33
landmarks, then over the matched persons ("median |d|": the median over them); persons are
matched greedily, nearest first.
Variants whose bundle is absent are skipped with the reason (build them with
`python -m processors.pose_bundles`). Prints Markdown; nothing else runs in this process.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from processors.models import POSE_VARIANTS, ModelNotFoundError, resolve_model
from processors.settings import Pose

from .clip import FPS, SHARED, prepare_clip
from .unit_costs import _cpu  # the benchmark's own CPU measurement of a unit of work

CLIPS = ("bench", "mosaic")
TILE_SHIFT_S = 2.0
DEFAULT_DIRS = (SHARED / "models", Path("~/.cache/kvs-analytics/models"))
RATES = (("S = 1", 1.0), ("S = 2", 2.0), ("every frame", None))
# the bar for VIDEO mode (issue 11): cheaper by this much at S = 1 or 2, and agreeing
VIDEO_SAVING, VIDEO_MEAN_D, VIDEO_SAME_COUNT = 0.15, 0.01, 0.95


# --- frames ----------------------------------------------------------------------------------

def _decode(path: Path, limit: int | None, size: tuple[int, int] | None = None
            ) -> Iterator[tuple[float, np.ndarray]]:
    """(time in s, RGB image) of the clip's frames, the first `limit` only if given."""
    with av.open(str(path)) as container:
        for n, frame in enumerate(container.decode(video=0)):
            if limit is not None and n >= limit:
                return
            if size:
                yield float(frame.time), frame.to_ndarray(width=size[0], height=size[1],
                                                          format="rgb24")
            else:
                yield float(frame.time), frame.to_ndarray(format="rgb24")


def frames(clip: str, path: Path, limit: int | None) -> Iterator[tuple[float, np.ndarray]]:
    if clip == "bench":
        yield from _decode(path, limit)
        return
    shift = round(TILE_SHIFT_S * FPS)
    tiles = [image for _, image in _decode(path, limit and limit + 3 * shift, (640, 360))]
    times = [t for t, _ in _decode(path, limit, (16, 16))]
    for n, t in enumerate(times):
        mosaic = np.empty((720, 1280, 3), dtype=np.uint8)
        for k in range(4):
            row, col = divmod(k, 2)
            mosaic[row * 360:(row + 1) * 360, col * 640:(col + 1) * 640] = \
                tiles[(n + k * shift) % len(tiles)]
        yield t, mosaic


def analysed(index: int, rate: float | None, fps: float = FPS) -> bool:
    """Whether a stream sampled at `rate` frames/s takes frame `index` (None: every frame)."""
    if rate is None:
        return True
    return index == 0 or int(index * rate / fps) != int((index - 1) * rate / fps)


# --- agreement -------------------------------------------------------------------------------

def _points(persons) -> list[np.ndarray]:
    return [np.array([(p.x, p.y) for p in person.landmarks]) for person in persons]


def landmark_distances(these, those) -> list[float]:
    """Per matched pair of persons (greedy, nearest first): mean Euclidean landmark distance."""
    a, b = _points(these), _points(those)
    pairs = sorted((float(np.linalg.norm(p - q, axis=1).mean()), i, j)
                   for i, p in enumerate(a) for j, q in enumerate(b))
    used_a, used_b, out = set(), set(), []
    for d, i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append(d)
    return out


@dataclass
class Agreement:
    frames: int = 0
    same_count: int = 0
    distances: list[float] = field(default_factory=list)
    persons: int = 0

    def add(self, result, reference) -> None:
        self.frames += 1
        self.persons += len(result)
        self.same_count += len(result) == len(reference)
        self.distances += landmark_distances(result, reference)

    def same(self) -> float:
        return self.same_count / self.frames if self.frames else float("nan")

    def mean_d(self) -> float | None:
        return float(np.mean(self.distances)) if self.distances else None

    def median_d(self) -> float | None:
        return float(np.median(self.distances)) if self.distances else None


# --- one configuration -----------------------------------------------------------------------

class VideoLandmarker:
    """A VIDEO-mode landmarker with the options of PoseProcessor, giving processors.base.Persons."""

    def __init__(self, path: Path, config: Pose):
        import mediapipe as mp
        from mediapipe.tasks.python import BaseOptions, vision

        from processors.pose import _person
        self._mp, self._person = mp, _person
        self._landmarker = vision.PoseLandmarker.create_from_options(
            vision.PoseLandmarkerOptions(
                base_options=BaseOptions(model_asset_buffer=path.read_bytes()),
                running_mode=vision.RunningMode.VIDEO, num_poses=config.num_poses,
                min_pose_detection_confidence=config.min_detection_confidence,
                min_pose_presence_confidence=config.min_presence_confidence,
                min_tracking_confidence=config.min_tracking_confidence))

    def process(self, image: np.ndarray, millis: int) -> tuple:
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB,
                                  data=np.ascontiguousarray(image))
        result = self._landmarker.detect_for_video(mp_image, millis)
        return tuple(self._person(pose) for pose in result.pose_landmarks)

    def close(self) -> None:
        self._landmarker.close()


@dataclass
class Tally:
    cpu: list[float] = field(default_factory=list)  # per pass: CPU s summed over frames
    frames: list[int] = field(default_factory=list)
    agreement: Agreement = field(default_factory=Agreement)  # first pass

    def ms(self) -> float:
        return statistics.median(1000 * c / n for c, n in zip(self.cpu, self.frames) if n)


def find_variants(dirs: list[Path], variants: list[str]) -> tuple[dict[str, Path], list[str]]:
    """{variant: bundle path} of those found (resolve_model, no download), and why others not."""
    found, skipped = {}, []
    for variant in variants:
        for folder in dirs:
            try:
                found[variant] = resolve_model(variant, folder, download=False)
                break
            except ModelNotFoundError:
                continue
        else:
            skipped.append(f"{variant}: pose_landmarker_{variant}.task is in none of "
                           f"{', '.join(str(d) for d in dirs)} (build it: python -m "
                           f"processors.pose_bundles --out {dirs[-1]})")
    return found, skipped


def measure_clip(clip: str, path: Path, bundles: dict[str, Path], config: Pose, *,
                 repeats: int, limit: int | None, variant_step: int, video: str
                 ) -> tuple[dict[str, Tally], dict[str, Tally], dict[str, Tally]]:
    """(IMAGE tallies per variant, IMAGE tallies of `video` per rate, VIDEO tallies per rate).

    Agreement: variants against IMAGE-mode full, VIDEO mode against IMAGE mode of `video`."""
    from processors.frames import FrameSource, VideoFrame
    from processors.pose import PoseProcessor

    image = {v: Tally() for v in bundles}
    image_at = {name: Tally() for name, _ in RATES}
    video_at = {name: Tally() for name, _ in RATES}
    every_frame = {"full", video}  # the references run on every frame
    processors = {v: PoseProcessor(config, model_path=p) for v, p in bundles.items()}
    source = FrameSource("bench", "bench", 0, 0.0, 0.0, 0.0, 0)
    try:
        for repeat in range(repeats):
            first = repeat == 0
            for tally in (*image.values(), *image_at.values(), *video_at.values()):
                tally.cpu.append(0.0)
                tally.frames.append(0)
            trackers = {name: VideoLandmarker(bundles[video], config) for name, _ in RATES}
            for n, (t, rgb) in enumerate(frames(clip, path, limit)):
                frame = VideoFrame(source=source, image=rgb, keyframe=False)
                if n == 0:  # warm-ups, not counted (as bench.unit_costs): each processor once,
                    for processor in processors.values():  # each tracker on a blank picture
                        processor.process([frame])
                    for tracker in trackers.values():
                        tracker.process(np.zeros_like(rgb), 0)
                sampled = n % variant_step == 0
                found, cost = {}, {}
                for variant, processor in processors.items():
                    if sampled or variant in every_frame:
                        work = lambda p=processor, f=frame: p.process([f])
                        [result], cost[variant], _ = _cpu(work)
                        found[variant] = result.persons
                if sampled:
                    for variant, persons in found.items():
                        image[variant].cpu[-1] += cost[variant]
                        image[variant].frames[-1] += 1
                        if first:
                            image[variant].agreement.add(persons, found["full"])
                for name, rate in RATES:
                    if not analysed(n, rate):
                        continue
                    image_at[name].cpu[-1] += cost[video]
                    image_at[name].frames[-1] += 1
                    millis = round(t * 1000) + 1000  # after the warm-up's 0
                    work = lambda k=trackers[name], i=rgb, m=millis: k.process(i, m)
                    persons, cpu, _ = _cpu(work)
                    video_at[name].cpu[-1] += cpu
                    video_at[name].frames[-1] += 1
                    if first:
                        video_at[name].agreement.add(persons, found[video])
            for tracker in trackers.values():
                tracker.close()
    finally:
        for processor in processors.values():
            processor.close()
    return image, image_at, video_at


# --- report ----------------------------------------------------------------------------------

def _d(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.0f} %"


def report(results: dict, skipped: list[str], args, load: tuple, video: str) -> str:
    lines = [(f"Pose choice on {os.cpu_count()} cores; load average (1 min) {load[0]:.2f} "
              f"before, {load[1]:.2f} after; CPU per frame is the median of {args.repeats} "
              f"pass(es); num_poses {args.num_poses}."), ""]
    if skipped:
        lines += ["Skipped variants:", *[f"- {why}" for why in skipped], ""]
    lines += ["IMAGE mode, per model variant (agreement with full on the same frames):", "",
              ("| clip | variant | frames | CPU ms/frame | frames/s per core | persons/frame "
               "| same count as full | mean \\|d\\| vs full | median \\|d\\| |"),
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for clip, (image, _, _) in results.items():
        for variant in POSE_VARIANTS:
            if variant not in image:
                continue
            tally = image[variant]
            ms, agree = tally.ms(), tally.agreement
            lines.append(f"| {clip} | {variant} | {agree.frames} | {ms:.1f} | {1000 / ms:.1f} | "
                         f"{agree.persons / max(1, agree.frames):.2f} | {_pct(agree.same())} | "
                         f"{_d(agree.mean_d())} | {_d(agree.median_d())} |")
    lines += ["", (f"VIDEO mode (one landmarker per stream) against the shared IMAGE-mode "
                   f"one, model {video} (agreement with IMAGE mode on the same frames):"), "",
              ("| clip | analysed | frames | IMAGE CPU ms/frame | VIDEO CPU ms/frame "
               "| VIDEO saves | same count | mean \\|d\\| | median \\|d\\| | persons/frame |"),
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    verdict = []
    for clip, (_, image_at, video_at) in results.items():
        for name, _ in RATES:
            image_ms, video_ms = image_at[name].ms(), video_at[name].ms()
            saving = 1 - video_ms / image_ms
            agree = video_at[name].agreement
            lines.append(f"| {clip} | {name} | {agree.frames} | {image_ms:.1f} | {video_ms:.1f} | "
                         f"{100 * saving:.0f} % | {_pct(agree.same())} | {_d(agree.mean_d())} | "
                         f"{_d(agree.median_d())} | "
                         f"{agree.persons / max(1, agree.frames):.2f} |")
            if name != "every frame":
                verdict.append(saving >= VIDEO_SAVING and agree.same() >= VIDEO_SAME_COUNT
                               and (agree.mean_d() or 0.0) <= VIDEO_MEAN_D)
    lines += ["", (f"VIDEO mode meets the bar (>= {VIDEO_SAVING:.0%} less CPU at S = 1 or 2, "
                   f"mean |d| <= {VIDEO_MEAN_D}, same count on >= {VIDEO_SAME_COUNT:.0%} of "
                   f"frames) on {sum(verdict)} of {len(verdict)} clip x rate cases.")]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pose_choice", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]))
    parser.add_argument("--clips", default=",".join(CLIPS),
                        help="comma-separated, of: " + ", ".join(CLIPS) + " (default: both)")
    parser.add_argument("--models-dir", type=Path, action="append",
                        help="folder to find pose_landmarker_{lite,full,heavy}.task in; repeat "
                             "for several (default: " + ", ".join(map(str, DEFAULT_DIRS)) + ")")
    parser.add_argument("--variants", default=",".join(POSE_VARIANTS),
                        help="comma-separated (default: all three); full is always measured")
    parser.add_argument("--video-variant", default="full", choices=POSE_VARIANTS,
                        help="the model of the VIDEO/IMAGE comparison (default: full)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per clip (default: 3)")
    parser.add_argument("--frames", type=int, help="only the first N frames of each clip")
    parser.add_argument("--variant-step", type=int, default=3,
                        help="run the variants on every Nth frame (default: 3)")
    parser.add_argument("--num-poses", type=int, default=Pose().num_poses,
                        help="persons per frame at most (default: the config's, %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 8 frames, 1 pass, every frame (tests)")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.repeats, args.variant_step = args.frames or 8, 1, 1
    clips = [c for c in args.clips.split(",") if c]
    variants = sorted({*[v for v in args.variants.split(",") if v], "full", args.video_variant},
                      key=POSE_VARIANTS.index)
    if unknown := [c for c in clips if c not in CLIPS] + [
            v for v in variants if v not in POSE_VARIANTS]:
        parser.error(f"unknown clip or variant: {', '.join(unknown)}")
    dirs = [d.expanduser() for d in (args.models_dir or DEFAULT_DIRS)]
    bundles, skipped = find_variants(dirs, variants)
    for needed in {"full", args.video_variant}:
        if needed not in bundles:
            print(f"error: cannot measure without {needed}: {skipped}", file=sys.stderr)
            return 2
    config = Pose(num_poses=args.num_poses, download=False)
    path = prepare_clip()
    load_before = os.getloadavg()[0]
    results = {}
    for clip in clips:
        started = time.perf_counter()
        results[clip] = measure_clip(clip, path, bundles, config, repeats=args.repeats,
                                     limit=args.frames, variant_step=args.variant_step,
                                     video=args.video_variant)
        print(f"{clip}: measured in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(report(results, skipped, args, (load_before, os.getloadavg()[0]), args.video_variant))
    return 0


if __name__ == "__main__":
    sys.exit(main())
