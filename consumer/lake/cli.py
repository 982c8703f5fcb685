"""`kvs-analytics query`: SQL (DuckDB) over the lake, with ready views and named reports."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

QUERY_EPILOG = """\
views:
  frames    one row per analysed frame: stream, date, record_id, fragment_number, frame_index,
            producer_time, width, height, persons
  persons   one row per person per frame: stream, date, record_id, fragment_number,
            frame_index, producer_time, track_id, confidence, left, top, width, height
  events    one row per event record: stream, date, event_id, event_type, rule, status,
            track_id, start_time, end_time, confidence, details (JSON), highlight_key, clip_key
  poses     the pose sequences' rows (Parquet), with stream and date
The lake is what the stack's Firehose (or `python -m infra.local --firehose`) delivers:
{prefix}records/type=/stream=/date=/*.json.gz, and the consumer's {prefix}poses/. An s3://
lake is copied to --cache first with boto3 (credentials and region from the usual chain,
--endpoint-url for the local stack); only new objects are fetched.

exit status: 0 printed, 1 the query failed (the error says why), 2 bad arguments.

examples:
  kvs-analytics query --lake out/ "SELECT stream, count(*) FROM frames GROUP BY 1"
  kvs-analytics query --lake s3://my-bucket/ --report events-per-hour
  kvs-analytics query --lake s3://my-bucket/ --report track-poses --stream cam-1 --track 7
  kvs-analytics query --lake out/ --format csv "SELECT * FROM persons" > persons.csv
  kvs-analytics query --list-reports"""


def add_query(subparsers) -> None:
    parser = subparsers.add_parser(
        "query", help="SQL over the records and pose sequences in S3 or a folder (DuckDB)",
        description="Run SQL (DuckDB) over the lake: the records Firehose delivered and the "
                    "pose sequences, through the views frames, persons, events and poses; or "
                    "a named report.",
        epilog=QUERY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sql", nargs="?", metavar="SQL", help="the query")
    parser.add_argument("--lake", metavar="DIR|s3://BUCKET/PREFIX",
                        help="the lake: a folder, or s3://bucket/prefix")
    parser.add_argument("--report", metavar="NAME", help="a named report instead of SQL")
    parser.add_argument("--stream", help="with --report track-poses: the stream or video id")
    parser.add_argument("--track", type=int, help="with --report track-poses: the track id")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="output (default %(default)s; json: one object per line)")
    parser.add_argument("--cache", type=Path,
                        default=Path("~/.cache/kvs-analytics/lake").expanduser(),
                        help="where an s3:// lake is copied (default %(default)s)")
    parser.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (the local stack)")
    parser.add_argument("--region", help="AWS region (default: the usual chain)")
    parser.add_argument("--list-reports", action="store_true", help="list the named reports")
    parser.set_defaults(handler=run_query)


def run_query(args: argparse.Namespace) -> int:
    from consumer.lake.views import REPORTS
    if args.list_reports:
        for name, (what, _sql) in REPORTS.items():
            print(f"{name:<18} {what}")
        return 0
    if args.lake is None or (args.sql is None) == (args.report is None):
        print("query: give --lake and either SQL or --report NAME", file=sys.stderr)
        return 2
    parameters: dict = {}
    if args.report is not None:
        if args.report not in REPORTS:
            print(f"query: --report {args.report!r} is not a report; expected one of "
                  f"{', '.join(REPORTS)}", file=sys.stderr)
            return 2
        sql = REPORTS[args.report][1]
        if "$stream" in sql:
            if args.stream is None or args.track is None:
                print(f"query: --report {args.report} needs --stream and --track",
                      file=sys.stderr)
                return 2
            parameters = {"stream": args.stream, "track": args.track}
    else:
        sql = args.sql
    try:
        root = _local_lake(args)
    except ValueError as err:
        print(f"query: --lake: {err}", file=sys.stderr)
        return 2
    import duckdb

    from consumer.lake.views import open_lake
    try:
        result = open_lake(root).execute(sql, parameters or None)
        columns = [d[0] for d in result.description]
        rows = result.fetchall()
    except duckdb.Error as err:
        print(f"query: {err}", file=sys.stderr)
        return 1
    _print(columns, rows, args.format)
    return 0


def _local_lake(args: argparse.Namespace) -> Path:
    if not args.lake.startswith("s3://"):
        root = Path(args.lake)
        if not root.is_dir():
            raise ValueError(f"{args.lake} is not a folder")
        return root
    bucket, _, prefix = args.lake[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{args.lake}: no bucket")
    from consumer.cloud.aws import AwsContext
    from consumer.formats.s3_layout import check_prefix
    from consumer.lake.sync import sync_lake
    prefix = check_prefix(prefix)
    if args.region:
        os.environ.setdefault("AWS_REGION", args.region)
    client = AwsContext(args.endpoint_url, args.region).client("s3")
    cache = args.cache / bucket / prefix
    fetched, kept = sync_lake(client, bucket, prefix, cache)
    print(f"query: {fetched} objects fetched from {args.lake}, {kept} cached", file=sys.stderr)
    return cache


def _print(columns: list[str], rows: list[tuple], fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif fmt == "json":
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    else:
        texts = [[_cell(v) for v in row] for row in rows]
        widths = [max([len(c)] + [len(r[i]) for r in texts]) for i, c in enumerate(columns)]
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in texts:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")


def _cell(value) -> str:
    return "-" if value is None else str(value)
