"""`kvs-analytics batch`: the command line of batch mode (consumer.batch)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

from consumer.arguments import positive_float, positive_int

BATCH_EPILOG = """\
Videos are found recursively under each --video-dir by file name ending (batch.extensions:
.mp4 .mkv .mov .avi .m4v .webm .ts ...); files named as arguments are taken whatever their
ending. H.264 is read as it is; other codecs are re-encoded first (slower). Each video goes
through the live consumer's pipeline: decode and sample, pose or YOLO, tracking, events with
highlights and clips, and the same outputs, keyed by the video's id (<name>-<hash[:12]>):

  OUT/frames/stream=<id>/date=<day>/<part>/<index>.jpg     JPEGs (per streams.defaults.frames)
  OUT/poses/stream=<id>/date=<day>/<start>-3600s.parquet   pose sequences, one file a video
                                                           (an hour; pose_window_seconds)
  OUT/events/stream=<id>/date=<day>/<event id>/...         highlight.jpg, clip.mp4
  OUT/records/stream=<id>/records.jsonl                    one JSON record per analysed frame
                                                           and event (to the data stream
                                                           instead when outputs.kinesis is set)
  OUT/manifest.json                                        what was done to which video

Records say where each frame is in its file (InputInformation.File: Path, Sha256,
OffsetInFileSeconds). With --s3-bucket every object is uploaded as it is written (multipart
from batch.upload_threshold_mb), under --s3-prefix with the same keys, and the manifest too.

A video whose content hash is in the manifest as done (or, uploading, whose summary is in the
bucket) is skipped unless --force. Ctrl-C (or SIGTERM) lets the videos in hand end as
"interrupted" (a second one stops at once); run the same command again to resume: finished
videos are skipped, the others redone.

exit status: 0 every video done or skipped, 1 some video failed (its reason is in the
manifest; the others went on) or the batch was interrupted, 2 bad arguments or configuration.

