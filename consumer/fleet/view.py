"""`python -m consumer fleet`: who holds which stream and how far behind its checkpoint is, read
from the lease table (`checkpoint.table`) with one Scan; nothing is written.

Rows: one per stream (its lease item), then one per worker: the union of worker items and lease
owners, so an owner whose worker item is gone still shows. Times "since renewal" and "since
heartbeat" compare the item's `updatedAt`, written on the writer's clock, with this machine's
wall clock: skew shows there. Workers judge expiry by counters, not by these times
(`consumer.fleet.balance`).

JSON (`--json`): one object per line, stream rows first. A stream row has exactly the keys
STREAM_KEYS, a worker row exactly WORKER_KEYS; missing values are null, fragment numbers are
whole decimal strings. Exit status: 0 shown, 2 configuration error, 3 the table does not exist
or cannot be read.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from typing import IO, Any

from consumer.fleet.lease_table import TableSnapshot

STREAM_KEYS = ("stream", "owner", "lease_counter", "checkpoint", "checkpoint_producer_time",
               "stream_arn", "seconds_since_renewal", "lag_seconds")
WORKER_KEYS = ("worker", "streams", "host", "pid", "seconds_since_heartbeat")

# Table columns: (key, heading, right-aligned).
STREAM_COLUMNS = (("stream", "stream", False), ("owner", "owner", False),
                  ("lease_counter", "counter", True),
                  ("seconds_since_renewal", "renewed_ago_wall", True),
                  ("checkpoint", "checkpoint", False),
                  ("checkpoint_producer_time", "producer_time", False),
                  ("lag_seconds", "lag", True))
WORKER_COLUMNS = (("worker", "worker", False), ("streams", "streams", True),
                  ("host", "host", False), ("pid", "pid", True),
                  ("seconds_since_heartbeat", "heartbeat_ago_wall", True))
FRAGMENT_TAIL = 10  # digits of a fragment number the table keeps (KVS's have ~47)
_ARN_NAME = re.compile(r":stream/([^/]+)/")


def stream_rows(snapshot: TableSnapshot, now: float) -> list[dict[str, Any]]:
    """One row per lease, by stream name (see STREAM_KEYS); `now` is wall-clock seconds."""
    rows = [{
        "stream": lease.stream_name or _name_from_arn(lease.stream_arn),
        "owner": lease.owner,
        "lease_counter": lease.counter,
        "checkpoint": None if lease.checkpoint is None else str(lease.checkpoint),
        "checkpoint_producer_time": lease.checkpoint_producer_time,
        "stream_arn": lease.stream_arn,
        "seconds_since_renewal": _since(lease.updated_at, now),
        "lag_seconds": _since(lease.checkpoint_producer_time, now),
    } for lease in snapshot.leases]
    return sorted(rows, key=lambda row: (row["stream"], row["stream_arn"]))


def worker_rows(snapshot: TableSnapshot, now: float) -> list[dict[str, Any]]:
    """One row per worker with an item or a lease, by id (see WORKER_KEYS)."""
    held = Counter(lease.owner for lease in snapshot.leases if lease.owner is not None)
    items = {worker.worker_id: worker for worker in snapshot.workers}
    rows = []
    for worker_id in sorted(set(items) | set(held)):
        item = items.get(worker_id)
        rows.append({"worker": worker_id, "streams": held[worker_id],
                     "host": item.host if item else None, "pid": item.pid if item else None,
                     "seconds_since_heartbeat": _since(item.updated_at if item else None, now)})
    return rows


def render_table(streams: list[dict[str, Any]], workers: list[dict[str, Any]]) -> list[str]:
    """The two tables as text lines, columns sized to their content."""
    lines = _table(STREAM_COLUMNS, streams)
    lines.append(f"{_count(len(streams), 'stream')}, "
                 f"{sum(1 for row in streams if row['owner'] is None)} without an owner")
    lines.append("")
    lines += _table(WORKER_COLUMNS, workers)
    lines.append(_count(len(workers), "worker"))
    return lines


def show_fleet(config_path: str, as_json: bool = False, out: IO[str] | None = None,
               err: IO[str] | None = None, now: float | None = None) -> int:
    """Print the fleet of the configuration's lease table; the exit status (module doc)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.cloud.aws import AwsContext, AwsSetupError
    from consumer.config import ConfigError, load_config
    from consumer.fleet.lease_table import LeaseTable

    out = out or sys.stdout
    err = err or sys.stderr
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(f"consumer: {error}", file=err)
        return 2
    table = config.checkpoint.table
    endpoint = config.aws.endpoints.get("dynamodb")
    where = f" at {endpoint}" if endpoint else ""
    try:
        client = AwsContext(endpoint, config.aws.region).client("dynamodb")
        snapshot = LeaseTable(client, table, config.checkpoint.worker_id).snapshot()
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            print(f"consumer: lease table {table} does not exist{where} (checkpoint.table; "
                  "`python -m consumer run` creates it)", file=err)
        else:
            print(f"consumer: cannot read lease table {table}{where}: {error}", file=err)
        return 3
    except (BotoCoreError, AwsSetupError) as error:
        print(f"consumer: cannot read lease table {table}{where}: {error}", file=err)
        return 3
    now = time.time() if now is None else now
    streams, workers = stream_rows(snapshot, now), worker_rows(snapshot, now)
    if as_json:
        for row in streams + workers:
            print(json.dumps(row), file=out)
    else:
        print(f"lease table {table}{where}", file=out)
        print("\n".join(render_table(streams, workers)), file=out)
    out.flush()
    return 0


def _table(columns: tuple[tuple[str, str, bool], ...], rows: list[dict[str, Any]]) -> list[str]:
    cells = [[heading for _, heading, _ in columns]]
    cells += [[_cell(key, row[key]) for key, _, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  ".join(text.rjust(width) if right else text.ljust(width)
                      for text, width, (_, _, right) in zip(line, widths, columns)).rstrip()
            for line in cells]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "checkpoint" and len(value) > FRAGMENT_TAIL + 3:
        return "..." + value[-FRAGMENT_TAIL:]
    if key == "checkpoint_producer_time":
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds") \
            .replace("+00:00", "Z")
    if key in ("seconds_since_renewal", "seconds_since_heartbeat", "lag_seconds"):
        return format_duration(value)
    return str(value)


def format_duration(seconds: float) -> str:
    """Short and readable: 4.2s, 12m05s, 3h04m, 2d03h (negative: clock skew)."""
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds < 100:
        return f"{sign}{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{sign}{whole // 60}m{whole % 60:02d}s"
    if whole < 2 * 86400:
        return f"{sign}{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{sign}{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _since(then: float | None, now: float) -> float | None:
    return None if then is None else round(now - then, 3)


def _name_from_arn(arn: str) -> str:
    match = _ARN_NAME.search(arn)
    return match.group(1) if match else arn


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"

