"""Who holds each stream and how far behind it is, from the consumer's lease table (the one
Scan `kvs-analytics fleet` makes), for the cameras page. Read at most every `max_age` seconds
however many pages poll; an unreadable table gives no rows and the reason, never an error page.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from consumer.fleet.lease_table import LeaseTable
from consumer.fleet.view import stream_rows

CONSOLE_WORKER = "console"  # the reader's id: it never takes or renews a lease


@dataclass
class FleetView:
    streams: dict[str, dict] = field(default_factory=dict)  # stream -> consumer.fleet.view row
    error: str | None = None
    read_at: float = 0.0


class FleetReader:
    def __init__(self, dynamodb, table: str, max_age: float = 2.0):
        self.table = table
        self._leases = LeaseTable(dynamodb, table, CONSOLE_WORKER)
        self.max_age = max_age
        self._view = FleetView()
        self._lock = threading.Lock()

    def view(self) -> FleetView:
        with self._lock:
            if time.monotonic() - self._view.read_at >= self.max_age:
                self._view = self._read()
            return self._view

    def _read(self) -> FleetView:
        now = time.time()
        try:
            snapshot = self._leases.snapshot()
        except (BotoCoreError, ClientError) as err:  # a missing table too: shown, not raised
            return FleetView(error=f"lease table {self.table}: {err}",
                             read_at=time.monotonic())
        return FleetView({row["stream"]: row for row in stream_rows(snapshot, now)},
                         read_at=time.monotonic())
