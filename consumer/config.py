"""The consumer's configuration: YAML in, typed and validated once at start, passed down.

Every key can be overridden by an environment variable named after its path: KVSA_ then the
section and key names in upper case joined by double underscores, e.g.
KVSA_OUTPUTS__S3__BUCKET=my-bucket or KVSA_STREAMS__NAMES='[cam-1, cam-2]' (values are YAML).
Unknown keys, in the file or the environment, are errors that name the key.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consumer.config_events import Events
from consumer.presets import with_preset
from processors.settings import ConfigError, Faces, Hands, Model, Pose, Tracking, Yolo

ENV_PREFIX = "KVSA_"
STREAM_NAME = re.compile(r"^[a-zA-Z0-9_.\-]{1,256}$")
STREAM_ARN = re.compile(r"^arn:aws[a-z\-]*:kinesisvideo:[a-z0-9\-]+:[0-9]{12}:stream/"
                        r"[a-zA-Z0-9_.\-]{1,256}/[0-9]+$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
KEY_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/\-]*$")


class SamplingMode(str, Enum):
    ALL = "all"  # every frame
    FPS = "fps"  # a target analysis rate
    KEYFRAMES = "keyframes"  # keyframes only; other frames are not decoded


class LagPolicy(str, Enum):
    LOSSLESS = "lossless"  # backpressure reaches GetMedia
    REALTIME = "realtime"  # analysis skips stale frames; checkpoints still advance in order


class StartPosition(str, Enum):
    NOW = "NOW"
    EARLIEST = "EARLIEST"


class FrameSelection(str, Enum):
    NONE = "none"
    ALL = "all"  # every analysed frame
    PERSONS = "persons"  # analysed frames with at least one person
    THUMBNAIL = "thumbnail"  # one per fragment


class Sampling(Model):
    mode: SamplingMode = SamplingMode.FPS
    fps: float = Field(2.0, gt=0, le=120, description="analysed frames per second (mode fps)")


class StreamSettings(Model):
    """Per-stream behaviour; `streams.overrides.<name>` may change any of it for one stream."""

    sampling: Sampling = Sampling()
    policy: LagPolicy = LagPolicy.LOSSLESS
    max_lag_seconds: float = Field(5.0, gt=0, description="realtime: frames older are skipped")
    frames: FrameSelection = FrameSelection.PERSONS
    annotate: bool = True


class StreamOverride(Model):
    sampling: Sampling | None = None
    policy: LagPolicy | None = None
    max_lag_seconds: float | None = Field(None, gt=0)
    frames: FrameSelection | None = None
    annotate: bool | None = None


class Streams(Model):
    names: list[str] = Field(default_factory=list, description="stream names or ARNs")
    prefix: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    relist_seconds: float = Field(60.0, gt=0)
    start: StartPosition = StartPosition.NOW
    defaults: StreamSettings = StreamSettings()
    overrides: dict[str, StreamOverride] = Field(default_factory=dict)

    @field_validator("names")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not (STREAM_NAME.fullmatch(name) or STREAM_ARN.fullmatch(name)):
                raise ValueError(f"{name!r} is neither a stream name ([a-zA-Z0-9_.-], 1-256) "
                                 "nor a Kinesis Video stream ARN")
        return names

    @property
    def chosen(self) -> bool:
        """Some streams are named: by names, prefix or tags (`run` needs it)."""
        return bool(self.names or self.prefix is not None or self.tags)

    def settings_for(self, name: str) -> StreamSettings:
        override = self.overrides.get(name)
        if override is None:
            return self.defaults
        changes = override.model_dump(exclude_none=True)
        return self.defaults.model_copy(update={k: getattr(override, k) for k in changes})


class Aws(Model):
    region: str | None = None
    # Endpoint URLs for the local stack (python -m infra.local); empty means real AWS.
    endpoints: dict[str, str] = Field(default_factory=dict)

    @field_validator("endpoints")
    @classmethod
    def _known_services(cls, endpoints: dict[str, str]) -> dict[str, str]:
        known = {"kinesisvideo", "s3", "kinesis", "dynamodb", "region"}
        for service in endpoints:
            if service not in known:
                raise ValueError(f"unknown service {service!r}; expected one of {sorted(known)}")
        return endpoints


class ProcessorKind(str, Enum):
    POSE = "pose"  # MediaPipe PoseLandmarker, CPU, 33 landmarks a person
    YOLO = "yolo"  # Ultralytics YOLO detection or pose, GPU when present (extra: yolo)
    NONE = "none"  # no model: records (and JPEGs) of the sampled frames, no persons


class Decode(Model):
    """Where video is decoded. `cuda` / `cuda:N`: NVIDIA's NVDEC through PyAV's hardware
    acceleration, frames brought back to system memory and given out as the CPU's are; a stream
    whose decoder cannot open (or decode) there is decoded on the CPU, with one warning per
    process (consumer.pipeline.decode)."""

    device: str = Field("cpu", description="cpu, cuda or cuda:N (NVDEC on GPU N)")
    # FFmpeg's threads per stream's decoder: auto (frame and slice threads: a stream decodes
    # faster than one core allows) or none (least CPU a frame, ~10 % less: best when other
    # streams or processes keep every core busy anyway; batch mode's default with a worker
    # process per core)
    threads: Literal["auto", "frame", "slice", "none"] = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", device):
            raise ValueError(f"{device!r}: expected cpu, cuda or cuda:N")
        return device


class Processing(Model):
    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        if self.processor is ProcessorKind.YOLO:
            return 1  # one model batches every camera's frames (a GPU's strength)
        return max(1, min(8, os.cpu_count() or 1))

    processor: ProcessorKind = ProcessorKind.POSE
    pose: Pose = Pose()
    yolo: Yolo = Yolo()
    tracking: Tracking = Tracking()
    faces: Faces = Faces()
    hands: Hands = Hands()
    decode: Decode = Decode()
    # analysis workers, each with its own model instance, each serving a share of the streams;
    # 0: one per CPU core (at most 8)
    workers: int = Field(0, ge=0, le=64)
    batch_size: int = Field(8, ge=1, le=256)
    batch_wait_ms: float = Field(20.0, ge=0)
    queue_frames: int = Field(64, ge=1, description="frames waiting for analysis, all streams")


class KinesisOutput(Model):
    stream: str
    linger_ms: float = Field(200.0, ge=0)
    # null: retry failed records until they are delivered (an outage delays checkpoints, never
    # freezes them); a number: give a record up after that many failures (its fragment is then
    # re-read after a restart)
    max_retries: int | None = Field(None, ge=0)
    dedupe_on_resume: bool = True


class S3Output(Model):
    bucket: str | None = None  # required by `run`; `batch` without one writes to a folder only
    prefix: str = ""
    jpeg_quality: int = Field(85, ge=10, le=100)
    pose_sequences: bool = True
    # 0: one pose file per fragment; else one per this many seconds of producer time (a file
    # has a fixed ~3-4 KB cost, so windows are much smaller per frame at sparse sampling)
    pose_window_seconds: float = Field(0.0, ge=0, le=3600)
    upload_concurrency: int = Field(8, ge=1, le=64)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, bucket: str | None) -> str | None:
        if bucket is not None and not BUCKET.fullmatch(bucket):
            raise ValueError(f"{bucket!r} is not a valid S3 bucket name")
        return bucket

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not KEY_PREFIX.fullmatch(prefix) or ".." in prefix:
            raise ValueError(f"{prefix!r} is not a safe S3 key prefix")
        return prefix.strip("/")


class Outputs(Model):
    kinesis: KinesisOutput | None = None  # required by `run`; optional for `batch`
    s3: S3Output | None = None


class Checkpoint(Model):
    """The lease table: checkpoints, and which worker process holds which stream."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    table: str = "kvs-analytics-checkpoints"
    # default: unique per process (host-pid-random); a fixed id lets a restarted process
    # continue its own leases at once, and two live processes with one id is an error
    worker_id: str | None = None
    lease_seconds: float = Field(10.0, ge=1, le=600, description=(
        "a lease not renewed for this long (renewals every third of it) is taken over"))
    max_streams: int | None = Field(None, ge=1, description="most streams one worker holds")
    # checkpoints ride on the lease's renewals (every lease_seconds / 3, no extra write); a
    # number also writes a pending checkpoint sooner, at most this often (one write each)
    min_interval_seconds: float | None = Field(None, ge=0)

    @field_validator("worker_id")
    @classmethod
    def _worker(cls, worker_id: str | None) -> str:
        worker_id = worker_id or default_worker_id()
        if not re.fullmatch(r"[A-Za-z0-9_.:@\-]{1,128}", worker_id):
            raise ValueError(f"{worker_id!r} must be 1-128 of A-Z a-z 0-9 _ . : @ -")
        return worker_id


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in the lease table."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname())[:80] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class Logging(Model):
    level: str = "INFO"
    status_seconds: float = Field(10.0, gt=0)
    # text: "time level logger: message"; json: one object a line (consumer.observe.logs)
    format: Literal["text", "json"] = "text"

    @field_validator("level")
    @classmethod
    def _level(cls, level: str) -> str:
        if level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level.upper()


