"""What a batch will do with each video, before anything is written: analyse it, skip it (done
before, or the same bytes as another file in this batch), or fail it (unreadable), with the
video's length and an estimate of the time it will take (`--dry-run` prints exactly this).

The estimate is CPU per analysed frame (the README's pose-choice figures on a 2-core VM:
lite 16, full 18, heavy 36 ms) plus decoding (about 3 ms a 720p frame, scaled by pixels; in fps
mode every frame up to the last sampled one is decoded), over the cores the workers can use. It
is a guide for sizing a run, not a promise: the first minutes of a real run show the rate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import av

from consumer.batch.file_source import FileFragments, VideoError
from consumer.batch.manifest import Manifest
from consumer.batch.videos import Missing, Video, sha256_of, video_id
from consumer.config import Config, ProcessorKind, SamplingMode

MODEL_MS = {"pose_landmarker_lite.task": 16.0, "pose_landmarker_full.task": 18.0,
            "pose_landmarker_heavy.task": 36.0}
YOLO_MS = 60.0  # a CPU's; a GPU's is a fraction
DECODE_MS_720P = 3.0


@dataclass
class Planned:
    path: str
    relative: str
    action: str  # analyse | skip | fail
    reason: str = ""
    sha256: str | None = None
    video_id: str | None = None
    size: int = 0
    duration_seconds: float | None = None
    estimate_seconds: float | None = None

    @property
    def key(self) -> str:
        """Its manifest key: the content hash, or the path when it could not be hashed."""
        return self.sha256 or f"path:{self.path}"


def plan_videos(videos: list[Video], missing: list[Missing], manifest: Manifest, config: Config,
                force: bool, done_elsewhere=None) -> list[Planned]:
    """`done_elsewhere(sha256, video_id) -> bool`: found done in S3 (None: not looked for)."""
    planned: list[Planned] = [Planned(m.path, m.path, "fail", m.reason) for m in missing]
    first_of: dict[str, str] = {}
    for video in videos:
        item = Planned(str(video.path), video.relative, "analyse")
        planned.append(item)
        try:
            item.size = video.path.stat().st_size
            item.sha256 = sha256_of(video.path)
        except OSError as err:
            item.action, item.reason = "fail", f"cannot read: {err.strerror or err}"
            continue
        item.video_id = video_id(video.relative, item.sha256)
        if item.sha256 in first_of:
            item.action = "skip"
            item.reason = f"the same bytes as {first_of[item.sha256]}"
            continue
        first_of[item.sha256] = video.relative
        if force:
            pass
        elif manifest.is_done(item.sha256):
            item.action, item.reason = "skip", "done before (manifest)"
        elif done_elsewhere is not None and done_elsewhere(item.sha256, item.video_id):
            item.action, item.reason = "skip", "done before (its summary is in S3)"
        if item.action == "analyse":
            try:  # what cannot be read fails here, before any model loads
                FileFragments(video.path).probe()
            except VideoError as err:
                item.action, item.reason = "fail", str(err)
                continue
            except Exception as err:  # noqa: BLE001 (one odd file must not stop the batch)
                item.action, item.reason = "fail", f"cannot read: {type(err).__name__}: {err}"
                continue
            item.duration_seconds, item.estimate_seconds = _estimate(video, config)
    return planned


def _estimate(video: Video, config: Config) -> tuple[float | None, float | None]:
    try:
        with av.open(str(video.path)) as container:
            if not container.streams.video:
                return None, None
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            pixels = (stream.codec_context.width or 1280) * (stream.codec_context.height or 720)
            duration = (container.duration / av.time_base if container.duration
                        else (float(stream.duration * stream.time_base)
                              if stream.duration else None))
    except (av.error.FFmpegError, ValueError, ZeroDivisionError):
        return None, None
    if duration is None:
        return None, None
    if config.batch.max_frames is not None:
        duration = min(duration, config.batch.max_frames / max(fps, 1.0))
    sampling = config.stream_settings("").sampling
    analysed_fps = {SamplingMode.ALL: fps, SamplingMode.FPS: min(fps, sampling.fps),
                    SamplingMode.KEYFRAMES: 0.5}[sampling.mode]
    decoded_fps = analysed_fps * 2 if sampling.mode is SamplingMode.KEYFRAMES else fps
    model_ms = (YOLO_MS if config.processing.processor is ProcessorKind.YOLO
                else MODEL_MS.get(config.processing.pose.model, 18.0))
    if config.processing.processor is ProcessorKind.NONE:
        model_ms = 0.0
    per_second = (analysed_fps * model_ms
                  + decoded_fps * DECODE_MS_720P * pixels / (1280 * 720)) / 1000
    cores = max(1, min(config.batch.workers, os.cpu_count() or 1))
    return duration, duration * per_second / cores
