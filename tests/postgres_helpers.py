"""A throwaway PostgreSQL server from Debian's packages (`.ci/run` installs `postgresql`): a
fresh cluster in a temporary folder, listening on a free port on loopback and on a socket in
that folder, stopped and deleted afterwards. Never a mock."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a libpq connection string for a superuser `postgres` on database `postgres`."""
    binaries = _binaries()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's initdb is not installed (.ci/run installs postgresql)")
        pytest.skip("PostgreSQL is not installed: apt-get install postgresql")
    folder = Path(tempfile.mkdtemp(prefix="kvsa-pg-"))
    data = folder / "data"
    run_as = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the cluster belongs to nobody
        shutil.chown(folder, "nobody")
        run_as = ["runuser", "-u", "nobody", "--"]
    subprocess.run([*run_as, str(binaries / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True)
    port = _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-o", options,
                    "-l", str(folder / "log"), "-w", "start"], check=True, capture_output=True)
    try:
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        subprocess.run([*run_as, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server: str, name: str | None = None) -> str:
    """A new, empty database on the server (`name`, else a random one): its connection string."""
    name = name or f"test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    return server.replace("dbname=postgres", f"dbname={name}")