examples:
  # a folder to a local folder, the production preset (full pose model, 2 frames/s)
  kvs-analytics batch --video-dir videos/ --output-dir out/ --preset production
  # what would be done, with an estimate of the time, writing nothing
  kvs-analytics batch --video-dir videos/ --output-dir out/ --dry-run
  # to S3 as well, 2 worker processes, the first 300 frames of each video
  kvs-analytics batch --video-dir videos/ --output-dir out/ --s3-bucket my-bucket \\
      --s3-prefix pose-data --workers 2 --max-frames 300
  # a config file to edit first (every key, commented)
  kvs-analytics config --preset high_accuracy --output batch.yaml
  kvs-analytics batch --config batch.yaml --video-dir videos/ --output-dir out/"""


NATIVE_LOG = "native.log"


def add_batch(subparsers) -> None:
    parser = subparsers.add_parser(
        "batch", help="analyse recorded video files (a folder, or files) with the same "
                      "pipeline, to a folder and/or S3, with a manifest",
        description="Run recorded videos through the consumer's pipeline (pose or YOLO, "
                    "tracking, events, highlights, clips) and write the same outputs to a "
                    "folder and/or S3, with a manifest that makes a second run skip what is "
                    "done and an interrupted one resume.",
        epilog=BATCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", metavar="FILE", help="video files to analyse")
    parser.add_argument("--video-dir", action="append", default=[], metavar="DIR",
                        help="a folder searched recursively for videos (repeatable)")
    parser.add_argument("--output-dir", type=Path, metavar="DIR",
                        help="where outputs and manifest.json go (required without "
                             "--s3-bucket)")
    parser.add_argument("--s3-bucket", metavar="BUCKET",
                        help="upload every output to this bucket (outputs.s3.bucket)")
    parser.add_argument("--s3-prefix", metavar="PREFIX",
                        help="key prefix in the bucket (outputs.s3.prefix; default none)")
    parser.add_argument("--preset", metavar="NAME",
                        help="development, fast_processing, production or high_accuracy "
                             "(`kvs-analytics config --list` shows their values)")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML configuration (the same format as `run`'s; streams and "
                             "outputs.kinesis optional)")
    parser.add_argument("--fps", type=positive_float, metavar="F",
                        help="analysed frames a second of video (streams.defaults.sampling)")
    parser.add_argument("--max-frames", type=positive_int, metavar="N",
                        help="read only the first N frames of each video (batch.max_frames)")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="worker processes, each with its own models, one video at a time "
                             "(batch.workers; default 1, or the preset's)")
    parser.add_argument("--skip-upload", action="store_true",
                        help="keep the outputs in --output-dir; upload nothing")
    parser.add_argument("--dry-run", action="store_true",
                        help="list what would be done to each video, with an estimate of the "
                             "time; write nothing")
    parser.add_argument("--force", action="store_true",
                        help="analyse videos the manifest (or the bucket) says are done")
    parser.add_argument("--region", help="AWS region for S3 and Kinesis (aws.region)")
    parser.add_argument("--verbose", action="store_true",
                        help="show MediaPipe's and LiteRT's native log lines (default: into "
                             "native.log in --output-dir)")
    parser.set_defaults(handler=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    from consumer.batch.manifest import ManifestError
    from consumer.batch.pipeline import BatchPipeline, batch_config
    from consumer.batch.progress import reporter_for
    from consumer.config import ConfigError
    from consumer.observe.logs import native_logs_to
    inputs = [*args.video_dir, *args.files]
    if not inputs:
        print("batch: give --video-dir DIR or video files", file=sys.stderr)
        return 2
    if args.region:
        os.environ["KVSA_AWS__REGION"] = args.region
    try:
        config = batch_config(args.config, preset=args.preset, fps=args.fps,
                              max_frames=args.max_frames, workers=args.workers,
                              s3_bucket=args.s3_bucket, s3_prefix=args.s3_prefix)
        pipeline = BatchPipeline(config, args.output_dir, force=args.force,
                                 skip_upload=args.skip_upload)
        if args.dry_run:
            return _dry_run(pipeline, inputs)
        native = None
        if args.output_dir is not None and not args.verbose:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            native = args.output_dir / NATIVE_LOG
        with native_logs_to(native), _signals_stop(pipeline):
            pipeline.reporter = reporter_for()  # after the move: on the terminal's stderr
            result = pipeline.run(inputs)
    except (ConfigError, ManifestError) as err:
        print(f"batch: {err}", file=sys.stderr)
        return 2
    undone = ""
    if result.not_started or result.interrupted:
        undone = (f", {result.not_started} not done"
                  + (", interrupted" if result.interrupted else "")
                  + " (run the same command again to resume)")
    print(f"batch: {result.processed} done, {result.skipped} skipped, {result.failed} failed"
          f"{undone}; manifest: {result.manifest}")
    return 0 if result.ok else 1


@contextmanager
def _signals_stop(pipeline):
    """SIGINT and SIGTERM stop the batch (the videos in hand end as interrupted); a second one
    ends the workers at once. Installed explicitly: a process started in the background by a
    shell inherits SIGINT ignored, and a container is stopped with SIGTERM."""
    def handle(signum, _frame):
        again = pipeline.stopping
        pipeline.stop(now=again)
        if not again:
            pipeline.reporter.message(f"{signal.Signals(signum).name}: stopping; the videos in "
                                      "hand end as interrupted (again to stop at once)")
    before = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _dry_run(pipeline, inputs: list[str]) -> int:
    planned = pipeline.plan(inputs)
    total = 0.0
    for item in planned:
        if item.action == "analyse":
            length = (f"{item.duration_seconds:.1f} s of video"
                      if item.duration_seconds is not None else "length unknown")
            guess = (f", about {item.estimate_seconds:.1f} s"
                     if item.estimate_seconds is not None else "")
            total += item.estimate_seconds or 0.0
            print(f"analyse  {item.relative}: {length}{guess} ({item.video_id})")
        else:
            print(f"{item.action:<8} {item.relative}: {item.reason}")
    counts = {a: sum(p.action == a for p in planned) for a in ("analyse", "skip", "fail")}
    workers = pipeline.config.batch.workers
    print(f"dry run: {counts['analyse']} to analyse (about {total / 60:.1f} min with {workers} "
          f"worker{'s' if workers != 1 else ''} on a machine like the README's), "
          f"{counts['skip']} to skip, {counts['fail']} that cannot be read; nothing written")
    return 0
