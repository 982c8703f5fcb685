"""A throwaway PostgreSQL server from the machine's own packages (Debian's `postgresql`): a
fresh cluster in a temporary folder, on a free loopback port and a socket in that folder,
stopped and deleted afterwards. For the demo's console and the tests; never for data to keep.
As root, the cluster belongs to `nobody` (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

INSTALL_HINT = "PostgreSQL's server is not installed: apt-get install postgresql"


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl, or None."""
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
def local_postgres() -> Iterator[str]:
    """Yields a libpq connection string for the superuser `postgres` on database `postgres`;
    raises RuntimeError (INSTALL_HINT) when the server's programs are not installed."""
    folder_of_binaries = binaries()
    if folder_of_binaries is None:
        raise RuntimeError(INSTALL_HINT)
    folder = Path(tempfile.mkdtemp(prefix="kvsa-pg-"))
    data = folder / "data"
    run_as = []
    if os.geteuid() == 0:
        shutil.chown(folder, "nobody")
        run_as = ["runuser", "-u", "nobody", "--"]
    try:
        subprocess.run([*run_as, str(folder_of_binaries / "initdb"), "-D", str(data),
                        "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        port = _free_port()
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*run_as, str(folder_of_binaries / "pg_ctl"), "-D", str(data), "-o",
                        options, "-l", str(folder / "log"), "-w", "start"],
                       check=True, capture_output=True)
        yield f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*run_as, str(folder_of_binaries / "pg_ctl"), "-D", str(data),
                            "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(folder, ignore_errors=True)
