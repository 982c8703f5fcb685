"""A naive KVS consumer, written the way seed scripts do it: `python -m bench.naive`.

The baseline the benchmark (`python -m bench`) measures this project against: one process per
camera, one thread, no batching, no checkpoints. It is meant to be an honest rendition of the
scripts people start from (AWS blog posts, KVS + OpenCV/MediaPipe samples), neither a strawman
nor tuned:

  connect    boto3 clients; GetDataEndpoint, then GetMedia at --start (EARLIEST or NOW).
  decode     the GetMedia payload (a non-seekable stream of concatenated MKV fragments) handed
             to PyAV as it is: `av.open(payload, format="matroska")`, default decoder settings;
             EVERY video frame is decoded and converted to BGR (`to_ndarray(format="bgr24")`),
             as an OpenCV-style loop does before deciding whether to use the frame.
  sample     a time-based sampler on the frame's own time: a frame is analysed when it is at or
             past the next due time, due times 1/S s apart (a replay samples S frames per
             second of video, like a live run).
  analyse    inline on the reading thread: BGR -> RGB (cv2.cvtColor), MediaPipe PoseLandmarker
             (Tasks API, IMAGE mode, pose_landmarker_full.task from --models-dir, --num-poses 4
             like the consumer's default, other options MediaPipe's defaults).
  deliver    per analysed frame: one s3.put_object (the BGR frame as a JPEG, cv2.imencode at
             OpenCV's default quality 95, key frames/{stream}/{producer ms}.jpg) and one
             kinesis.put_record (JSON, partition key = stream name), each waited for before the
             next frame is read.

The record: StreamName, ProducerTime (seconds since the epoch), FrameIndex (decoded frames since
the process started), Width, Height, ProcessedTime (wall clock after analysis), S3Bucket,
S3Key, PersonCount and Persons (each a list of 33 landmarks x, y, z, visibility, presence as the
model returns them, unrounded).

What it relies on: the producer uses ABSOLUTE fragment timecodes (as producer_sim and the KVS
producer SDK's default do), so the Matroska timecodes GetMedia returns are milliseconds since the
epoch and PyAV's `frame.time` IS the producer time. The script never reads the fragments' tags
(PRODUCER_TIMESTAMP, CONTINUATION_TOKEN): PyAV does not expose per-fragment tags of a live
stream. With RELATIVE timecodes frame.time would count from the stream's start; a warning is
logged once when a frame's time is before 2001. PyAV reads the payload in 32 KB blocks and
botocore's read blocks until a block is full, so on a live stream frames reach the script up to
32 KB late (0.13 s at 2 Mbit/s), and the tail of a stream that goes quiet waits for the response
to end.

When the GetMedia response ends (the reader caught up and the stream went idle, a dropped
connection, AWS's connection time limit), it reconnects with StartSelector NOW: it does not know
the last fragment it read, so fragments that arrive between the end and the new call are never
read, and none is read twice. A failed call is retried after a second. It runs until SIGTERM or
SIGINT (exit 0) or --duration seconds, then writes --stats-file: frames_decoded,
frames_analysed, persons, api_calls (per "service:Operation", counted by consumer.cloud.aws.ApiCalls on
every client, as `python -m consumer run --stats-file` does), elapsed_seconds (from the first
GetMedia call), cpu_seconds, max_rss_mb, get_media_connections and lag_seconds (producer time to
the record's PutRecord returning: p50 and max) and stage_times.

stage_times: the comparable part of the consumer's per-stage breakdown
(consumer.pipeline.stage_times, the same recorder and stage names), measured the way they
apply to a script that does everything inline on one thread:
  arrival        the first frame of a fragment out of the decoder - producer time of the
                 fragment's last frame (per fragment; fragments start on keyframes);
  decode         the frames of a fragment through PyAV and to BGR, time blocked reading the
                 response left out (per fragment); decode_frame the same per frame;
  queue_wait     the fragment's first frame out -> this frame's analysis starts: it waits behind
                 the decoding (its own included) and analysis of the frames before it;
  inference      BGR -> RGB and the landmarker (per analysed frame; inference_frame the same);
  record_build   the landmark lists, the JPEG (jpeg_encode) and the record's JSON;
  s3_call, kds_call   the PutObject and PutRecord calls, each waited for.
`PATH` lists those a frame's record waits through on its way to Kinesis.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import av
import boto3
import cv2
import numpy as np

from consumer.cloud.aws import LOCAL_REGION, ApiCalls, is_loopback
from consumer.pipeline import stage_times as st

log = logging.getLogger("bench.naive")

MODEL = "pose_landmarker_full.task"
RETRY_SECONDS = 1.0
EPOCH_2001 = 978_307_200.0  # a producer time before this is not an absolute timecode
PATH = (st.ARRIVAL, st.QUEUE_WAIT, st.INFERENCE, st.RECORD_BUILD, st.S3_CALL, st.KDS_CALL)


class Stop(Exception):
    """SIGTERM, SIGINT or --duration: stop reading and write the stats."""


@dataclass
class Counters:
    frames_decoded: int = 0
    frames_analysed: int = 0
    persons: int = 0
    get_media_connections: int = 0
    lags: list[float] = field(default_factory=list)


class Sampler:
    """Analyse a frame when its time reaches the next due time; due times 1/fps apart.

    After a gap in the video longer than a period the schedule restarts at the frame after it.
    Frame times are Matroska timecodes, rounded to the millisecond, so a frame up to 1 ms before
    its due time counts as due (at S = the video's frame rate, every frame is taken).
    """

    TOLERANCE = 0.001

    def __init__(self, fps: float):
        self.interval = 1.0 / fps
        self.due: float | None = None

    def take(self, t: float) -> bool:
        if self.due is not None and t + self.TOLERANCE < self.due:
            return False
        if self.due is None or t >= self.due + self.interval:
            self.due = t + self.interval
        else:
            self.due += self.interval
        return True


class TimedReader:
    """The GetMedia payload as PyAV reads it, counting the seconds spent blocked in read(): the
    decode figures leave them out. Everything else is the payload's own (seek, tell, ...), so
    PyAV treats it exactly as the payload."""

    def __init__(self, payload):
        self._payload = payload
        self.blocked = 0.0

    def read(self, size: int = -1) -> bytes:
        began = time.perf_counter()
        try:
            return self._payload.read(size)
        finally:
            self.blocked += time.perf_counter() - began

    def __getattr__(self, name: str):
        return getattr(self._payload, name)


@dataclass
class _Fragment:
    """The fragment being decoded (as far as a script that sees no tags can tell)."""

    first_out_wall: float  # time.time() when its first frame came out of the decoder
    first_out: float  # the same on time.perf_counter()
    decode: float = 0.0  # seconds decoding its frames so far


class NaiveConsumer:
    """One camera: GetMedia -> PyAV (every frame to BGR) -> pose -> PutObject + PutRecord."""

    def __init__(self, args: argparse.Namespace, session: boto3.session.Session,
                 calls: ApiCalls):
        self.args = args
        self.session = session
        self.calls = calls
        self.counters = Counters()
        self.kinesisvideo = self._client("kinesisvideo", args.kinesisvideo_url)
        self.s3 = self._client("s3", args.s3_url)
        self.kinesis = self._client("kinesis", args.kinesis_url)
        self.sampler = Sampler(args.fps)
        self.landmarker = _landmarker(Path(args.models_dir) / MODEL, args.num_poses)
        self._warned_relative = False
        self.times = st.StageTimes()
        self._fragment: _Fragment | None = None
        self._last_time: float | None = None  # producer time of the previous frame

    def _client(self, service: str, endpoint_url: str | None):
        client = self.session.client(service, endpoint_url=endpoint_url)
        self.calls.attach(client)
        return client

    def run(self) -> None:
        """Read until stopped (Stop propagates); reconnect with NOW when a response ends."""
        start = self.args.start
        while True:
            try:
                payload = self._get_media(start)
            except Stop:
                raise
            except Exception as err:  # noqa: BLE001 - a naive script retries whatever failed
                log.warning("GetMedia %s failed: %s; retrying in %.0f s", start, err,
                            RETRY_SECONDS)
                time.sleep(RETRY_SECONDS)
                continue
            reader = TimedReader(payload)
            try:
                container = av.open(reader, format="matroska")
            except av.error.FFmpegError as err:  # typically: the response ended with no media
                log.info("GetMedia %s gave no media (%s); reconnecting with NOW in %.0f s",
                         start, err, RETRY_SECONDS)
                time.sleep(RETRY_SECONDS)
                start = "NOW"
                continue
            try:
                began, blocked = time.perf_counter(), reader.blocked  # av.open read some
                for frame in container.decode(video=0):
                    # the time to get this frame out of PyAV, less the time waiting for bytes
                    decode = time.perf_counter() - began - (reader.blocked - blocked)
                    self.on_frame(frame, decode)
                    began, blocked = time.perf_counter(), reader.blocked
            except av.error.FFmpegError as err:
                log.warning("stream ended with a decode error: %s", err)
            finally:
                container.close()
            log.info("GetMedia response ended; reconnecting with NOW")
            start = "NOW"

    def _get_media(self, start: str):
        endpoint = self.kinesisvideo.get_data_endpoint(
            StreamName=self.args.stream, APIName="GET_MEDIA")["DataEndpoint"]
        media = self._client("kinesis-video-media", endpoint)
        self.counters.get_media_connections += 1
        return media.get_media(StreamName=self.args.stream,
                               StartSelector={"StartSelectorType": start})["Payload"]

    def on_frame(self, frame: av.VideoFrame, decode: float = 0.0) -> None:
        converting = time.perf_counter()
        image = frame.to_ndarray(format="bgr24")  # every frame, as cv2-style loops do
        decode += time.perf_counter() - converting
        self.counters.frames_decoded += 1
        index = self.counters.frames_decoded
        producer_time = float(frame.time) if frame.time is not None else time.time()
        if producer_time < EPOCH_2001 and not self._warned_relative:
            log.warning("frame time %.3f is not an epoch time: the producer uses RELATIVE "
                        "timecodes, so ProducerTime is relative to the stream's start",
                        producer_time)
            self._warned_relative = True
        self._time_fragment(frame.key_frame, producer_time, decode)
        if self.sampler.take(producer_time):
            self.analyse(image, producer_time, index)

    def _time_fragment(self, keyframe: bool, producer_time: float, decode: float) -> None:
        """Stage times of fragments: a keyframe starts one, and ends the one before it."""
        times = self.times
        times.add(st.DECODE_FRAME, decode)
        if keyframe or self._fragment is None:
            ended = self._fragment
            if ended is not None and self._last_time is not None:
                times.add(st.ARRIVAL, ended.first_out_wall - self._last_time)
                times.add(st.DECODE, ended.decode)
            self._fragment = _Fragment(time.time(), time.perf_counter())
        self._fragment.decode += decode
        self._last_time = producer_time

    def analyse(self, image: np.ndarray, producer_time: float, index: int) -> None:
        import mediapipe as mp

        times, began = self.times, time.perf_counter()
        if self._fragment is not None:
            times.add(st.QUEUE_WAIT, began - self._fragment.first_out)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        result = self.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        inferred = time.perf_counter()
        times.add(st.INFERENCE, inferred - began)
        times.add(st.INFERENCE_FRAME, inferred - began)
        persons = [[{"x": p.x, "y": p.y, "z": p.z, "visibility": p.visibility,
                     "presence": p.presence} for p in pose] for pose in result.pose_landmarks]
        key = f"frames/{self.args.stream}/{round(producer_time * 1000)}.jpg"
        encoding = time.perf_counter()
        ok, jpeg = cv2.imencode(".jpg", image)
        if not ok:
            raise RuntimeError("cv2.imencode failed")
        body = jpeg.tobytes()
        putting = time.perf_counter()
        times.add(st.JPEG_ENCODE, putting - encoding)
        self.s3.put_object(Bucket=self.args.bucket, Key=key, Body=body,
                           ContentType="image/jpeg")
        put = time.perf_counter()
        times.add(st.S3_CALL, put - putting)
        record = {"StreamName": self.args.stream, "ProducerTime": producer_time,
                  "FrameIndex": index, "Width": image.shape[1], "Height": image.shape[0],
                  "ProcessedTime": time.time(), "S3Bucket": self.args.bucket, "S3Key": key,
                  "PersonCount": len(persons), "Persons": persons}
        data = json.dumps(record)
        sending = time.perf_counter()
        times.add(st.RECORD_BUILD, (putting - inferred) + (sending - put))
        self.kinesis.put_record(StreamName=self.args.data_stream, Data=data,
                                PartitionKey=self.args.stream)
        times.add(st.KDS_CALL, time.perf_counter() - sending)
        self.counters.frames_analysed += 1
        self.counters.persons += len(persons)
        self.counters.lags.append(time.time() - producer_time)

    def stats(self, elapsed: float) -> dict[str, Any]:
        c = self.counters
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "stream": self.args.stream,
            "frames_decoded": c.frames_decoded,
            "frames_analysed": c.frames_analysed,
            "persons": c.persons,
            "api_calls": self.calls.snapshot(),
            "elapsed_seconds": elapsed,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "max_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
            "get_media_connections": c.get_media_connections,
            "lag_seconds": {"p50": statistics.median(c.lags) if c.lags else None,
                            "max": max(c.lags) if c.lags else None},
            "stage_times": self.times.snapshot(),
        }

    def close(self) -> None:
        self.landmarker.close()


def _landmarker(path: Path, num_poses: int):
    from mediapipe.tasks.python import BaseOptions, vision

    if not path.is_file():
        raise FileNotFoundError(f"pose model not found: {path} (pass --models-dir)")
    options = vision.PoseLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(path)),
        running_mode=vision.RunningMode.IMAGE, num_poses=num_poses)
    return vision.PoseLandmarker.create_from_options(options)


def _session(args: argparse.Namespace) -> boto3.session.Session:
    """The standard credential chain; placeholder keys when every endpoint is local and none."""
    urls = [args.kinesisvideo_url, args.s3_url, args.kinesis_url]
    session = boto3.session.Session(region_name=args.region)
    local = all(is_loopback(u) for u in urls)
    region = args.region or session.region_name or (LOCAL_REGION if local else None)
    if region is None:
        raise SystemExit("no AWS region: pass --region or set AWS_DEFAULT_REGION")
    keys = {}
    if session.get_credentials() is None and local:
        keys = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
    return boto3.session.Session(region_name=region, **keys)


def _stopper(requested: list[str]):
    def stop(signum: int, _frame: FrameType | None) -> None:
        requested.append(signal.Signals(signum).name)
        raise Stop(requested[-1])
    return stop


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stream", required=True, help="the camera's KVS stream name")
    parser.add_argument("--kinesisvideo-url", help="KVS control plane (default: real AWS)")
    parser.add_argument("--s3-url", help="S3 endpoint (default: real AWS)")
    parser.add_argument("--kinesis-url", help="Kinesis Data Streams endpoint (default: real AWS)")
    parser.add_argument("--region", help="AWS region (default: the usual chain; us-east-1 "
                                         "when every endpoint is on loopback)")
    parser.add_argument("--data-stream", required=True, help="Kinesis data stream for records")
    parser.add_argument("--bucket", required=True, help="S3 bucket for JPEGs")
    parser.add_argument("--fps", type=float, required=True, help="frames analysed per second")
    parser.add_argument("--models-dir", required=True, help=f"folder holding {MODEL}")
    parser.add_argument("--num-poses", type=int, default=4, help="max persons (default 4)")
    parser.add_argument("--start", choices=("EARLIEST", "NOW"), default="NOW",
                        help="first GetMedia's start (default NOW); reconnects use NOW")
    parser.add_argument("--duration", type=float, help="stop after this many seconds")
    parser.add_argument("--stats-file", help="write counters here as JSON at exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.fps <= 0:
        parser.error("--fps must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s naive %(levelname)s %(message)s")
    calls = ApiCalls()
    consumer = NaiveConsumer(args, _session(args), calls)
    began = time.monotonic()
    requested: list[str] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
        signal.signal(sig, _stopper(requested))
    if args.duration:
        signal.setitimer(signal.ITIMER_REAL, args.duration)
    try:
        consumer.run()
    except Exception as why:  # noqa: BLE001
        # a signal inside a boto3 call surfaces wrapped (HTTPClientError): a stop all the same
        if not requested:
            raise
        log.info("stopping: %s", why)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM):
            signal.signal(sig, signal.SIG_IGN)
        if args.stats_file:
            Path(args.stats_file).write_text(
                json.dumps(consumer.stats(time.monotonic() - began), indent=1))
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
