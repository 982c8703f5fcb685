"""`python -m consumer run --config FILE`: the long-running consumer.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for a configuration error (also no AWS
region), 3 when a dependency (credentials, data stream, bucket, table, model, the health port)
cannot be set up. A second signal exits at once.

Start order, cheapest check first so a mistake is reported at once: configuration; region and
credentials (consumer.cloud.aws); the data stream and bucket exist (consumer.cloud.preflight)
and the lease table exists or is created; only then are models loaded (seconds).

With `health.port`, the health and metrics endpoint (consumer.observe) listens from the start,
alive and not ready while models load, until the process exits; `health.emf` writes CloudWatch
EMF lines on stdout while the supervisor runs; `logging.format` chooses text or JSON lines.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from consumer.config import Config, ConfigError, ProcessorKind, load_config

log = logging.getLogger("consumer")


def build_processor(config: Config):
    """The processor `processing.processor` names (pose: MediaPipe; yolo: Ultralytics YOLO).

    Raises ConfigError (pose chosen but disabled, YOLO extra not installed, unknown class names)
    or processors.models.ModelNotFoundError (weights missing)."""
    processing = config.processing
    if processing.processor is ProcessorKind.NONE:
        from processors.frames_only import FramesOnlyProcessor
        return FramesOnlyProcessor(max_batch=processing.batch_size)
    if processing.processor is ProcessorKind.YOLO:
        from processors.yolo import YoloProcessor
        return with_faces_and_hands(config, YoloProcessor(processing.yolo,
                                                          max_batch=processing.batch_size))
    from processors.pose import PoseProcessor
    if not processing.pose.enabled:
        raise ConfigError("processing.pose.enabled is false and no other processor is configured")
    return with_faces_and_hands(config, PoseProcessor(processing.pose))


def with_faces_and_hands(config: Config, base):
    """`base`, with faces (processing.faces, or privacy.blur_faces: detected to be blurred) and
    hands (processing.hands) added to its results when asked for."""
    processing = config.processing
    wants_faces = processing.faces.enabled or config.privacy.blur_faces
    if not wants_faces and not processing.hands.enabled:
        return base
    from processors.extras import WithFacesAndHands
    models = processing.pose.models_dir
    faces = hands = None
    try:
        if wants_faces:
            from processors.faces import FaceAnalyzer
            settings = processing.faces
            faces = FaceAnalyzer(models, settings.detector, settings.min_confidence,
                                 embed=bool(processing.faces.enabled
                                            and settings.search.collections),
                                 max_faces=settings.max_faces)
        if processing.hands.enabled:
            from processors.hands import HandAnalyzer
            hands = HandAnalyzer(models, processing.hands.max_hands,
                                 processing.hands.min_confidence)
    except BaseException:
        for part in (faces, base):
            if part is not None:
                part.close()
        raise
    return WithFacesAndHands(base, faces, hands)


def build_processors(config: Config) -> list:
    """One processor per analysis worker (a model instance each: they run in parallel)."""
    if config.processing.processor is ProcessorKind.NONE:
        return [build_processor(config)]  # nothing to run in parallel
    return [build_processor(config) for _ in range(config.processing.worker_count)]


def _close(processors: list) -> None:
    for processor in processors:
        processor.close()


def install_signal_handlers(stop: threading.Event) -> None:
    def handle(signum, _frame):
        if stop.is_set():
            os._exit(128 + signum)  # second signal: leave now
        log.info("%s received: stopping (again to exit at once)", signal.Signals(signum).name)
        stop.set()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handle)


def run(config_path: str | None, stop: threading.Event | None = None,
        stats_file: str | None = None) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as err:
        print(f"consumer: {err}", file=sys.stderr)
        return 2
    from consumer.observe.logs import configure_logging
    configure_logging(config.logging)
    stop = stop or threading.Event()
    install_signal_handlers(stop)
    health = None
    if config.health.port:  # up while models load: alive, not ready
        from consumer.observe.server import HealthServer
        try:
            health = HealthServer(config.health).start()
        except OSError as err:
            print(f"consumer: health.port: cannot listen on {config.health.host}:"
                  f"{config.health.port}: {err.strerror or err}", file=sys.stderr)
            return 3
    try:
        return _serve(config, stop, stats_file, health)
    finally:
        if health is not None:
            health.close()


class SetupFailed(Exception):
    """What check_setup found wrong, with the exit status it means."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_setup(config: Config):
    """Region, credentials, outputs and lease table, before models load: the supervisor's
    Clients, or SetupFailed (2: no region; 3: what cannot be reached, is missing or refused)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.cloud.aws import AwsSetupError, MissingRegion
    from consumer.cloud.preflight import SetupProblem, check_outputs
    from consumer.fleet.lease_table import LeaseTable
    from consumer.streams.supervisor import Clients
    try:
        clients = Clients.from_config(config)
    except MissingRegion:
        raise SetupFailed(2, "aws.region: no AWS region: set aws.region in the configuration, "
                             "pass --region, or set AWS_REGION (or AWS_DEFAULT_REGION)") from None
    except AwsSetupError as err:
        raise SetupFailed(3, str(err)) from None
    outputs = config.outputs
    try:
        check_outputs(clients.kinesis, outputs.kinesis.stream, clients.s3,
                      outputs.s3.bucket if outputs.s3 is not None else None)
    except SetupProblem as err:
        raise SetupFailed(3, str(err)) from None
    table = config.checkpoint.table
    try:
        LeaseTable(clients.dynamodb, table, config.checkpoint.worker_id).ensure_table()
    except (BotoCoreError, ClientError, ValueError) as err:
        raise SetupFailed(3, f"checkpoint.table {table!r}: cannot find or create it: {err}") \
            from None
    return clients



def setup_status(config: Config) -> int:
    """check_setup as an exit status, its message on stderr: 0 when everything is there."""
    try:
        check_setup(config)
    except SetupFailed as err:
        print(f"consumer: {err}", file=sys.stderr)
        return err.status
    return 0

def _serve(config: Config, stop: threading.Event, stats_file: str | None, health) -> int:
    from consumer.fleet.coordinator import DuplicateWorkerId
    from consumer.streams.supervisor import StreamSupervisor
    from processors.models import ModelNotFoundError
    try:
        clients = check_setup(config)
    except SetupFailed as err:
        print(f"consumer: {err}", file=sys.stderr)
        return err.status
    try:
        processors = build_processors(config)
    except (ModelNotFoundError, ConfigError) as err:
        print(f"consumer: {err}", file=sys.stderr)
        return 3
    try:
        service = StreamSupervisor(config, processors, clients).start()
    except DuplicateWorkerId as err:
        print(f"consumer: checkpoint.worker_id: {err}", file=sys.stderr)
        _close(processors)
        return 2
    except Exception as err:
        print(f"consumer: cannot start: {err}", file=sys.stderr)
        _close(processors)
        return 3
    emf = None
    if health is not None:
        health.attach(service)
    if config.health.emf:
        from consumer.observe.emf import EmfEmitter
        emf = EmfEmitter(service, config.health.fleet, config.health.emf_seconds).start()
    try:
        service.run(stop)
    finally:
        if health is not None:
            health.stopping()
        service.shutdown()
        if emf is not None:
            emf.stop()
        _close(processors)
        if stats_file:
            Path(stats_file).write_text(json.dumps(service.stats(), indent=1, default=str))
    return 0