class Health(Model):
    """The health and metrics endpoint and the CloudWatch EMF lines (consumer.observe)."""

    # 0: no endpoint (the default; the container image sets 8080). `--processes N` gives child i
    # the port + i.
    port: int = Field(0, ge=0, le=65535)
    # every interface: in a container the endpoint must be reachable from outside it (the
    # Docker health check, a Prometheus scrape); 127.0.0.1 keeps it on the machine
    host: str = Field("0.0.0.0", min_length=1)
    # a stream is stuck (/readyz: 503) when video it read has waited this long and its
    # checkpoint has not advanced for as long
    stuck_seconds: float = Field(120.0, gt=0)
    emf: bool = Field(False, description="CloudWatch Embedded Metric Format lines on stdout")
    emf_seconds: float = Field(60.0, ge=1, description="one EMF line this often")
    # the EMF lines' dimension Fleet (the stack's alarms read Fleet = its NamePrefix)
    fleet: str = Field("kvs-analytics", pattern=r"^[A-Za-z0-9_.:/\-]{1,255}$")


VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".m4v", ".webm", ".ts", ".mts", ".flv",
                    ".wmv", ".mpg", ".mpeg", ".3gp", ".h264", ".264", ".hevc", ".h265")


class Batch(Model):
    """`kvs-analytics batch`: recorded video files through the same pipeline (consumer.batch)."""

    workers: int = Field(1, ge=1, le=64, description="worker processes, each one video at a time")
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS),
                                  description="file name endings a folder is searched for")
    max_frames: int | None = Field(None, ge=1, description="read only the first N frames a video")
    fragment_seconds: float = Field(2.0, gt=0, le=10,
                                    description="a file is cut at keyframes into parts this long, "
                                                "each playing a KVS fragment's role")
    upload_part_size_mb: int = Field(16, ge=5, le=5120, description="multipart part size")
    upload_threshold_mb: int = Field(16, ge=5, le=5120, description="multipart from this size")

    @field_validator("extensions")
    @classmethod
    def _extensions(cls, extensions: list[str]) -> list[str]:
        out = []
        for ending in extensions:
            if not re.fullmatch(r"\.?[A-Za-z0-9]{1,10}", ending):
                raise ValueError(f"{ending!r} is not a file name ending such as .mp4")
            out.append("." + ending.lstrip(".").lower())
        return out


