"""Command line: `push` a file once, or `run` N cameras in real time with a live status line each."""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import sys
import time

from consumer.arguments import positive_int
from consumer.media.fragmenter import KVS_MAX_FRAGMENT_MS
from consumer.media.sources import FileSource, SourceError, open_source

from .camera import Camera, CameraConfig
from .control import DEFAULT_RETENTION_HOURS, AwsContext, AwsSetupError, prepare_stream
from .status import CameraResult, CameraStatus

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # streaming failed: some fragment was not persisted
EXIT_USAGE = 2  # bad command line or input (missing file, unreadable media, bad duration)
EXIT_SETUP = 3  # the stream or the service cannot be used (not found, no credentials, unreachable)
EXIT_INTERRUPTED = 130

EXIT_CODES = """\
exit codes:
  0    every fragment was acknowledged as PERSISTED (run: every camera delivered what it captured)
  1    streaming failed: fragments rejected by the service, dropped, or not acknowledged in time
  2    bad command line or input: missing or unreadable file, bad duration, bad source
  3    the stream cannot be used: it does not exist (see --create-stream), no credentials or
       region, the endpoint cannot be reached, access denied
  130  interrupted (Ctrl-C) before the end
"""

DESCRIPTION = """\
Camera simulator for Kinesis Video Streams: sends H.264 video to streams through PutMedia, as
cameras running the KVS producer SDK do (fragments start on keyframes, producer timestamps from
the wall clock, SigV4 from the standard AWS credential chain, acks read while sending, reconnects
with backoff and before AWS's 45-minute connection limit)."""

PUSH_EPILOG = """\
examples:
  # push a file once into a local service, creating the stream
  python -m producer_sim push --source clip.mkv --stream demo \\
      --endpoint-url http://127.0.0.1:4567 --create-stream

  # push into real AWS (default region and credentials), 4-second fragments, at camera speed
  python -m producer_sim push --source clip.mp4 --stream lobby --fragment-duration 4 --realtime

H.264 is sent as is; other codecs are re-encoded with libx264 (a keyframe every second).
A source whose timecodes repeat or go back (a camera that resets its clock) is sent as the KVS
producer SDK sends it: timestamps keep increasing (one frame after the last), time is otherwise
kept, and a new fragment starts there; a warning says so and the summary counts them.

""" + EXIT_CODES

RUN_EPILOG = """\
sources (--source, repeatable; cameras take them in turn):
  FILE                     any file PyAV reads, played in a loop (--no-loop: once)
  testpattern[:WxH@FPS]    colour bars, a moving subject and the producer clock burned in
  rtsp://host/path         an RTSP camera (H.264 re-muxed, other codecs re-encoded)
  webcam:DEVICE[@WxH@FPS]  a local webcam, e.g. webcam:/dev/video0@640x480@30

examples:
  # two test-pattern cameras into a local service for 30 s
  python -m producer_sim run --source testpattern --cameras 2 --stream-prefix lobby \\
      --endpoint-url http://127.0.0.1:4567 --create-stream --duration 30

  # three cameras looping two files, named streams, until Ctrl-C
  python -m producer_sim run --source a.mkv --source b.mp4 --cameras 3 \\
      --stream door --stream hall --stream yard

Each camera prints a status line: fragments sent and persisted, errors, bitrate.

""" + EXIT_CODES


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}


