"""Per-unit CPU costs of the work a camera needs, measured on the bench clip: the inputs of the
physical limit (bench.limit).

    unit_costs(clip, models_dir, pose_frames=30)

Returns CPU seconds per unit (`time.process_time`: every thread of this process, so a decoder's
or MediaPipe's worker threads count), each measured the way the consumer does the work:
  decode_frame    a frame through the H.264 decoder (every frame of the clip, fed fragment by
                  fragment and drained at each fragment's end, threads AUTO: StreamDecoder's
                  codec loop), without conversion: the cost of fps sampling per video frame;
  keyframe        a keyframe decoded alone (keyframes sampling);
  rgb_frame       a decoded picture to RGB (`to_ndarray(format="rgb24")`, as StreamDecoder does
                  for each sampled frame);
  pose_frame      the pose processor on one RGB frame (processors.pose.PoseProcessor, IMAGE
                  mode, frames spread over the clip, after one warm-up call), on average: the
                  landmark model runs once per person found, so `pose_frame_with_persons` and
                  `pose_frame_without` say what a frame costs with and without anybody in it;
  jpeg_frame      a JPEG as the consumer writes it by default: of a frame with persons,
                  annotated with them (consumer.formats.annotate, quality 85; when nobody is
                  seen in any frame, plain JPEGs of them all).
Also `person_fraction` (of the pose frames, those with at least one person: the share that
gets a JPEG with `frames: persons`), the clip's fps, and the wall seconds of each measurement.
Nothing else runs in this process while it measures (the harness calls it before the stack).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av

from consumer.config import Pose
from consumer.formats import annotate
from consumer.pipeline.decode import CODECS, _run_codec  # the consumer's own codec loop
from processors.frames import FrameSource, VideoFrame

from .micro import clip_fragments

JPEG_QUALITY = 85  # consumer.config's default outputs.s3.jpeg_quality
KEEP_PICTURES = 30  # decoded pictures kept for the conversion, pose and JPEG figures


def _context(track) -> av.CodecContext:
    context = av.CodecContext.create(CODECS[track.codec_id], "r")
    if track.codec_private:
        context.extradata = bytes(track.codec_private)
    context.thread_type = "AUTO"
    return context


def _cpu(work) -> tuple[Any, float, float]:
    """(work's result, CPU seconds, wall seconds)."""
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return result, time.process_time() - cpu, time.perf_counter() - wall


def _decode(fragments, keyframes_only: bool) -> tuple[list, int]:
    """Every fragment through one decoder; (pictures spread over the clip, frames decoded)."""
    context = _context(fragments[0].video_track)
    kept, count = [], 0
    total = sum(len(f.video_frames()) for f in fragments)
    every = max(1, total // KEEP_PICTURES)
    for fragment in fragments:
        fed = [f for f in fragment.video_frames() if f.keyframe or not keyframes_only]
        pictures, _ = _run_codec(context, fed)
        for picture in pictures:
            if count % every == 0 and len(kept) < KEEP_PICTURES:
                kept.append(picture)
            count += 1
    return kept, count


def unit_costs(clip: Path, models_dir: Path, pose_frames: int = KEEP_PICTURES) -> dict[str, Any]:
    """CPU seconds per unit of work on `clip` (see the module doc)."""
    from processors.pose import PoseProcessor

    fragments, _ = clip_fragments(Path(clip))
    video = [f for fragment in fragments for f in fragment.video_frames()]
    first, last = fragments[0], fragments[-1]
    span = last.frame_time(last.video_frames()[-1]) - first.frame_time(first.video_frames()[0])
    clip_fps = (len(video) - 1) / span if span > 0 else 0.0
    wall: dict[str, float] = {}
    (pictures, decoded), cpu, wall["decode"] = _cpu(lambda: _decode(fragments, False))
    decode_frame = cpu / decoded
    (_, keyframes), cpu, wall["keyframes"] = _cpu(lambda: _decode(fragments, True))
    keyframe = cpu / keyframes
    images, cpu, wall["rgb"] = _cpu(lambda: [p.to_ndarray(format="rgb24") for p in pictures])
    rgb_frame = cpu / len(images)
    images = images[::max(1, -(-len(images) // max(1, pose_frames)))]  # spread over the clip
    frames = [VideoFrame(FrameSource("bench", "bench", 0, 0.0, 0.0, 0.0, i), image, False)
              for i, image in enumerate(images)]
    with PoseProcessor(Pose(models_dir=models_dir, download=False)) as processor:
        processor.process(frames[:1])  # the first call sets the graph up: not a frame's cost
        timed = [_cpu(lambda frame=frame: processor.process([frame])[0]) for frame in frames]
    results = [result for result, _, _ in timed]
    wall["pose"] = sum(seconds for _, _, seconds in timed)
    pose_frame = sum(cpu for _, cpu, _ in timed) / len(frames)
    with_persons = [cpu for result, cpu, _ in timed if result.persons]
    without = [cpu for result, cpu, _ in timed if not result.persons]
    # JPEGs are made of the frames with persons, annotated (plain ones if nobody was seen)
    shown = [(f, r.persons) for f, r in zip(frames, results) if r.persons] or \
        [(f, ()) for f in frames]

    def jpegs() -> None:
        for frame, persons in shown:
            if persons:
                annotate.annotated_jpeg(frame.image, persons, JPEG_QUALITY)
            else:
                annotate.encode_jpeg(frame.image, JPEG_QUALITY)
    _, cpu, wall["jpeg"] = _cpu(jpegs)
    return {
        "clip": Path(clip).name, "clip_fps": clip_fps, "frames_decoded": decoded,
        "frames_per_fragment": len(video) / len(fragments),
        "keyframes": keyframes, "pose_frames": len(frames),
        "width_px": images[0].shape[1], "height_px": images[0].shape[0],
        "cpu_seconds": {"decode_frame": decode_frame, "keyframe": keyframe,
                        "rgb_frame": rgb_frame, "pose_frame": pose_frame,
                        "jpeg_frame": cpu / len(shown)},
        "pose_frame_with_persons": sum(with_persons) / len(with_persons) if with_persons
        else None,
        "pose_frame_without": sum(without) / len(without) if without else None,
        "person_fraction": len(with_persons) / len(results),
        "wall_seconds": wall,
    }
