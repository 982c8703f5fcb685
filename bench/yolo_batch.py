"""YOLO processor latency and throughput per batch size: `python -m bench.yolo_batch`.

Runs processors.yolo.YoloProcessor.process() on batches of 1, 4, 8 frames (one forward pass a
batch) and prints, per batch size, the median wall time of a batch, per frame, and frames/s.
Default weights: yolov8n.yaml, random weights built by Ultralytics with no download; a network's
compute does not depend on its weights, but its post-processing (NMS) does a little: random
weights give no box above the threshold, so NMS is nearly free here, as it is for trained
weights on frames with few objects. Frames are real ones from vogels_330.mkv (640x330) when the
shared captures are there, else random pixels of that size; each is letterboxed to
imgsz x imgsz. Options: --weights, --imgsz, --batches 1,4,8, --repeat, --device (auto, cpu,
cuda:0), --json FILE to save the numbers too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from consumer.config import Yolo
from processors.frames import FrameSource, VideoFrame

CLIP = Path(os.environ.get("KVS_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")
            ) / "kvs-captures" / "vogels_330.mkv"


def frames(count: int) -> tuple[list[VideoFrame], str]:
    images: list[np.ndarray] = []
    if CLIP.exists():
        import av
        with av.open(str(CLIP)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % 30 == 0:
                    images.append(frame.to_ndarray(format="rgb24"))
                if len(images) == count:
                    break
        what = f"{CLIP.name} frames"
    if len(images) < count:
        rng = np.random.default_rng(0)
        images += [rng.integers(0, 256, (330, 640, 3), np.uint8)
                   for _ in range(count - len(images))]
        what = "random 640x330 frames"
    result = []
    for i, image in enumerate(images):
        stream = f"cam-{i % 3}"
        arn = f"arn:aws:kinesisvideo:us-east-1:123456789012:stream/{stream}/1"
        result.append(VideoFrame(FrameSource(stream, arn, 1, 0.0, 0.0, i / 30, i), image, i == 0))
    return result, what


def measure(weights: str, imgsz: int, batches: list[int], repeat: int, device: str) -> dict:
    import torch

    from processors.yolo import YoloProcessor

    pool, what = frames(max(batches))
    processor = YoloProcessor(Yolo(weights=weights, image_size=imgsz, device=device, classes=[]),
                              max_batch=max(batches))
    out = {"weights": weights, "model_version": processor.model_version, "imgsz": imgsz,
           "device": processor.device, "half": processor.half, "frames": what,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "batches": {}}
    try:
        for size in batches:
            batch = pool[:size]
            for _ in range(2):  # warm-up: predictor set-up, allocator, cuDNN autotune
                processor.process(batch)
            times = []
            for _ in range(repeat):
                if processor.device.startswith("cuda"):
                    torch.cuda.synchronize()
                started = time.perf_counter()
                processor.process(batch)
                if processor.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - started)
            median = statistics.median(times)
            out["batches"][size] = {"batch_ms": round(median * 1000, 1),
                                    "ms_per_frame": round(median * 1000 / size, 1),
                                    "frames_per_s": round(size / median, 2),
                                    "runs": repeat}
    finally:
        processor.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.yolo_batch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="yolov8n.yaml")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    result = measure(args.weights, args.imgsz, batches, args.repeat, args.device)
    print(f"{result['weights']} ({result['model_version']}) imgsz {result['imgsz']} on "
          f"{result['device']} (half={result['half']}, torch threads {result['torch_threads']}, "
          f"{result['cpu_count']} CPUs), {result['frames']}, median of {args.repeat}:")
    print(f"{'batch':>5} {'ms/batch':>9} {'ms/frame':>9} {'frames/s':>9}")
    for size, row in result["batches"].items():
        print(f"{size:>5} {row['batch_ms']:>9} {row['ms_per_frame']:>9} {row['frames_per_s']:>9}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