def duration(text: str) -> float:
    """'30', '2.5s', '500ms', '5m', '1h' -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: expected seconds, e.g. 30, 2.5s, 500ms, 5m")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: must be more than zero")
    return value


def fragment_duration(text: str) -> float:
    value = duration(text)
    if value * 1000 > KVS_MAX_FRAGMENT_MS:
        raise argparse.ArgumentTypeError(
            f"bad fragment duration {text!r}: Kinesis Video Streams rejects fragments over 10 s")
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"bad fragment duration {text!r}: at least 0.1 s")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    aws = parser.add_argument_group("service")
    aws.add_argument("--endpoint-url", metavar="URL",
                     help="control-plane endpoint of a local or alternative service, e.g. "
                          "http://127.0.0.1:4567 (default: real AWS); PutMedia goes where its "
                          "GetDataEndpoint says")
    aws.add_argument("--region", help="AWS region (default: AWS_REGION, AWS_DEFAULT_REGION or "
                                      "your profile; us-east-1 with --endpoint-url)")
    aws.add_argument("--create-stream", action="store_true",
                     help="create the stream if it does not exist (default: fail)")
    aws.add_argument("--retention-hours", type=int, default=DEFAULT_RETENTION_HOURS,
                     metavar="N", help="data retention of a created stream "
                                       f"(default: {DEFAULT_RETENTION_HOURS})")
    media = parser.add_argument_group("media")
    media.add_argument("--fragment-duration", type=fragment_duration, default=2.0,
                       metavar="SECONDS",
                       help="start a new fragment at the first keyframe after this long "
                            "(default: 2; at most 10)")
    media.add_argument("--reencode", action="store_true",
                       help="re-encode H.264 too (libx264, a keyframe every second): for sources "
                            "whose keyframes are more than 10 s apart")
    parser.add_argument("--ack-timeout", type=duration, default=30.0, metavar="SECONDS",
                        help="reconnect when fragments are outstanding and no acknowledgement "
                             "came for this long (default: 30)")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: connections and acks, -vv: debug)")


def build_parser(prog: str = "python -m producer_sim") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"`{prog} push --help` and `... run --help` show examples.\n\n" + EXIT_CODES)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    push = commands.add_parser(
        "push", help="send one file once; exit 0 when every fragment is PERSISTED",
        description="Send one media file once to a stream, as fast as the service accepts it, "
                    "and exit 0 when every fragment is acknowledged as PERSISTED.",
        epilog=PUSH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    push.add_argument("--source", required=True, metavar="FILE",
                      help="media file (H.264 sent as is; other codecs re-encoded)")
    push.add_argument("--stream", required=True, metavar="NAME", help="stream name")
    push.add_argument("--realtime", action="store_true",
                      help="send at the file's own pace instead of as fast as possible")
    push.add_argument("--max-retries", type=int, default=5, metavar="N",
                      help="consecutive failed connections before giving up (default: 5)")
    _common(push)

    run = commands.add_parser(
        "run", help="stream N cameras in real time, with a status line per camera",
        description="Stream N cameras from one or many sources, in real time, until --duration "
                    "or Ctrl-C; files play in a loop.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--source", action="append", required=True, metavar="SPEC",
                     help="a source (see below); repeat for several, cameras take them in turn")
    run.add_argument("--cameras", type=positive_int, default=None, metavar="N",
                     help="number of cameras (default: one per --source or --stream)")
    run.add_argument("--stream", action="append", metavar="NAME",
                     help="stream of each camera, in order (repeat); default: "
                          "PREFIX-1 ... PREFIX-N")
    run.add_argument("--stream-prefix", default="producer-sim-cam", metavar="PREFIX",
                     help="stream name prefix when --stream is not given "
                          "(default: producer-sim-cam)")
    run.add_argument("--duration", type=duration, metavar="SECONDS",
                     help="stop after this long (default: until Ctrl-C)")
    run.add_argument("--fast", action="store_true",
                     help="send as fast as possible instead of in real time")
    run.add_argument("--no-loop", action="store_true", help="play files once, not in a loop")
    run.add_argument("--status-interval", type=duration, default=1.0, metavar="SECONDS",
                     help="how often the status lines refresh (default: 1)")
    _common(run)
    return parser


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _install_stop(loop: asyncio.AbstractEventLoop, stop) -> None:
    """First Ctrl-C (or SIGTERM): stop gracefully; the second: interrupt at once."""
    state = {"count": 0}

    def handler():
        state["count"] += 1
        if state["count"] == 1:
            print("stopping: delivering what was captured (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)
            stop()
        else:
            for task in asyncio.all_tasks(loop):
                task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handler)
        except (NotImplementedError, RuntimeError):
            pass


# --- push ------------------------------------------------------------------------------------

async def _push(camera: Camera, out) -> CameraResult:
    loop = asyncio.get_running_loop()
    interrupted = {"flag": False}

    def stop():
        interrupted["flag"] = True
        camera.stop()

    _install_stop(loop, stop)
    task = asyncio.create_task(camera.run())
    last = None
    tty = out.isatty()
    while not task.done():
        await asyncio.wait({task}, timeout=0.2)
        s = camera.status
        now = (s.sent, s.persisted, s.errors, s.rejected)
        if now != last and s.sent:
            text = (f"fragments sent {s.sent}, persisted {s.persisted}"
                    + (f", errors {s.errors}" if s.errors else "")
                    + (f", rejected {s.rejected}" if s.rejected else "")
                    + f" ({s.bytes_sent / 1e6:.1f} MB)")
            out.write(("\r" + text + "\x1b[K") if tty else text + "\n")
            out.flush()
            last = now
    if tty and last is not None:
        out.write("\n")
    result = task.result()
    result.interrupted = interrupted["flag"]
    return result


def cmd_push(args) -> int:
    try:
        source = FileSource(args.source, reencode=args.reencode)
    except SourceError as err:
        _error(str(err))
        return EXIT_USAGE
    try:
        aws = AwsContext(args.endpoint_url, args.region)
        target = prepare_stream(args.stream, aws, create=args.create_stream,
                                retention_hours=args.retention_hours)
    except AwsSetupError as err:
        _error(str(err))
        return EXIT_SETUP
    how = "as fast as possible" if not args.realtime else "in real time"
    mode = "re-muxed" if source.remuxed else "re-encoded with libx264"
    print(f"pushing {source.name} ({source.codec}, {mode}) to stream {args.stream} via "
          f"{target.data_endpoint}, {how}", flush=True)
    config = CameraConfig(fragment_duration_ms=int(args.fragment_duration * 1000),
                          realtime=args.realtime, max_retries=args.max_retries,
                          ack_timeout_s=args.ack_timeout, max_pending_fragments=64)
    camera = Camera("push", source, target, config)
    result = asyncio.run(_push(camera, sys.stdout))
    for rejection in result.rejections:
        _error(f"fragment {rejection.timecode} rejected: {rejection.error_id} "
               f"{rejection.error_code}")
    if result.ok and not result.interrupted:
        print(f"done: {result.summary()}", flush=True)
        return EXIT_OK
    print(f"failed: {result.summary()}", flush=True)
    if result.interrupted:
        return EXIT_INTERRUPTED
    if result.error:
        _error(result.error)
    return EXIT_INCOMPLETE


# --- run -------------------------------------------------------------------------------------

class StatusBoard:
    """One line per camera: redrawn in place on a terminal, printed as a block otherwise."""

    def __init__(self, statuses: list[CameraStatus], out):
        self.statuses = statuses
        self.out = out
        self.tty = out.isatty()
        self._drawn = 0
        self.started = time.monotonic()

    def render(self) -> str:
        elapsed = time.monotonic() - self.started
        return "\n".join(f"[{elapsed:6.1f}s] {s.line()}" for s in self.statuses)

    def draw(self) -> None:
        text = self.render()
        if self.tty:
            if self._drawn:
                self.out.write(f"\x1b[{self._drawn}F")
            self.out.write("\n".join(line + "\x1b[K" for line in text.split("\n")) + "\n")
            self._drawn = len(self.statuses)
        else:
            self.out.write(text + "\n")
        self.out.flush()


async def _run(cameras: list[Camera], seconds: float | None, interval: float, out) -> list:
    loop = asyncio.get_running_loop()
    stopped = {"flag": False}

    def stop_all():
        stopped["flag"] = True
        for camera in cameras:
            camera.stop()

    _install_stop(loop, stop_all)
    board = StatusBoard([c.status for c in cameras], out)
    tasks = [asyncio.create_task(c.run(), name=f"camera-{c.name}") for c in cameras]
    deadline = None if seconds is None else time.monotonic() + seconds
    pending = set(tasks)
    while pending:
        timeout = interval
        if deadline is not None and not stopped["flag"]:
            timeout = max(0.0, min(interval, deadline - time.monotonic()))
        _, pending = await asyncio.wait(pending, timeout=timeout)
        if deadline is not None and not stopped["flag"] and time.monotonic() >= deadline:
            stop_all()
        board.draw()
    return [t.result() for t in tasks]


def cmd_run(args) -> int:
    count = args.cameras or max(len(args.source), len(args.stream or []))
    if args.stream:
        if len(args.stream) < count:
            _error(f"{count} cameras but only {len(args.stream)} --stream names: give one per "
                   "camera, or use --stream-prefix")
            return EXIT_USAGE
        streams = args.stream[:count]
    else:
        streams = [f"{args.stream_prefix}-{i + 1}" for i in range(count)]
    sources = []
    try:
        for i in range(count):
            spec = args.source[i % len(args.source)]
            sources.append(open_source(spec, loop=not args.no_loop, reencode=args.reencode))
    except SourceError as err:
        _error(str(err))
        return EXIT_USAGE
    try:
        aws = AwsContext(args.endpoint_url, args.region)
        targets = [prepare_stream(name, aws, create=args.create_stream,
                                  retention_hours=args.retention_hours) for name in streams]
    except AwsSetupError as err:
        _error(str(err))
        return EXIT_SETUP
    config = CameraConfig(fragment_duration_ms=int(args.fragment_duration * 1000),
                          realtime=not args.fast, ack_timeout_s=args.ack_timeout)
    cameras = [Camera(f"cam{i + 1}", source, target, config)
               for i, (source, target) in enumerate(zip(sources, targets))]
    for camera in cameras:
        print(f"{camera.name}: {camera.source.name} -> stream {camera.target.stream_name}",
              flush=True)
    results = asyncio.run(_run(cameras, args.duration, args.status_interval, sys.stdout))
    for result in results:
        print(("done: " if result.ok else "failed: ") + result.summary(), flush=True)
    if all(r.ok for r in results):
        return EXIT_OK
    return EXIT_INCOMPLETE


def main(argv: list[str] | None = None, prog: str = "python -m producer_sim") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        if args.command == "push":
            return cmd_push(args)
        return cmd_run(args)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except asyncio.CancelledError:
        _error("interrupted")
        return EXIT_INTERRUPTED


def script() -> int:
    """The `kvs-producer-sim` console script (pyproject's [project.scripts])."""
    return main(prog="kvs-producer-sim")
