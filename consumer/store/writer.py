"""A connection to the event store that rides out the database going away: `file` applies a batch
of records (consumer.store.events.apply, one transaction) and, when the connection breaks or the
transaction is rolled back by the server (deadlock, serialization), connects again and retries
with a growing wait. After `attempts` it raises StoreUnavailable: the caller must then stop
without checkpointing (the KCL record processor exits, so the daemon hands the shard to a
processor that starts at the last checkpoint; the sync exits 1). Migrations are applied on the
first connection. Nothing it logs holds the password of the database URL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

import psycopg

from consumer.store.database_url import display_dsn, redact
from consumer.store.events import Applied, apply
from consumer.store.schema import migrate

log = logging.getLogger(__name__)
RETRYABLE = (psycopg.OperationalError, psycopg.errors.TransactionRollback)


class StoreUnavailable(RuntimeError):
    """The event store could not be reached, or kept failing, for every attempt."""


class StoreWriter:
    def __init__(self, database_url: str, attempts: int = 6, first_wait: float = 0.5,
                 sleep: Callable[[float], None] = time.sleep):
        self.database_url = database_url
        self.attempts = attempts
        self.first_wait = first_wait
        self.sleep = sleep
        self._conn: psycopg.Connection | None = None

    def file(self, records: Iterable[dict | bytes]) -> Applied:
        records = list(records)
        return self._with_retries(lambda conn: apply(conn, records), "file records")

    def positions(self, data_stream: str) -> dict[str, str]:
        """Where `kvs-analytics events sync` got to: shard id -> last sequence number filed."""
        rows = self._with_retries(lambda conn: conn.execute(
            "SELECT shard_id, sequence_number::text FROM shard_positions"
            " WHERE data_stream = %s", (data_stream,)).fetchall(), "read shard positions")
        return dict(rows)

    def save_position(self, data_stream: str, shard_id: str, sequence_number: str) -> None:
        """Called after the shard's batch was filed (its transaction committed)."""
        self._with_retries(lambda conn: conn.execute(
            "INSERT INTO shard_positions (data_stream, shard_id, sequence_number)"
            " VALUES (%s, %s, %s) ON CONFLICT (data_stream, shard_id) DO UPDATE SET"
            " sequence_number = greatest(shard_positions.sequence_number,"
            " EXCLUDED.sequence_number), updated_at = now()",
            (data_stream, shard_id, sequence_number)), "save the shard position")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.database_url, autocommit=True, connect_timeout=10)
            migrate(self._conn)
        return self._conn

    def _with_retries(self, work, what: str):
        wait = self.first_wait
        for attempt in range(1, self.attempts + 1):
            try:
                return work(self._connection())
            except RETRYABLE as err:
                self.close()
                if attempt == self.attempts:
                    raise StoreUnavailable(
                        f"could not {what} in the event store at "
                        f"{display_dsn(self.database_url)} after {attempt} attempts: "
                        f"{redact(str(err), self.database_url)}") from err
                log.warning("event store: could not %s (%s); again in %.1f s", what,
                            redact(str(err), self.database_url).strip(), wait)
                self.sleep(wait)
                wait = min(wait * 2, 30.0)
