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
from typing import TypeAlias

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

DESCRIPTION = """\
Real-time video analytics for camera fleets on Amazon Kinesis Video Streams.

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

exit status: 0 read to the end, 1 invalid or truncated MKV (rows before the damage are still
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
    parser.add_argument("--region", help="with --stream: the AWS region (default: your config)")
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
    from .inspect import inspect_file, inspect_stream
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


# One entry per subcommand; `run` and `demo` register here the same way.
COMMANDS: tuple[Callable[[Subparsers], None], ...] = (add_inspect,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer", description=DESCRIPTION,
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
