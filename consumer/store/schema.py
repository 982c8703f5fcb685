"""Versioned SQL migrations, applied in order at start, each once, in one transaction:
`migrations/NNNN_name.sql`; what was applied is in `schema_migrations`. Two processes starting
together take an advisory lock, so a migration never runs twice."""

from __future__ import annotations

import re
from pathlib import Path

MIGRATIONS = Path(__file__).with_name("migrations")
LOCK = 0x6B7673  # pg_advisory_xact_lock key: "kvs"


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration file, in version order."""
    out = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", path.name)
        if match is None:
            raise ValueError(f"{path.name}: a migration is named NNNN_name.sql")
        out.append((int(match[1]), match[2], path.read_text()))
    return out


def migrate(conn) -> list[int]:
    """Apply what is missing; the versions applied now (empty when up to date)."""
    applied_now = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY,"
                     " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migrations():
            if version in done:
                continue
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                         (version, name))
            applied_now.append(version)
    return applied_now
