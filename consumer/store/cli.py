"""`kvs-analytics events sync` and `kvs-analytics events kcl`: the event store kept from the data
stream, by a plain shard reader or as the record processor of AWS's KCL MultiLangDaemon."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from consumer.store.database_url import DATABASE_URL_ENV

EVENTS_EPILOG = f"""\
Both keep the same PostgreSQL event store (tables cameras, events, camera_minutes,
stream_progress; migrations applied at start), idempotent on RecordId: a replayed shard writes
nothing twice. The database URL is --database-url or ${DATABASE_URL_ENV}, e.g.
postgresql://user@host:5432/kvs (a password is best kept in ~/.pgpass or PGPASSWORD).

  sync  one process reading every shard with boto3, its positions in the store itself: for the
        local stack, the demo, and one machine
  kcl   the record processor that AWS's KCL MultiLangDaemon runs for each shard it leases: for
        production, where KCL spreads the shards over instances and takes over a dead one's
        (install with pip install 'kvs-analytics[kcl]'; see infra/kcl/event-store.properties)

examples:
  export {DATABASE_URL_ENV}=postgresql://postgres@127.0.0.1:5432/postgres
  kvs-analytics events sync --data-stream video-analytics --endpoint-url http://127.0.0.1:4566
  kvs-analytics events sync --data-stream video-analytics --follow   # until Ctrl-C"""

SYNC_EPILOG = """\
Reads each shard from where the last sync got to (the start, the first time), files every batch
in one transaction, then stores the shard's position: a sync killed at any point and run again
files each record once.

exit status: 0 caught up (or stopped by Ctrl-C / SIGTERM with --follow), 1 the store or the data
stream could not be reached, 2 bad arguments."""


def add_events(subparsers) -> None:
    parser = subparsers.add_parser(
        "events", help="keep the PostgreSQL event store from the data stream (sync, kcl)",
        description="Keep the event store (PostgreSQL) from the records in the data stream.",
        epilog=EVENTS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="events_command", metavar="COMMAND", required=True)
    sync = commands.add_parser(
        "sync", help="read the data stream's shards with boto3 and file the records",
        description="File the data stream's records in the event store, from where the last "
                    "sync got to.",
        epilog=SYNC_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sync.add_argument("--data-stream", required=True, metavar="NAME",
                      help="the Kinesis data stream the consumer writes (outputs.kinesis.stream)")
    _database_url(sync)
    sync.add_argument("--follow", action="store_true",
                      help="keep reading new records until Ctrl-C or SIGTERM (default: exit "
                           "once every shard is caught up)")
    sync.add_argument("--poll-seconds", type=float, default=1.0, metavar="S",
                      help="with --follow: the wait when there is nothing new (default 1)")
    sync.add_argument("--endpoint-url", metavar="URL", help="Kinesis endpoint (the local stack)")
    sync.add_argument("--region", help="AWS region (default: the usual chain)")
    sync.set_defaults(handler=run_sync)
    kcl = commands.add_parser(
        "kcl", help="the record processor that KCL's MultiLangDaemon runs (stdin/stdout)",
        description="Speak KCL's MultiLangDaemon protocol on stdin and stdout: started by the "
                    "daemon, one process per shard lease; not run by hand.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _database_url(kcl)
    kcl.set_defaults(handler=run_kcl)


def _database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", metavar="URL", default=os.environ.get(DATABASE_URL_ENV),
                        help=f"the event store (default: ${DATABASE_URL_ENV})")
    parser.add_argument("--store-attempts", type=int, default=6, metavar="N",
                        help="tries of a batch while the store is unreachable, waiting 0.5 s "
                             "then twice as long each time, before giving up without a "
                             "checkpoint (default %(default)s: about 30 s)")


def _store_arguments_ok(args: argparse.Namespace) -> bool:
    command = f"events {args.events_command}"
    if not args.database_url:
        print(f"{command}: no database: pass --database-url or set {DATABASE_URL_ENV}",
              file=sys.stderr)
        return False
    if args.store_attempts < 1:
        print(f"{command}: --store-attempts must be 1 or more", file=sys.stderr)
        return False
    return True


def run_sync(args: argparse.Namespace) -> int:
    if not _store_arguments_ok(args):
        return 2
    if args.poll_seconds <= 0:
        print("events sync: --poll-seconds must be above 0", file=sys.stderr)
        return 2
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.cloud.aws import AwsContext, AwsSetupError
    from consumer.store.database_url import display_dsn
    from consumer.store.sync import sync
    from consumer.store.writer import StoreUnavailable, StoreWriter
    try:
        kinesis = AwsContext(args.endpoint_url, args.region).client("kinesis")
    except AwsSetupError as err:
        print(f"events sync: {err}", file=sys.stderr)
        return 2
    stop = threading.Event()
    if args.follow:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    writer = StoreWriter(args.database_url, attempts=args.store_attempts)
    try:
        progress = sync(writer, kinesis, args.data_stream, follow=args.follow,
                        poll_seconds=args.poll_seconds, stop=stop, report=_report)
    except StoreUnavailable as err:
        print(f"events sync: {err}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as err:
        print(f"events sync: data stream {args.data_stream!r}: {err}", file=sys.stderr)
        return 1
    finally:
        writer.close()
    totals = progress.totals
    state = "caught up" if progress.caught_up else "stopped"
    print(f"events sync: {totals.records} records filed ({totals.events} event, "
          f"{totals.frames} frame), {totals.duplicates} seen before, {totals.rejected} rejected; "
          f"{args.data_stream} -> {display_dsn(args.database_url)}; {state}")
    return 0


def _report(progress) -> None:
    behind = ", ".join(f"{shard} {ms} ms" for shard, ms in sorted(progress.behind_ms.items()))
    totals = progress.totals
    print(f"events sync: {totals.records} filed, {totals.duplicates} seen before, "
          f"{totals.rejected} rejected; behind: {behind or '-'}", file=sys.stderr, flush=True)


def run_kcl(args: argparse.Namespace) -> int:
    if not _store_arguments_ok(args):
        return 2
    # stdout is the daemon's protocol channel: logs go to stderr (main's basicConfig), which
    # the daemon copies into its own log; a line per batch filed
    logging.getLogger("consumer.store").setLevel(logging.INFO)
    try:
        from consumer.store.kcl import run
    except ImportError as err:
        print(f"events kcl: {err}: install it with pip install 'kvs-analytics[kcl]'",
              file=sys.stderr)
        return 2
    run(args.database_url, args.store_attempts)
    return 0