class Privacy(Model):
    """What is kept of the people the cameras see."""

    blur_faces: bool = Field(False, description="blur every face in stored JPEGs and highlights "
                                                "(clips are not blurred); detects faces even "
                                                "when processing.faces is off")


class Console(Model):
    """`kvs-analytics serve`: the read API and the events console (consumer.api,
    consumer.console)."""

    host: str = Field("127.0.0.1", min_length=1, description="loopback: this machine only")
    port: int = Field(8080, ge=0, le=65535)
    url_expiry: int = Field(900, ge=1, le=3600, description="presigned URLs' lifetime, seconds")
    password: str | None = Field(
        None, pattern=r"^scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$",
        description="an scrypt hash from `kvs-analytics serve --hash-password` (never the "
                    "password itself); none: no login")
    refresh_seconds: float = Field(5.0, ge=1, le=300,
                                   description="how often the cameras page updates itself")


class Config(Model):
    preset: str | None = Field(None, description="a preset's name (consumer.presets)")
    aws: Aws = Aws()
    streams: Streams | None = None  # required by `run`; `batch` reads files instead
    processing: Processing = Processing()
    outputs: Outputs = Outputs()
    events: Events = Events()
    checkpoint: Checkpoint = Checkpoint()
    logging: Logging = Logging()
    health: Health = Health()
    batch: Batch = Batch()
    privacy: Privacy = Privacy()
    console: Console = Console()
    shutdown_seconds: float = Field(8.0, gt=0, description="drain budget after SIGTERM")

    def stream_settings(self, name: str) -> StreamSettings:
        """A stream's (or, in batch mode, a video's) settings: streams.defaults and overrides."""
        return self.streams.settings_for(name) if self.streams is not None else StreamSettings()

    @model_validator(mode="after")
    def _events_need_tracks(self) -> Config:
        if self.events.cameras and not self.processing.tracking.enabled:
            raise ValueError("events.cameras has rules, which are evaluated per track: "
                             "processing.tracking.enabled must be true")
        faces = self.processing.faces
        for pattern, rules in self.events.face_match_rules().items():
            key = f"events.cameras.{pattern}.rules"
            if not faces.enabled or not faces.search.collections:
                raise ValueError(
                    f"{key}: face_match rule {rules[0].name!r} needs faces searched: "
                    "processing.faces.enabled must be true and "
                    "processing.faces.search.collections must name a collection")
            for rule in rules:
                if rule.collection is not None and rule.collection not in faces.search.collections:
                    raise ValueError(
                        f"{key}: face_match rule {rule.name!r} names collection "
                        f"{rule.collection!r}, which processing.faces.search.collections "
                        f"does not search (it searches {faces.search.collections})")
        return self


