"""`BatchPipeline`: a batch of recorded videos through worker processes, with a manifest.

    from kvs_analytics import BatchPipeline, batch_config
    config = batch_config(preset="production")            # or batch_config("batch.yaml")
    result = BatchPipeline(config, output_dir="out").run(["videos/"])
    print(result.processed, result.skipped, result.failed)

`run` plans (consumer.batch.plan: hashes, skips what the manifest or S3 says is done), then
hands the videos to `batch.workers` workers: with one, a thread of this process; with more,
child processes (spawned: each loads its own models), fed one video at a time from a queue, so
a long video does not hold up the others. Every start and end is written to the manifest at
once. `stop()` (the command line calls it on SIGINT and SIGTERM; in a notebook, Ctrl-C's
KeyboardInterrupt does the same) lets each worker finish the video in hand as "interrupted"
(what it read is delivered; the video is redone next time) and starts nothing more;
`stop(now=True)` (a second signal) ends the worker processes at once. A worker process that dies fails its video and the
others go on.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.batch.manifest import Manifest, ManifestError
from consumer.batch.plan import Planned, plan_videos
from consumer.batch.progress import LineReporter
from consumer.batch.videos import find_videos
from consumer.batch.worker import VideoJob
from consumer.config import Config, ConfigError, load_config, read_config_file
from consumer.formats import s3_layout

log = logging.getLogger(__name__)
POLL_SECONDS = 0.5
BATCH_POSE_WINDOW_SECONDS = 3600.0  # the most it may be: a file a video (an hour)


def batch_config(path: str | Path | None = None, *, preset: str | None = None,
                 fps: float | None = None, max_frames: int | None = None,
                 workers: int | None = None, s3_bucket: str | None = None,
                 s3_prefix: str | None = None, environ=None) -> Config:
    """The configuration of a batch: the file (optional; the same format as `run`'s, whose
    `streams` and `outputs.kinesis` are optional here), then these overrides (the command
    line's), then the preset under them. Processing workers default to the cores shared out
    among the batch workers, decoding to one thread a video when there are as many workers as
    cores (processing.decode.threads none), and pose sequences to one file a video (an hour of
    it at most: outputs.s3.pose_window_seconds 3600; 0 in the file: one per part). Raises ConfigError naming
    the key."""
    raw: dict[str, Any] = read_config_file(path) if path is not None else {}

    def section(*names: str) -> dict:
        node = raw
        for name in names:
            if not isinstance(node.get(name), dict):
                node[name] = {}
            node = node[name]
        return node

    if preset is not None:
        raw["preset"] = preset
    if fps is not None:
        section("streams", "defaults")["sampling"] = {"mode": "fps", "fps": fps}
    if max_frames is not None:
        section("batch")["max_frames"] = max_frames
    if workers is not None:
        section("batch")["workers"] = workers
    s3 = section("outputs", "s3")  # its settings (prefix, JPEG quality, pose files) apply locally
    # one pose file per video (an hour of it at most): a file costs ~3-4 KB however few rows
    s3.setdefault("pose_window_seconds", BATCH_POSE_WINDOW_SECONDS)
    if s3_bucket is not None:
        section("outputs", "s3")["bucket"] = s3_bucket
    if s3_prefix is not None:
        section("outputs", "s3")["prefix"] = s3_prefix
    config = load_config(data=raw, environ=environ, live=False)
    cores = os.cpu_count() or 1
    processing = config.processing
    if processing.workers == 0:
        processing = processing.model_copy(
            update={"workers": max(1, cores // config.batch.workers)})
    decode_set = "threads" in processing.decode.model_fields_set  # by the file or environment
    if not decode_set and config.batch.workers >= cores:  # every core has a worker already
        processing = processing.model_copy(
            update={"decode": processing.decode.model_copy(update={"threads": "none"})})
    return config.model_copy(update={"processing": processing})


@dataclass
class VideoResult:
    path: str
    status: str  # done | skipped | failed | interrupted | not started
    reason: str | None = None
    sha256: str | None = None
    video_id: str | None = None
    outcome: dict = field(default_factory=dict)


@dataclass
class BatchResult:
    videos: list[VideoResult]
    manifest: str  # its path, or s3://bucket/key when there was no output folder
    interrupted: bool = False

    def _count(self, *statuses: str) -> int:
        return sum(v.status in statuses for v in self.videos)

    @property
    def processed(self) -> int:
        return self._count("done")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def not_started(self) -> int:
        """Left undone: the batch was interrupted, or every worker process died."""
        return self._count("not started", "interrupted")

    @property
    def ok(self) -> bool:
        """Every video done or skipped: nothing failed, interrupted or left unstarted."""
        return not self.interrupted and all(v.status in ("done", "skipped") for v in self.videos)


class BatchPipeline:
    def __init__(self, config: Config, output_dir: str | Path | None = None, *,
                 force: bool = False, skip_upload: bool = False,
                 reporter: LineReporter | None = None):
        if output_dir is None and config.outputs.s3.bucket is None:
            raise ConfigError("give an output folder (--output-dir), a bucket (--s3-bucket, "
                              "outputs.s3.bucket) or both")
        if skip_upload and output_dir is None:
            raise ConfigError("--skip-upload keeps the outputs in the output folder: give "
                              "--output-dir too")
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.force = force
        self.upload = config.outputs.s3.bucket is not None and not skip_upload
        self.reporter = reporter or LineReporter()
        self._stop = threading.Event()
        self._stop_now = threading.Event()
        self._s3 = None

    # --- planning ----------------------------------------------------------------------------

    def plan(self, inputs: Sequence[str | Path]) -> list[Planned]:
        """What `run` would do with each video (nothing is written)."""
        return self._plan(inputs, self._manifest(self.output_dir))

    def _plan(self, inputs: Sequence[str | Path], manifest: Manifest) -> list[Planned]:
        videos, missing = find_videos(inputs, self.config.batch.extensions)
        return plan_videos(videos, missing, manifest, self.config, self.force,
                           self._done_in_s3 if self.upload else None)

    def _client(self):
        if self._s3 is None:
            from consumer.cloud.aws import AwsContext
            self._s3 = AwsContext(self.config.aws.endpoints.get("s3"),
                                  self.config.aws.region).client("s3")
        return self._s3

    def _key(self, kind: str, video_id: str = "") -> str:
        return s3_layout.batch_key(self.config.outputs.s3.prefix, kind, video_id)

    def _done_in_s3(self, sha256: str, video_id: str) -> bool:
        from consumer.batch.uploads import done_in_s3
        return done_in_s3(self._client(), self.config.outputs.s3.bucket,
                          self._key("summary", video_id), sha256)

    def _manifest(self, root: Path | None) -> Manifest:
        """The folder's manifest, else (uploading) the bucket's, else a new one; read only
        without a folder."""
        local = root / "manifest.json" if root is not None else None
        fallback = None
        if self.upload and not (local is not None and local.exists()):
            client, bucket, key = self._client(), self.config.outputs.s3.bucket, self._key("manifest")
            try:
                fallback = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                fallback = None
            except (BotoCoreError, ClientError) as err:  # 403 without s3:ListBucket, no bucket
                raise ManifestError(f"cannot read s3://{bucket}/{key}: {err}") from None
        return Manifest.load(local, fallback)

    # --- running -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self, now: bool = False) -> None:
        """Finish the videos in hand as interrupted and start nothing more; `now`: end the
        worker processes at once (what they were doing is redone next time)."""
        self._stop.set()
        if now:
            self._stop_now.set()

    def run(self, inputs: Sequence[str | Path]) -> BatchResult:
        staging = None
        root = self.output_dir
        if root is None:  # a bucket only: the folder is where objects wait for their upload
            staging = tempfile.TemporaryDirectory(prefix="kvs-analytics-batch-")
            root = Path(staging.name)
        root.mkdir(parents=True, exist_ok=True)
        try:
            return self._run(inputs, root)
        finally:
            if staging is not None:
                staging.cleanup()

    def _run(self, inputs: Sequence[str | Path], root: Path) -> BatchResult:
        manifest = self._manifest(root)
        planned = self._plan(inputs, manifest)
        results = {item.path: VideoResult(item.relative, "not started", sha256=item.sha256,
                                          video_id=item.video_id) for item in planned}
        todo = [p for p in planned if p.action == "analyse"]
        workers = max(1, min(self.config.batch.workers, len(todo) or 1))
        self.reporter.start(planned, workers)
        for item in planned:
            result = results[item.path]
            if item.action == "skip":
                result.status, result.reason = "skipped", item.reason
                self.reporter.skipped(item)
            elif item.action == "fail":
                result.status, result.reason = "failed", item.reason
                manifest.update(item.key, path=item.relative, source=item.path, status="failed",
                                error=item.reason)
                self.reporter.finished(-1, item, {"status": "failed", "error": item.reason})
        interrupted = False
        if todo:
            interrupted = self._analyse(todo, manifest, root, workers, results)
        self._publish_manifest(manifest)
        self.reporter.close()
        if self.output_dir is None:  # the folder was for staging: the bucket's is the manifest
            where = f"s3://{self.config.outputs.s3.bucket}/{self._key('manifest')}"
        else:
            if not manifest.path.exists():  # everything skipped: keep the bucket's copy here
                manifest.save()
            where = str(manifest.path)
        return BatchResult(list(results.values()), where, interrupted)

    def _analyse(self, todo: list[Planned], manifest: Manifest, root: Path, workers: int,
                 results: dict[str, VideoResult]) -> bool:
        by_key = {item.key: item for item in todo}
        pool = _Workers(self.config, root, self.upload, workers)
        for item in todo:
            before = manifest.entry(item.key) or {}
            resume = before.get("started_at") if before.get("status") in (
                "running", "interrupted") else None
            pool.jobs.put(VideoJob(item.path, item.relative, item.sha256, item.video_id,
                                   resume).to_json())
        pool.start()
        in_hand: dict[int, str] = {}
        interrupted = False
        try:
            while pool.running():
                try:
                    message = pool.events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    message = None
                for index, code in pool.reap():  # every turn: progress may never let it idle
                    key = in_hand.pop(index, None)
                    if key is not None:
                        self._finish(manifest, by_key[key], results, index, {
                            "status": "failed",
                            "error": f"the worker process died (exit status {code})"})
                if self._stop.is_set() and not interrupted:
                    interrupted = True
                    pool.stop()
                if self._stop_now.is_set():
                    pool.kill()
                    break
                if message is None:
                    continue
                kind, index, *rest = message
                if kind == "broken":
                    self.reporter.message(f"worker {index + 1} could not start: {rest[0]}")
                    pool.broken = rest[0]
                elif kind == "started":
                    key = rest[0]
                    in_hand[index] = key
                    item = by_key[key]
                    attempts = (manifest.entry(key) or {}).get("attempts", 0) + 1
                    manifest.update(key, path=item.relative, source=item.path,
                                    sha256=item.sha256, size=item.size, video_id=item.video_id,
                                    status="running", error=None, started_at=time.time(),
                                    attempts=attempts, worker=index + 1)
                    self.reporter.started(index, item)
                elif kind == "progress":
                    self.reporter.progress(index, by_key[rest[0]], rest[1], rest[2])
                elif kind == "finished":
                    in_hand.pop(index, None)
                    self._finish(manifest, by_key[rest[0]], results, index, json.loads(rest[1]))
        except KeyboardInterrupt:
            interrupted = True
            self.reporter.message("stopping: the videos in hand end as interrupted (Ctrl-C "
                                  "again to stop at once)")
            pool.stop()
            try:
                self._drain(pool, manifest, by_key, results, in_hand)
            except KeyboardInterrupt:
                pool.kill()
        finally:
            pool.close()
        for key, index in ((k, i) for i, k in in_hand.items()):
            self._finish(manifest, by_key[key], results, index,
                         {"status": "interrupted", "error": "stopped before it ended"})
        if pool.broken:
            for result in results.values():
                if result.status == "not started":
                    result.status, result.reason = "failed", f"no worker: {pool.broken}"
        return interrupted or self._stop.is_set()

    def _drain(self, pool, manifest, by_key, results, in_hand) -> None:
        while pool.running():
            try:
                kind, index, *rest = pool.events.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if kind == "finished":
                in_hand.pop(index, None)
                self._finish(manifest, by_key[rest[0]], results, index, json.loads(rest[1]))

    def _finish(self, manifest: Manifest, item: Planned, results: dict[str, VideoResult],
                worker: int, outcome: dict) -> None:
        manifest.update(item.key, **outcome)
        result = results[item.path]
        result.status = outcome.get("status", "failed")
        result.reason = outcome.get("error")
        result.outcome = outcome
        self.reporter.finished(worker, item, outcome)

    def _publish_manifest(self, manifest: Manifest) -> None:
        if not self.upload:
            return
        try:
            self._client().put_object(Bucket=self.config.outputs.s3.bucket,
                                      Key=self._key("manifest"), Body=manifest.to_bytes(),
                                      ContentType="application/json")
        except Exception as err:  # noqa: BLE001 (the local manifest has it all)
            self.reporter.message(f"could not upload the manifest: {err}")


class _Workers:
    """`count` workers taking jobs (JSON) from `jobs` and telling `events` what they do: a thread
    of this process for one, spawned child processes for more."""

    def __init__(self, config: Config, root: Path, upload: bool, count: int):
        self.count = count
        self.broken: str | None = None
        args = (config.model_dump(mode="json"), str(root), upload)
        if count == 1:
            self.jobs, self.events = queue.Queue(), queue.Queue()
            self.stop_event = threading.Event()
            self.units = [threading.Thread(target=serve, name="batch-worker", daemon=True,
                                           args=(*args, self.jobs, self.events, self.stop_event,
                                                 0, False))]
        else:
            context = multiprocessing.get_context("spawn")
            self.jobs, self.events = context.Queue(), context.Queue()
            self.stop_event = context.Event()
            self.units = [context.Process(target=serve, name=f"batch-worker-{i + 1}",
                                          args=(*args, self.jobs, self.events, self.stop_event,
                                                i, True))
                          for i in range(count)]
        self._reaped: set[int] = set()

    def start(self) -> None:
        for _ in range(self.count):
            self.jobs.put(None)  # one end-of-work mark each
        for unit in self.units:
            unit.start()

    def running(self) -> bool:
        return any(unit.is_alive() for unit in self.units) or not self._events_empty()

    def _events_empty(self) -> bool:
        try:
            return self.events.empty()
        except (OSError, ValueError):
            return True

    def reap(self) -> list[tuple[int, int | None]]:
        """Child processes that ended with a failure since the last call: (index, status)."""
        dead = []
        for index, unit in enumerate(self.units):
            code = getattr(unit, "exitcode", None)
            if index not in self._reaped and code not in (None, 0):
                self._reaped.add(index)
                dead.append((index, code))
        return dead

    def stop(self) -> None:
        self.stop_event.set()

    def kill(self) -> None:
        for unit in self.units:
            if hasattr(unit, "kill"):
                unit.kill()

    def close(self) -> None:
        for unit in self.units:
            unit.join(5.0)


def serve(config_data: dict, root: str, upload: bool, jobs, events, stop, index: int,
          child: bool) -> None:
    """A worker's loop: load the models, then analyse videos until the end mark or a stop."""
    if child:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sets `stop`
    from consumer.batch.worker import BatchWorker
    try:
        worker = BatchWorker(Config.model_validate(config_data), Path(root), upload)
    except Exception as err:  # noqa: BLE001 (a model that will not load: told, not raised)
        events.put(("broken", index, f"{type(err).__name__}: {err}"))
        return
    watcher = threading.Thread(target=lambda: (stop.wait(), worker.stop()), daemon=True)
    watcher.start()
    try:
        while not stop.is_set():
            text = jobs.get()
            if text is None or stop.is_set():
                break
            job = VideoJob.from_json(text)
            events.put(("started", index, job.sha256))
            try:
                outcome = worker.analyse(
                    job, lambda sha, seconds, frames: events.put(
                        ("progress", index, sha, seconds, frames)))
            except Exception as err:
                log.exception("%s: analysis failed", job.relative)
                outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
            events.put(("finished", index, job.sha256, json.dumps(outcome)))
    finally:
        worker.close()
