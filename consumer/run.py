"""`python -m consumer run --config FILE`: the long-running consumer.

Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for a configuration error, 3 when a
dependency (model, table, AWS) cannot be set up. A second signal exits at once.
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
        return YoloProcessor(processing.yolo, max_batch=processing.batch_size)
    from processors.pose import PoseProcessor
    if not processing.pose.enabled:
        raise ConfigError("processing.pose.enabled is false and no other processor is configured")
    return PoseProcessor(processing.pose)


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
    logging.basicConfig(level=config.logging.level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("botocore", "urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))
    from consumer.fleet.coordinator import DuplicateWorkerId
    from consumer.streams.supervisor import StreamSupervisor
    from processors.models import ModelNotFoundError
    stop = stop or threading.Event()
    install_signal_handlers(stop)
    try:
        processors = build_processors(config)
    except (ModelNotFoundError, ConfigError) as err:
        print(f"consumer: {err}", file=sys.stderr)
        return 3
    try:
        service = StreamSupervisor(config, processors).start()
    except DuplicateWorkerId as err:
        print(f"consumer: checkpoint.worker_id: {err}", file=sys.stderr)
        _close(processors)
        return 2
    except Exception as err:
        print(f"consumer: cannot start: {err}", file=sys.stderr)
        _close(processors)
        return 3
    try:
        service.run(stop)
    finally:
        service.shutdown()
        _close(processors)
        if stats_file:
            Path(stats_file).write_text(json.dumps(service.stats(), indent=1, default=str))
    return 0
