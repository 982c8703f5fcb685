"""Command line of the consumer: `python -m consumer COMMAND ...`.

Each subcommand is one small `add_*` function that registers its parser and points `handler` at
the code to run; heavy modules are imported inside the handler so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeAlias

from consumer.batch.cli import add_batch
from consumer.config_template import add_config
from consumer.console.cli import add_serve
from consumer.faces.cli import add_faces
from consumer.fleet.processes import process_count
from consumer.lake.cli import add_query
from consumer.store.cli import add_events

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DESCRIPTION = """\
Real-time video analytics for camera fleets on Amazon Kinesis Video Streams:
GetMedia -> decode -> pose or YOLO -> tracking, events -> Kinesis Data Streams + S3,
checkpointed in a DynamoDB lease table that several processes and machines share.

Run `python -m consumer COMMAND --help` for what each command does, with examples."""

INSPECT_EPILOG = """\
columns (--json uses these names as keys, with null for a missing value):
  fragment_number      AWS_KINESISVIDEO_FRAGMENT_NUMBER ('-' in a producer-side MKV)
  server_ts            server timestamp, seconds since the epoch (JSON: server_timestamp)
  producer_ts          producer timestamp, seconds (JSON: producer_timestamp)
  behind_ms            how far the fragment was behind the stream's head (millis_behind_now)
  token                continuation token, '=' when it equals the fragment number
  frames, keys         video frames and keyframes (the first track's if there is no video)
  codec, width, height the video track's codec id and size
  tags                 the producer's own tags, name=value
A GetMedia error reported inside the stream is shown as '!! ...' (on stderr with --json).

exit status: 0 read to the end, 1 not an MKV file, or invalid or truncated MKV (rows before the damage are still
printed), 2 the file (or stream) cannot be opened.

examples:
  # read a stream straight from GetMedia (here the local stack) until the response ends
  python -m consumer inspect --stream cam-1 --endpoint-url http://127.0.0.1:4567
  # save a GetMedia response (Ctrl-C to stop), then look at it
  ENDPOINT=$(aws kinesisvideo get-data-endpoint --stream-name cam-1 --api-name GET_MEDIA \\
      --query DataEndpoint --output text)
  aws kinesis-video-media get-media --endpoint-url "$ENDPOINT" --stream-name cam-1 \\
      --start-selector StartSelectorType=EARLIEST out.mkv
  python -m consumer inspect out.mkv
  # JSON lines, e.g. the fragment numbers and frame counts
  python -m consumer inspect --json out.mkv | jq -r '[.fragment_number, .frames] | @tsv'
  # a damaged capture: skip garbage up to the next fragment
  python -m consumer inspect --resync damaged.mkv
  # from stdin
  cat out.mkv | python -m consumer inspect -"""


def add_inspect(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="list the fragments of a saved GetMedia response (or any KVS MKV)",
        description="Print one row per fragment of FILE: numbers, timestamps, frame counts, "
                    "codec, size and tags. The file is read incrementally, so rows appear as "
                    "fragments complete.",
        epilog=INSPECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("file", metavar="FILE", nargs="?",
                        help="MKV bytes as GetMedia returns them; '-' reads standard input")
    parser.add_argument("--stream", metavar="NAME",
                        help="instead of FILE, call GetMedia on this Kinesis video stream")
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="with --stream: the Kinesis Video endpoint (default: AWS)")
    parser.add_argument("--region", help="with --stream: the AWS region (default: AWS_REGION, "
                                          "AWS_DEFAULT_REGION or your profile)")
    parser.add_argument("--start", choices=("EARLIEST", "NOW"), default="EARLIEST",
                        help="with --stream: where GetMedia starts (default %(default)s)")
    parser.add_argument("--after", metavar="FRAGMENT_NUMBER",
                        help="with --stream: start after this fragment (overrides --start)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per fragment and line, instead of a table")
    parser.add_argument("--resync", action="store_true",
                        help="skip invalid bytes up to the next EBML header instead of stopping")
    parser.set_defaults(handler=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    from consumer.inspection import inspect_file, inspect_stream
    if (args.file is None) == (args.stream is None):
        print("inspect: give either FILE or --stream NAME (exactly one)", file=sys.stderr)
        return 2
    if args.file is not None:
        return inspect_file(args.file, as_json=args.json, resync=args.resync)
    selector = {"StartSelectorType": args.start}
    if args.after:
        if not args.after.isdigit():
            print(f"inspect: --after must be a decimal fragment number, got {args.after!r}",
                  file=sys.stderr)
            return 2
        selector = {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": args.after}
    return inspect_stream(args.stream, selector, args.endpoint_url, args.region,
                          as_json=args.json, resync=args.resync)


RUN_EPILOG = """\
The configuration is YAML; every key can be overridden by an environment variable named
KVSA_<SECTION>__<KEY> (e.g. KVSA_OUTPUTS__S3__BUCKET=my-bucket); values are YAML. Unknown keys
are errors. See the README's configuration reference.

minimal config:
  streams:
    names: [cam-1, cam-2]          # or prefix: lobby-   or tags: {site: hq}
  outputs:
    kinesis: {stream: video-analytics}
    s3: {bucket: my-video-analytics}
on the local stack, `python -m infra.local --create-resources --write-config consumer.yaml`
creates the data stream and bucket and writes a config for its endpoints.

region: --region, else aws.region, else AWS_REGION, AWS_DEFAULT_REGION or your AWS profile
(us-east-1 for a loopback endpoint); credentials: the usual AWS chain.

at start, before any model loads (seconds): region and credentials, then the data stream and
bucket must exist (the lease table is created if missing); what is missing is named.
SIGTERM or Ctrl-C stops reading, drains, flushes and checkpoints (a second one exits at once).
exit status: 0 clean shutdown, 2 bad configuration (also: no AWS region), 3 credentials, data
stream, bucket, lease table, model or health port unavailable.

several processes (--processes N, or auto: one per CPU core for pose, one per GPU for yolo):
  N child processes `python -m consumer run --config FILE` share the streams through the lease
  table, as workers on separate machines would. Child i (from 0) gets the worker id <id>-<i>
  when checkpoint.worker_id is set, device cuda:<i mod GPUs> with yolo, yolo.device auto and
  several GPUs, and --stats-file FILE.<i>. SIGTERM or Ctrl-C is passed on to every child and
  the parent waits for them (a second one kills them); it exits 0 when all exited 0, else with
  the highest child status. A child that dies meanwhile is restarted after 1 s, doubling to
  30 s while it keeps dying within 60 s.

examples:
  python -m consumer run --config consumer.yaml
  python -m consumer run --config consumer.yaml --processes auto
  # watch who holds which stream
  python -m consumer fleet --config consumer.yaml"""


REGION_HELP = ("AWS region, over aws.region (the same as KVSA_AWS__REGION; default: "
               "aws.region, else AWS_REGION, AWS_DEFAULT_REGION or your profile)")


def add_run(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run the consumer: GetMedia -> decode -> pose or YOLO -> tracking, events "
                    "-> Kinesis + S3, checkpointed",
        description="Read every configured Kinesis video stream (GetMedia), decode and sample "
                    "it, analyse the frames (MediaPipe pose, YOLO, or none), track persons and "
                    "evaluate the event rules, and deliver a record per analysed frame and per "
                    "event to Kinesis Data Streams and JPEGs, pose sequences, event highlights "
                    "and clips to S3, checkpointed in the DynamoDB lease table, until stopped.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, metavar="FILE", help="YAML configuration")
    parser.add_argument("--region", help=REGION_HELP)
    parser.add_argument("--stats-file", metavar="FILE",
                        help="at exit, write counters as JSON: per stream, analysis, Kinesis and "
                             "S3 writers, AWS API calls by operation")
    parser.add_argument("--processes", type=process_count, default=1, metavar="N",
                        help="consumer processes on this machine, sharing the streams through "
                             "the lease table: an integer >= 1, or auto (one per CPU core for "
                             "pose, one per GPU for yolo); default 1")
    parser.set_defaults(handler=lambda args: _run(args))


def _run(args: argparse.Namespace) -> int:
    from consumer.run import run, setup_status
    if args.region:  # as its override variable, so --processes children get it too
        os.environ["KVSA_AWS__REGION"] = args.region
    if args.processes == 1:
        return run(args.config, stats_file=args.stats_file)
    from consumer.fleet.processes import run_processes
    return run_processes(args.config, args.processes, stats_file=args.stats_file, run_here=run,
                         check=setup_status)


FLEET_EPILOG = """\
columns of the stream table (--json: one object per line with the keys in brackets; fragment
numbers whole, as decimal strings; null for a missing value):
  stream            the stream's name [stream; stream_arn: its ARN]
  owner             worker id holding its lease, '-' for none [owner]
  counter           lease counter: every write by the owner increments it [lease_counter]
  renewed_ago_wall  time since the lease item was last written (its updatedAt), by this
                    machine's wall clock: clock skew shows here; workers decide expiry by
                    watching the counter instead [seconds_since_renewal]
  checkpoint        last fully processed fragment number, shortened to its last digits
                    [checkpoint]
  producer_time     that fragment's producer time, UTC [checkpoint_producer_time: seconds]
  lag               now minus the checkpoint's producer time: how far processing is behind
                    the camera [lag_seconds]
columns of the worker table (workers with a worker item or holding a lease):
  worker            worker id [worker]
  streams           leases it holds [streams]
  host, pid         where it runs, from its worker item [host, pid]
  heartbeat_ago_wall
                    time since its worker item was written, wall clock
                    [seconds_since_heartbeat]

exit status: 0 shown, 2 bad configuration, 3 the table does not exist or cannot be read.

examples:
  python -m consumer fleet --config consumer.yaml
  watch -n 5 python -m consumer fleet --config consumer.yaml
  # the streams furthest behind
  python -m consumer fleet --config consumer.yaml --json \\
      | jq -r 'select(.stream) | [.lag_seconds, .stream, .owner] | @tsv' | sort -rn"""


def add_fleet(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "fleet", help="show which worker holds which stream, and how far behind each is",
        description="Read the lease table of a configuration (checkpoint.table) once and print "
                    "one row per stream: its owner, lease counter, last renewal, checkpoint "
                    "and lag; then one row per worker: the streams it holds and its heartbeat. "
                    "Nothing is written.",
        epilog=FLEET_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="YAML configuration of the consumer (its checkpoint.table and "
                             "aws settings are used)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per row and line, instead of tables")
    parser.add_argument("--region", help=REGION_HELP)
    parser.set_defaults(handler=_fleet)


def _fleet(args: argparse.Namespace) -> int:
    from consumer.fleet.view import show_fleet
    if args.region:
        os.environ["KVSA_AWS__REGION"] = args.region
    return show_fleet(args.config, as_json=args.json)


def add_demo(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="the whole pipeline on the embedded local stack, no AWS account",
        description="Start the local stack, simulated cameras looping a clip with a person in "
                    "it, and the consumer with the pose model and a zone rule per camera; print "
                    "a live status, then the events (with their highlight images) and a "
                    "per-camera summary of what was delivered.",
        epilog="example:\n  python -m consumer demo --seconds 30 --cameras 2",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from consumer.demo import DEFAULT_CLIP, DEFAULT_MODELS
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP,
                        help="video the cameras loop (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="how long the cameras stream (default %(default)s)")
    parser.add_argument("--cameras", type=int, default=2, help="simulated cameras (default 2)")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS,
                        help="folder holding pose_landmarker_full.task (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=Path("demo-output"),
                        help="where to copy records and sample objects, emptied of a previous "
                             "run's first (default %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="show MediaPipe's and LiteRT's native log lines (default: into "
                             "native.log in --output)")
    parser.add_argument("--database-url", metavar="URL",
                        default=os.environ.get("KVS_ANALYTICS_DATABASE_URL"),
                        help="a PostgreSQL event store to sync from the data stream at the end "
                             "(default: $KVS_ANALYTICS_DATABASE_URL; none: not synced)")
    parser.add_argument("--console", action="store_true",
                        help="after the summary, serve the events console over the demo's "
                             "data until Ctrl-C (without --database-url: on a throwaway "
                             "PostgreSQL server, which needs Debian's postgresql package)")
    parser.add_argument("--console-port", type=int, default=8080, metavar="PORT",
                        help="the console's port on 127.0.0.1 (default %(default)s)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or not 1 <= args.cameras <= 16:
        print("demo: --seconds must be > 0 and --cameras 1 to 16", file=sys.stderr)
        return 2
    from consumer.demo import run_demo
    return run_demo(args.clip, args.seconds, args.cameras, args.output, args.models_dir,
                    verbose=args.verbose, database_url=args.database_url,
                    console=args.console, console_port=args.console_port)


# One entry per subcommand.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (add_inspect, add_run, add_batch, add_query,
                                                       add_events, add_serve, add_faces,
                                                       add_fleet, add_config, add_demo)


def build_parser() -> argparse.ArgumentParser:
    # as the user typed it: the installed `kvs-analytics`, or `python -m consumer`
    prog = "kvs-analytics" if Path(sys.argv[0]).name == "kvs-analytics" else "python -m consumer"
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The reader logs what --resync skipped; show it plainly on stderr.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader of our output left (`| head`): stop quietly, and keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
