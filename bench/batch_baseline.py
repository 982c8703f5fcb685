"""The seed-style batch baseline of `python -m bench.batch`, written the way the seed scripts were.

    python -m bench.batch_baseline --video-dir DIR --output-dir OUT --model FILE --fps F \\
        [--num-poses N] [--s3-bucket B --s3-prefix P --s3-endpoint URL] [--stats-file FILE]

One process, one thread, one video after the other, nothing overlapped:

  read      `cv2.VideoCapture(path)`; EVERY frame read with `cap.read()` (decoded to BGR), also
            the frames it does not analyse;
  sample    a frame skip: every k-th frame, k = round(video fps / --fps) (the video's fps from
            CAP_PROP_FPS), starting with the first;
  analyse   `cv2.cvtColor` BGR -> RGB, then MediaPipe Tasks `PoseLandmarker` (IMAGE mode,
            `model_asset_path=--model`, `num_poses=--num-poses`, other options MediaPipe's
            defaults) called inline;
  collect   per video a Python list, per analysed frame a dict {frame, timestamp_ms, poses}, a
            pose being 33 lists [x, y, z, visibility, presence] as the model returns them;
  write     per video `gzip.compress(pickle.dumps(results))` to OUT/<video stem>.pkl.gz;
  upload    then one `s3.upload_file` per file (boto3), key <--s3-prefix><video stem>.pkl.gz,
            waited for before the next video; no upload without --s3-bucket.

Credentials and region come from the environment as boto3 finds them. `--stats-file` gets a JSON
object: per video its frames read and analysed, fps, duration, output bytes and S3 key. The
caller (bench.batch) measures its wall and CPU time from outside.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import sys
import time
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.batch_baseline", description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video-dir", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a pose_landmarker_*.task")
    parser.add_argument("--fps", type=float, required=True, help="analysed frames per second")
    parser.add_argument("--num-poses", type=int, default=4)
    parser.add_argument("--s3-bucket")
    parser.add_argument("--s3-prefix", default="")
    parser.add_argument("--s3-endpoint", help="S3 endpoint URL (default: AWS)")
    parser.add_argument("--stats-file", type=Path)
    args = parser.parse_args(argv)
    if args.fps <= 0 or args.num_poses < 1:
        parser.error("--fps must be positive and --num-poses at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import cv2
    import mediapipe as mp
    from mediapipe.tasks import python
    from mediapipe.tasks.python import vision

    options = vision.PoseLandmarkerOptions(
        base_options=python.BaseOptions(model_asset_path=str(args.model)),
        running_mode=vision.RunningMode.IMAGE, num_poses=args.num_poses)
    landmarker = vision.PoseLandmarker.create_from_options(options)
    s3 = None
    if args.s3_bucket:
        import boto3
        s3 = boto3.client("s3", endpoint_url=args.s3_endpoint)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    videos = sorted(p for p in args.video_dir.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    stats = {"videos": []}
    started = time.time()
    for path in videos:
        cap = cv2.VideoCapture(str(path))
        fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
        step = max(1, round(fps / args.fps))
        results = []
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                image = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
                result = landmarker.detect(image)
                poses = [[[lm.x, lm.y, lm.z, lm.visibility, lm.presence] for lm in pose]
                         for pose in result.pose_landmarks]
                results.append({"frame": index, "timestamp_ms": index * 1000.0 / fps,
                                "poses": poses})
            index += 1
        cap.release()
        out = args.output_dir / f"{path.stem}.pkl.gz"
        out.write_bytes(gzip.compress(pickle.dumps(results)))
        key = None
        if s3 is not None:
            key = f"{args.s3_prefix}{out.name}"
            s3.upload_file(str(out), args.s3_bucket, key)
        stats["videos"].append({
            "video": str(path), "fps": fps, "frames_read": index,
            "frames_analysed": len(results), "duration_seconds": index / fps,
            "persons": sum(len(r["poses"]) for r in results),
            "output": str(out), "bytes": out.stat().st_size, "key": key})
    landmarker.close()
    stats["elapsed_seconds"] = time.time() - started
    if args.stats_file:
        args.stats_file.write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
