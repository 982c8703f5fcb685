"""A throwaway PostgreSQL server from Debian's packages (`.ci/run` installs `postgresql`;
consumer.store.local_postgres starts it), or a test failed (CI) or skipped (elsewhere) saying
how to install it; and fresh databases on it. Never a mock."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from consumer.store.local_postgres import INSTALL_HINT, binaries, local_postgres


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a libpq connection string for a superuser `postgres` on database `postgres`."""
    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail(f"{INSTALL_HINT} (.ci/run installs it)")
        pytest.skip(INSTALL_HINT)
    with local_postgres() as dsn:
        yield dsn


def fresh_database(server: str, name: str | None = None) -> str:
    """A new, empty database on the server (`name`, else a random one): its connection string."""
    name = name or f"test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return server.replace("dbname=postgres", f"dbname={name}")
