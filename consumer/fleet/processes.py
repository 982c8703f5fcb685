"""`python -m consumer run --processes N`: N consumer processes on one machine, sharing the
streams through the lease table like workers on separate machines.

The parent validates the configuration once (error: exit 2), then starts child i (0-based) as
`python -m consumer run --config FILE [--stats-file FILE.i]` with its output inherited and, in
its environment:
- KVSA_CHECKPOINT__WORKER_ID=<id>-<i> when the user fixed checkpoint.worker_id (file or
  environment), so the ids stay unique; otherwise each child makes its own unique id;
- KVSA_PROCESSING__YOLO__DEVICE=cuda:<i mod GPUs> with processor yolo, yolo.device auto and
  more than one GPU; likewise KVSA_PROCESSING__DECODE__DEVICE with decode.device cuda, so each
  child decodes on the GPU its model runs on;
- KVSA_PROCESSING__WORKERS=<cores / N> with processor pose and processing.workers left at 0
  (one analysis worker per core), so N processes do not each start a model per core;
- KVSA_HEALTH__PORT=<port + i> when health.port is set, so each child has its own health and
  metrics endpoint (child 0 keeps the port the container's health check asks).

`auto` is one process per CPU core for pose, one per GPU for yolo (at least 1).

With `--stats-file FILE`, each child writes FILE.<i> and the parent then writes FILE: every
stream's row (with the worker that held it last), API calls summed, stage times merged (their
histograms add up), and each child's whole.

Signals: SIGTERM/SIGINT are forwarded to every child (which drains and checkpoints); the parent
waits for all and exits 0 when every child exited 0, else with the highest child status (1 when
children only died by signals). A second signal SIGKILLs the children and exits 128+signal.
Children run in their own process group, so Ctrl-C in a terminal reaches them once, from the
parent, and not twice (a second signal makes a consumer exit at once). On Linux a child gets
SIGTERM when the parent dies, however it dies: none is left running unsupervised.

A child that exits while the parent is not stopping is restarted after a backoff: 1 s doubling
to 30 s, back to 1 s once a child ran 60 s; each exit is logged with its status.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from consumer.pipeline.stage_times import merge

log = logging.getLogger("consumer.processes")

AUTO = "auto"
CONSUMER = (sys.executable, "-m", "consumer")  # the child program; tests put a stand-in here
WORKER_ID_VARIABLE = "KVSA_CHECKPOINT__WORKER_ID"
DEVICE_VARIABLE = "KVSA_PROCESSING__YOLO__DEVICE"
DECODE_DEVICE_VARIABLE = "KVSA_PROCESSING__DECODE__DEVICE"
WORKERS_VARIABLE = "KVSA_PROCESSING__WORKERS"
HEALTH_PORT_VARIABLE = "KVSA_HEALTH__PORT"
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def process_count(text: str) -> int | str:
    """argparse type of --processes: an integer >= 1, or 'auto'."""
    import argparse
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 or 'auto', got {text!r}") \
            from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def gpu_count() -> int:
    """CUDA devices torch sees; 1 without torch (and at least 1)."""
    try:
        import torch
    except ImportError:
        return 1
    return max(1, torch.cuda.device_count())


def resolve_count(processes: int | str, config, gpus: Callable[[], int] = gpu_count) -> int:
    from consumer.config import ProcessorKind
    if processes != AUTO:
        return int(processes)
    if config.processing.processor is ProcessorKind.YOLO:
        return max(1, gpus())
    return max(1, os.cpu_count() or 1)


def explicit_worker_id(config_path: str, environ: Mapping[str, str]) -> bool:
    """Whether the user set checkpoint.worker_id (else every process makes a unique one)."""
    import yaml
    if environ.get(WORKER_ID_VARIABLE, "").strip():
        return True
    raw = yaml.safe_load(Path(config_path).read_text()) or {}
    section = raw.get("checkpoint") if isinstance(raw, dict) else None
    return isinstance(section, dict) and bool(section.get("worker_id"))


def child_environments(config, count: int, fixed_worker_id: bool, environ: Mapping[str, str],
                       gpus: Callable[[], int] = gpu_count) -> list[dict[str, str]]:
    """Each child's environment: ours plus its overrides (module doc)."""
    from consumer.config import ProcessorKind
    processing = config.processing
    spread_model = processing.processor is ProcessorKind.YOLO and processing.yolo.device == "auto"
    spread_decode = processing.decode.device == "cuda"
    devices = gpus() if (spread_model or spread_decode) and count > 1 else 1
    share = max(1, (os.cpu_count() or 1) // count)
    envs = []
    for i in range(count):
        env = dict(environ)
        if config.processing.processor is ProcessorKind.POSE \
                and config.processing.workers == 0 and WORKERS_VARIABLE not in environ:
            env[WORKERS_VARIABLE] = str(share)
        if fixed_worker_id:
            env[WORKER_ID_VARIABLE] = f"{config.checkpoint.worker_id}-{i}"
        if devices > 1 and spread_model:
            env[DEVICE_VARIABLE] = f"cuda:{i % devices}"
        if devices > 1 and spread_decode:
            env[DECODE_DEVICE_VARIABLE] = f"cuda:{i % devices}"
        if config.health.port:
            env[HEALTH_PORT_VARIABLE] = str(config.health.port + i)
        envs.append(env)
    return envs


def child_commands(config_path: str, count: int, stats_file: str | None,
                   program: Sequence[str] = CONSUMER) -> list[list[str]]:
    commands = []
    for i in range(count):
        command = [*program, "run", "--config", config_path]
        if stats_file:
            command += ["--stats-file", f"{stats_file}.{i}"]
        commands.append(command)
    return commands


def run_processes(config_path: str, processes: int | str, stats_file: str | None = None,
                  program: Sequence[str] = CONSUMER,
                  gpus: Callable[[], int] = gpu_count,
                  run_here: Callable[..., int] | None = None,
                  check: Callable[[object], int] | None = None) -> int:
    """`run --processes`: validate, start the children, supervise them; the exit status.
    When the count comes to 1, `run_here(config_path, stats_file=...)` runs the consumer in
    this process instead (the caller passes `consumer.run.run`). `check(config)`, after the
    children's settings are validated, is what every child would fail on at start (the caller
    passes the consumer's setup check): a non-zero status is returned before any child starts,
    said once instead of by children restarted forever."""
    from consumer.config import ConfigError, load_config
    try:
        config = load_config(config_path)
        count = resolve_count(processes, config, gpus)
        if count == 1 and run_here is not None:
            return run_here(config_path, stats_file=stats_file)
        envs = child_environments(config, count, explicit_worker_id(config_path, os.environ),
                                  os.environ, gpus)
        for env in envs:  # e.g. <id>-<i> must still be a valid worker id
            load_config(config_path, environ=env)
    except ConfigError as err:
        print(f"consumer: {err}", file=sys.stderr)
        return 2
    status = check(config) if check is not None else 0
    if status:
        return status
    from consumer.observe.logs import configure_logging
    configure_logging(config.logging)  # logging.format: the parent's lines as the children's
    status = ProcessSupervisor(child_commands(config_path, count, stats_file, program),
                               envs).run()
    if stats_file:
        merge_stats(stats_file, count)
    return status


def merge_stats(stats_file: str, count: int) -> None:
    """FILE from the children's FILE.<i>: their streams, summed API calls, merged stage times,
    and each one whole."""

    children = []
    for i in range(count):
        path = Path(f"{stats_file}.{i}")
        if path.is_file():
            children.append(json.loads(path.read_text()))
    calls: dict[str, int] = {}
    for child in children:
        for operation, n in (child.get("api_calls") or {}).items():
            calls[operation] = calls.get(operation, 0) + n
    merged = {"streams": {name: {**row, "worker_id": child.get("worker_id")}
                          for child in children for name, row in child.get("streams", {}).items()},
              "api_calls": calls,
              "checkpoint_writes": sum(child.get("checkpoint_writes", 0) for child in children),
              "stage_times": merge(child.get("stage_times") for child in children),
              "processes": children}
    Path(stats_file).write_text(json.dumps(merged, indent=1))


@dataclass
class _Child:
    index: int
    command: list[str]
    env: dict[str, str] | None
    process: subprocess.Popen | None = None
    started: float = 0.0
    status: int | None = None  # returncode of the last exit
    restart_at: float = 0.0
    delay: float = 0.0  # the next restart's backoff


class ProcessSupervisor:
    """Runs one process per command until a signal; see the module doc for the behaviour."""

    def __init__(self, commands: Sequence[Sequence[str]],
                 envs: Sequence[Mapping[str, str] | None] | None = None, *,
                 backoff: float = 1.0, max_backoff: float = 30.0, reset_after: float = 60.0,
                 poll: float = 0.1, clock: Callable[[], float] = time.monotonic):
        envs = envs or [None] * len(commands)
        self.children = [_Child(i, list(command), dict(env) if env is not None else None,
                                delay=backoff)
                         for i, (command, env) in enumerate(zip(commands, envs, strict=True))]
        self.backoff, self.max_backoff, self.reset_after = backoff, max_backoff, reset_after
        self.poll, self.clock = poll, clock
        self._signals: list[int] = []
        self._stopping = False

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._start(child)
            log.info("started %d consumer processes (pids %s)", len(self.children),
                     " ".join(str(c.process.pid) for c in self.children if c.process))
            while True:
                killed = self._handle_signals()
                if killed is not None:
                    return killed
                self._reap()
                if self._stopping and all(c.process is None for c in self.children):
                    return self._exit_status()
                time.sleep(self.poll)
        except BaseException:
            self._kill_all()  # never leave children behind on an unexpected error
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame) -> None:
        self._signals.append(signum)  # acted on in the loop, outside the handler

    def _handle_signals(self) -> int | None:
        """Forward a first signal; on a second, kill everything: the exit status then."""
        while self._signals:
            signum = self._signals.pop(0)
            name = signal.Signals(signum).name
            if self._stopping:
                log.warning("%s again: killing the consumer processes", name)
                self._kill_all()
                return 128 + signum
            self._stopping = True
            log.info("%s received: stopping %d consumer processes (again to kill them)", name,
                     sum(1 for c in self.children if c.process is not None))
            for child in self.children:
                if child.process is not None and child.process.poll() is None:
                    child.process.send_signal(signum)
        return None

    def _reap(self) -> None:
        now = self.clock()
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is not None:
                child.process, child.status = None, process.returncode
                ran = now - child.started
                if self._stopping:
                    log.info("consumer process %d (pid %d) %s", child.index, process.pid,
                             describe(process.returncode))
                    continue
                if ran >= self.reset_after:
                    child.delay = self.backoff
                child.restart_at = now + child.delay
                log.warning("consumer process %d (pid %d) %s after %.1f s; restarting in %g s",
                            child.index, process.pid, describe(process.returncode), ran,
                            child.delay)
                child.delay = min(self.max_backoff, child.delay * 2)
            if child.process is None and not self._stopping and now >= child.restart_at \
                    and child.status is not None:
                self._start(child)

    def _start(self, child: _Child) -> None:
        child.started = self.clock()
        try:
            # Own process group: a terminal's Ctrl-C reaches the children only via us. The
            # parent runs no threads, so preexec_fn is safe here.
            child.process = subprocess.Popen(
                child.command, env=child.env, process_group=0,
                preexec_fn=_terminate_with(os.getpid()))  # noqa: PLW1509
        except OSError as err:
            log.error("consumer process %d cannot start: %s", child.index, err)
            child.status, child.restart_at = 127, child.started + child.delay
            child.delay = min(self.max_backoff, child.delay * 2)

    def _kill_all(self) -> None:
        for child in self.children:
            if child.process is not None:
                if child.process.poll() is None:
                    child.process.kill()
                child.process.wait()
                child.status, child.process = child.process.returncode, None

    def _exit_status(self) -> int:
        statuses = [c.status for c in self.children if c.status is not None]
        if all(status == 0 for status in statuses):
            return 0
        return max((s for s in statuses if s > 0), default=1)


def _terminate_with(parent: int) -> Callable[[], None] | None:
    """Linux: the child gets SIGTERM when the parent dies, even by SIGKILL, so that no consumer
    is left running (and holding leases) without its supervisor."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    except (OSError, AttributeError):
        return None

    def arrange() -> None:  # runs in the child between fork and exec
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl
            os.kill(os.getpid(), signal.SIGTERM)
    return arrange


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"