def load_config(path: str | Path | None = None, data: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None, *, live: bool = True) -> Config:
    """Read YAML (a file or a mapping), apply KVSA_ environment overrides, validate.

    `live` (the consumer reading streams): `streams` and `outputs.kinesis` are required.
    Batch mode (`live=False`) reads files and may write records to a folder instead."""
    raw = read_config_file(path) if path is not None else dict(data or {})
    raw = _apply_environment(raw, os.environ if environ is None else environ)
    try:
        raw = with_preset(raw)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err)) from None
    if live:
        s3 = config.outputs.s3
        missing = [key for key, value in (("streams", config.streams),
                                           ("outputs.kinesis", config.outputs.kinesis),
                                           ("outputs.s3.bucket", s3.bucket if s3 else ""))
                   if value is None]
        problems = [f"{key}: required key is missing" for key in missing]
        if config.streams is not None and not config.streams.chosen:
            problems.append("streams: give streams.names, streams.prefix or streams.tags")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))
    return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a configuration file (not yet validated); ConfigError naming it."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return raw


def _apply_environment(raw: dict, environ: Mapping[str, str]) -> dict:
    merged = _deep_copy(raw)
    for name, value in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        path = [part.lower() for part in name[len(ENV_PREFIX):].split("__")]
        if not all(path):
            raise ConfigError(f"environment variable {name}: empty key in its path")
        _check_path(path, name)
        node = merged
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: {part} is not a section")
        try:
            node[path[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            node[path[-1]] = value
    return merged


def _check_path(path: list[str], variable: str) -> None:
    """Reject an override whose key does not exist, naming the variable and the key."""
    model: Any = Config
    for depth, part in enumerate(path):
        fields = getattr(model, "model_fields", None)
        if fields is None:
            return  # inside a free-form mapping (tags, endpoints, overrides)
        if part not in fields:
            where = ".".join(path[:depth + 1])
            raise ConfigError(f"environment variable {variable}: unknown key {where}")
        model = _model_of(fields[part].annotation)


def _model_of(annotation) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe(err: ValidationError) -> str:
    lines = []
    for problem in err.errors():
        key = ".".join(str(p) for p in problem["loc"]) or "(top level)"
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] == "missing":
            message = "required key is missing"
        lines.append(f"{key}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _deep_copy(value):
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
