"""One worker: its own models, analysis threads and writers; one video at a time, through a
`StreamSession` as a Kinesis video stream is run.

`VideoJob` (what to analyse) and the outcome (a JSON-able dict for the manifest) are plain data,
so a worker runs in this process or in a child process alike (consumer.batch.pipeline). For each
video the worker makes the session's shared stages: records to the data stream when
`outputs.kinesis` is configured (and, when an earlier attempt at this video was interrupted,
the records it already delivered are read back and not sent again, as a restarted live session
does), else to JSON Lines in the output folder; objects into the output folder, each handed to
the uploader as soon as it is written. Progress (seconds of the video read, frames analysed) is
reported about twice a second while the video is analysed. The
video is finished when the session has drained (every fragment's outputs durable) and its
uploads have completed; the summary object is uploaded last.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from consumer.batch.file_source import FileFragments, VideoError
from consumer.batch.folder_sinks import FolderObjectWriter, JsonLinesRecordWriter
from consumer.batch.uploads import Uploader
from consumer.cloud.aws import AwsContext
from consumer.config import Config
from consumer.formats import s3_layout
from consumer.pipeline.analysis import Analyzer
from consumer.pipeline.face_search import build_face_search
from consumer.pipeline.outputs import ProcessorInfo
from consumer.pipeline.stage_times import DECODE, JPEG_ENCODE, RECORD_BUILD, StageTimes
from consumer.sinks.locations import FolderLocations, S3Locations
from consumer.streams.session import SharedStages, Start, StreamSession
from processors.frames import FileOrigin

log = logging.getLogger(__name__)
POLL_SECONDS = 0.05
PROGRESS_SECONDS = 0.5
CLOSE_SECONDS = 10.0


@dataclass(frozen=True)
class VideoJob:
    path: str
    relative: str
    sha256: str
    video_id: str
    resume_since: float | None = None  # an earlier attempt began then (seconds since the epoch)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> VideoJob:
        return cls(**json.loads(text))


Progress = Callable[[str, float, int], None]  # (sha256, seconds of video read, frames analysed)


class BatchWorker:
    def __init__(self, config: Config, output_root: Path, upload: bool = True):
        from consumer.run import build_processors  # loads the models (seconds)
        self.config = config
        self.root = Path(output_root)
        self.processors = build_processors(config)
        self.info = ProcessorInfo.of(self.processors[0])
        self.face_search = build_face_search(config)
        self.times = StageTimes()
        self.work: queue.Queue = queue.Queue(maxsize=max(1, config.processing.queue_frames))
        self._session: StreamSession | None = None
        self.analyzers = [Analyzer(each, self.work, self._route, config.processing.batch_size,
                                   config.processing.batch_wait_ms, stage_times=self.times).start()
                          for each in self.processors]
        outputs = config.outputs
        endpoints = config.aws.endpoints
        uploading = upload and outputs.s3 is not None and outputs.s3.bucket is not None
        self.s3_client = (AwsContext(endpoints.get("s3"), config.aws.region).client("s3")
                          if uploading else None)
        self.uploader = (Uploader(self.s3_client, outputs.s3.bucket, config.batch,
                                  outputs.s3.upload_concurrency)
                         if self.s3_client is not None else None)
        self.kinesis_client = None
        self.kinesis = None
        if outputs.kinesis is not None:
            from consumer.sinks.kinesis import KinesisRecordWriter
            self.kinesis_client = AwsContext(endpoints.get("kinesis"),
                                             config.aws.region).client("kinesis")
            self.kinesis = KinesisRecordWriter(self.kinesis_client, outputs.kinesis.stream,
                                               outputs.kinesis.linger_ms,
                                               max_retries=outputs.kinesis.max_retries)
        self._stop = threading.Event()

    def _route(self, key: int, message: object) -> None:
        session = self._session
        if session is not None and session.key == key:
            session.post(message)

    def stop(self) -> None:
        """Interrupt the video in hand (it is reported "interrupted", to be redone)."""
        self._stop.set()
        if self._session is not None:
            self._session.stop()

    def analyse(self, job: VideoJob, progress: Progress | None = None) -> dict:
        began, cpu_began = time.time(), time.process_time()
        stages_before = self._stage_totals()
        outcome: dict = {"status": "failed", "error": None, "started_at": began}
        source = FileFragments(Path(job.path), self.config.batch.fragment_seconds,
                               self.config.batch.max_frames)
        try:
            source.probe()
        except VideoError as err:
            return {**outcome, "error": str(err), "seconds": round(time.time() - began, 3)}
        outcome.update(codec=source.codec, duration_seconds=source.duration_seconds)
        written: dict[str, int] = {}  # key -> bytes (a rewritten pose window: its last size)
        uploads = []
        prefix = self.config.outputs.s3.prefix if self.config.outputs.s3 is not None else ""

        def on_written(key, path, size, content_type, metadata):
            written[key] = size
            if self.uploader is not None:
                uploads.append(self.uploader.submit(key, path, content_type,
                                                    {**metadata, "source-sha256": job.sha256}))

        records = None if self.kinesis is not None else JsonLinesRecordWriter(
            self.root, s3_layout.batch_key(prefix, "records", job.video_id))
        session = self._session_for(job, source, FolderObjectWriter(self.root, on_written),
                                    records)
        self._session = session
        session.start()
        told = 0.0
        try:
            while not (session.reading_ended and session.drained) and not session.failure:
                if session.ended:
                    break
                time.sleep(POLL_SECONDS)
                if progress is not None and time.monotonic() - told >= PROGRESS_SECONDS:
                    told = time.monotonic()
                    progress(job.sha256, source.seconds_read, session.stats.frames_analysed)
            if self._stop.is_set():
                outcome["status"] = "interrupted"
        finally:
            session.stop()
            session.close(CLOSE_SECONDS)
            self._session = None
            if records is not None:
                records.close()
        stats = session.stats
        outcome.update(
            frames_read=source.frames_read, video_seconds=round(source.seconds_read, 3),
            frames_analysed=stats.frames_analysed,
            persons=stats.persons, events=session.events.raised if session.events else 0,
            decode_errors=stats.decode_errors, fragments=stats.fragments)
        problem = source.error or session.failure or (
            "some outputs could not be written" if session.ledger.blocked_at is not None
            else None)
        if outcome["status"] != "interrupted":
            outcome["status"] = "failed" if problem else "done"
            outcome["error"] = problem
        if records is not None:
            on_written(records.key, records.path, records.size, "application/x-ndjson", {})
        elif self.kinesis is not None:
            outcome["records_stream"] = self.config.outputs.kinesis.stream
        outcome.update(outputs=[{"key": key, "bytes": size} for key, size in written.items()],
                       output_bytes=sum(written.values()))
        if self.uploader is not None:
            errors = self.uploader.wait(uploads)
            if errors and outcome["status"] == "done":
                outcome.update(status="failed", error=f"upload failed: {errors[0]}")
            outcome["uploaded"] = not errors
        after = self._stage_totals()
        outcome.update(seconds=round(time.time() - began, 3),
                       cpu_seconds=round(time.process_time() - cpu_began, 3),
                       stage_seconds={name: round(total - stages_before.get(name, 0.0), 3)
                                      for name, total in after.items()},
                       finished_at=time.time())
        if self.uploader is not None and outcome["status"] == "done":
            self._upload_summary(job, outcome, prefix)
        return outcome

    def _upload_summary(self, job: VideoJob, outcome: dict, prefix: str) -> None:
        """Last, so that its presence in S3 means every other output of the video is there."""
        body = json.dumps({**asdict(job), **outcome}, indent=1).encode()
        try:
            self.uploader.put_bytes(s3_layout.batch_key(prefix, "summary", job.video_id), body,
                                    "application/json", {"source-sha256": job.sha256})
        except (BotoCoreError, ClientError) as err:
            outcome.update(status="failed", error=f"upload failed: {err}", uploaded=False)

    def _stage_totals(self) -> dict[str, float]:
        """Seconds spent so far in decoding, inference (the processor's calls), turning results
        into outputs (JPEG encoding included) and JPEG encoding: the manifest's per-video
        `stage_seconds` are their differences."""
        snapshot = self.times.snapshot()

        def total(stage: str) -> float:
            figures = snapshot.get(stage)
            return figures["mean"] * figures["count"] if figures else 0.0
        return {"decode": total(DECODE),
                "inference": sum(analyzer.busy_seconds for analyzer in self.analyzers),
                "outputs": total(RECORD_BUILD), "jpeg": total(JPEG_ENCODE)}

    def _session_for(self, job: VideoJob, source: FileFragments, objects: FolderObjectWriter,
                     records: JsonLinesRecordWriter | None) -> StreamSession:
        config = self.config
        arn = f"file:sha256:{job.sha256}"
        if self.s3_client is not None:
            locations = _UploadedLocations(self.root, self.s3_client, config.outputs.s3.bucket,
                                           config.events.url_expiry_seconds)
        else:
            locations = FolderLocations(self.root)

        stages = SharedStages(
            config, None, self.kinesis_client, self.kinesis or records,
            objects, locations, self.info,
            _no_checkpoint, lambda _arn: True, stage_times=self.times,
            face_search=self.face_search)
        # records already on the data stream from an interrupted attempt are not sent again (a
        # JSON Lines file is rewritten whole instead)
        start = Start(checkpoint=None,
                      read_back=self.kinesis is not None and job.resume_since is not None,
                      read_back_since=job.resume_since)
        return StreamSession(next(_keys), job.video_id, arn, start, stages, self.work,
                             source=source, origin=FileOrigin(job.relative, job.sha256,
                                                              source.start))

    def close(self) -> None:
        for analyzer in self.analyzers:
            analyzer.stop()
        if self.kinesis is not None:
            self.kinesis.close(CLOSE_SECONDS)
        if self.uploader is not None:
            self.uploader.close()
        for processor in self.processors:
            processor.close()
        if self.face_search is not None:
            self.face_search.close()


class _UploadedLocations(S3Locations):
    """Records name the bucket (where the objects end up); a pose window written before by
    this run is read back from the folder."""

    def __init__(self, root: Path, client, bucket: str, url_expiry_seconds: int):
        super().__init__(client, bucket, url_expiry_seconds)
        self.fetch = FolderLocations(root).fetch


def _no_checkpoint(_arn: str, _fragment: int, _producer_time: float | None) -> None:
    """A file has no checkpoint: a video is redone whole unless it is done (the manifest)."""


_keys = iter(range(1, 1 << 62))
