"""`kvs-analytics serve` with the events console, as a user runs it: real `python -m consumer`
processes. `serve --config FILE` over a throwaway Debian PostgreSQL holding the real records of a
recorded video (batch mode over the speaker capture, its JPEGs in the local stack's bucket in
moto), with the login from `console.password` and a lease table that does not exist (the page
says so instead of failing); configs it refuses (a plain-text password, an unknown key);
`serve --hash-password` at a real pseudo-terminal; `python -m consumer demo --console` end to end
(its console over the demo's own data, Ctrl-C, its throwaway PostgreSQL removed); and the tiles'
health badges."""

from __future__ import annotations

import html
import json
import os
import pty
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
import yaml

from consumer.console.auth import COOKIE, hash_password, verify_password
from consumer.console.tiles import BEHIND_SECONDS, QUIET_SECONDS, STALE_SECONDS, health
from consumer.store import events as store
from consumer.store.local_postgres import binaries
from consumer.store.schema import migrate
from infra.local.resources import create_resources
from infra.local.stack import LocalStack
from tests.batch_helpers import speaker_records_batch
from tests.conftest import REPO
from tests.postgres_helpers import fresh_database, postgres_server

BUCKET = "video-analytics"
PASSWORD = "correct horse battery"
EXPIRY = 120
MISSING_TABLE = "some-table-that-does-not-exist"
LISTENING = re.compile(r"^serve: listening on (http://127\.0\.0\.1:(\d+)/) "
                       r"\(the console: (http://127\.0\.0\.1:\d+/console/)\)$")
HASH = re.compile(r"scrypt\$\d+\$\d+\$\d+\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+")


def environ(**extra: str) -> dict[str, str]:
    """This environment without the project's overrides (KVSA_*: config keys;
    KVS_ANALYTICS_DATABASE_URL), with the repository on PYTHONPATH."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("KVSA_", "KVS_ANALYTICS_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env.update(extra)
    return env


class Lines:
    """A process's stdout, line by line, read by a thread: `wait_for` with a timeout; `text`:
    everything read so far."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern.pattern!r} in {timeout} s; "
                                     f"stdout so far:\n{self.text[-3000:]}")
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stdout ended (rc {self.process.wait(10)}) before a line "
                                     f"matching {pattern.pattern!r}:\n{self.text[-3000:]}")
            found = pattern.search(line)
            if found:
                return found

    def finish(self, timeout: float = 10) -> None:
        self._thread.join(timeout)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def stop(process: subprocess.Popen) -> None:
    """Kill what a failed test left running."""
    if process.poll() is None:
        process.kill()
        process.wait(10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ---- serve --config: a real process over a real store, moto and a missing lease table --------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(stack, records, database DSN): the batch's records, filed in a fresh database, name
    JPEGs and clips in the stack's bucket."""
    tmp = tmp_path_factory.mktemp("console-serve")
    with LocalStack() as stack, postgres_server() as server:
        create_resources(stack, BUCKET, BUCKET, [])
        speaker_records_batch(tmp, stack, bucket=BUCKET)
        [path] = (tmp / "out" / "records").rglob("records.jsonl")
        records = [json.loads(line) for line in path.read_text().splitlines()]
        dsn = fresh_database(server)
        with psycopg.connect(dsn, autocommit=True) as conn:
            migrate(conn)
            store.apply(conn, records)
        yield stack, records, dsn


@pytest.fixture(scope="module")
def password_hash() -> str:
    return hash_password(PASSWORD)


def write_config(path: Path, stack, **console) -> Path:
    path.write_text(yaml.safe_dump({
        "aws": {"region": stack.region, "endpoints": {"s3": stack.endpoints["s3"],
                                                      "dynamodb": stack.endpoints["dynamodb"]}},
        "checkpoint": {"table": MISSING_TABLE},
        "console": {"port": 0, "url_expiry": EXPIRY, **console}}))
    return path


def test_serve_with_a_config_logs_in_and_serves_the_console_and_the_api(
        world, password_hash, tmp_path):
    stack, records, dsn = world
    stream = records[0]["InputInformation"]["File"]["VideoId"]
    config = write_config(tmp_path / "consumer.yaml", stack, password=password_hash)
    stderr_path = tmp_path / "serve.err"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "serve", "--config", str(config),
             "--database-url", dsn],
            cwd=REPO, env=environ(), stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines = Lines(process)
    try:
        listening = lines.wait_for(LISTENING, timeout=60)
        base, port, console = listening.group(1), int(listening.group(2)), listening.group(3)
        assert port != 0 and console == f"{base}console/"
        # once it says so, it is listening: a client connecting at once is not refused
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as client:
            # open without a login: only /health
            assert client.get("/health").json() == {"status": "ok"}
            page = client.get("/console/")
            assert page.status_code == 303
            assert page.headers["location"] == "/console/login?next=%2Fconsole%2F"
            api = client.get("/cameras")
            assert api.status_code == 401 and "log in" in api.json()["error"]
            assert client.get("/console/login").status_code == 200

            wrong = client.post("/console/login",
                                data={"password": PASSWORD + "!", "next": "/console/"})
            assert wrong.status_code == 401 and COOKIE not in wrong.cookies
            assert client.get("/cameras").status_code == 401

            right = client.post("/console/login", data={"password": PASSWORD,
                                                        "next": "/console/"})
            assert right.status_code == 303 and right.headers["location"] == "/console/"
            assert COOKIE in right.cookies
            set_cookie = right.headers["set-cookie"].lower()
            assert "httponly" in set_cookie and "samesite=strict" in set_cookie

            page = client.get("/console/")
            assert page.status_code == 200, page.text
            assert stream in page.text
            # the lease table cannot be read: the page says so, naming it, and still serves
            assert f"lease table {MISSING_TABLE}" in page.text
            assert 'class="error"' in page.text and "ResourceNotFoundException" in page.text
            # no lease to go by: health from when the store last heard from the camera (the
            # recorded video's times start at the epoch: long ago)
            assert 'class="badge quiet"' in page.text

            before = time.time()
            cameras = client.get("/cameras")
            assert cameras.status_code == 200
            [camera] = cameras.json()["cameras"]
            assert camera["stream"] == stream
            thumbnail = camera["thumbnail"]
            assert thumbnail["bucket"] == BUCKET
            assert before + EXPIRY - 5 <= thumbnail["url_expires_at"] <= time.time() + EXPIRY
            # what S3 itself will enforce: the URL's own expiry (SigV2's Expires, an epoch time;
            # SigV4's X-Amz-Expires, seconds)
            query = parse_qs(urlsplit(thumbnail["url"]).query)
            if "X-Amz-Expires" in query:
                assert query["X-Amz-Expires"] == [str(EXPIRY)]
            else:
                assert before + EXPIRY - 5 <= int(query["Expires"][0]) <= time.time() + EXPIRY + 1
            image = httpx.get(thumbnail["url"], timeout=30)
            assert image.status_code == 200 and image.content.startswith(b"\xff\xd8")

            timeline = client.get(f"/console/cameras/{stream}")
            assert timeline.status_code == 200 and stream in timeline.text
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            rc = process.wait(timeout=20)
        finally:
            stop(process)
    lines.finish()
    output = lines.text + stderr_path.read_text()
    assert rc == 0, output[-3000:]
    assert PASSWORD not in output and "horse" not in output
    assert '"POST /console/login HTTP/1.1" 303' in output  # uvicorn's access log


def run_serve(config: Path, dsn: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "consumer", "serve", "--config", str(config),
         "--database-url", dsn],
        cwd=REPO, env=environ(), capture_output=True, text=True, timeout=60, check=False)


def test_serve_refuses_a_plain_text_password_without_repeating_it(world, tmp_path):
    stack, _records, dsn = world
    config = write_config(tmp_path / "consumer.yaml", stack, password=PASSWORD)
    done = run_serve(config, dsn)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "console.password" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr and "horse" not in done.stderr
    assert "listening" not in done.stdout


def test_serve_refuses_a_hash_it_cannot_use(world, tmp_path):
    stack, _records, dsn = world
    # the config's pattern accepts it; verify_password could not use it (n=1)
    config = write_config(tmp_path / "consumer.yaml", stack, password="scrypt$1$1$1$AAAA$BBBB")
    done = run_serve(config, dsn)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "console.password" in done.stderr and "listening" not in done.stdout


def test_serve_refuses_an_unknown_config_key(world, tmp_path):
    stack, _records, dsn = world
    config = write_config(tmp_path / "consumer.yaml", stack, colour="red")
    done = run_serve(config, dsn)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "console.colour" in done.stderr and "unknown key" in done.stderr


# ---- serve --hash-password at a real terminal ------------------------------------------------

# In the child, in a session of its own: make its stdin (the pty) its controlling terminal, so
# that getpass reads /dev/tty as it does for a user, then become `serve --hash-password`.
TAKE_TERMINAL = ("import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                 "os.execv(sys.executable, [sys.executable, '-m', 'consumer', 'serve', "
                 "'--hash-password'])")


def hash_at_a_terminal(*answers: str, timeout: float = 60) -> tuple[int, str]:
    """Runs `serve --hash-password` on a pseudo-terminal, typing each answer after a prompt;
    (exit status, everything the terminal showed)."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", TAKE_TERMINAL], cwd=REPO, env=environ(), stdin=slave,
        stdout=slave, stderr=slave, start_new_session=True, close_fds=True)
    os.close(slave)
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                shown += chunk
                prompts = shown.count(b"console password: ") + shown.count(b"again: ")
                typed = len(answers) - len(pending)
                if pending and prompts > typed:
                    os.write(master, pending.pop(0).encode() + b"\n")
            elif process.poll() is not None:
                break
        rc = process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        stop(process)
        os.close(master)
    return rc, shown.decode("utf-8", errors="replace")


def test_hash_password_at_a_terminal_prints_a_hash_that_verifies():
    rc, shown = hash_at_a_terminal(PASSWORD, PASSWORD)
    assert rc == 0, shown
    assert "console password: " in shown and "again: " in shown
    assert PASSWORD not in shown  # not echoed
    [hashed] = HASH.findall(shown)
    assert verify_password(PASSWORD, hashed)
    assert not verify_password(PASSWORD + "x", hashed)


def test_hash_password_refuses_entries_that_differ_or_are_short():
    rc, shown = hash_at_a_terminal(PASSWORD, PASSWORD + "x")
    assert rc == 2, shown
    assert "differ" in shown and not HASH.search(shown) and PASSWORD not in shown
    rc, shown = hash_at_a_terminal("short")
    assert rc == 2, shown
    assert "12 characters" in shown and not HASH.search(shown) and "again: " not in shown


# ---- demo --console ----------------------------------------------------------------------------

def test_demo_help_documents_the_console():
    done = subprocess.run([sys.executable, "-m", "consumer", "demo", "--help"], cwd=REPO,
                          env=environ(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "--console " in text and "--console-port PORT" in text
    assert "serve the events console" in text and "throwaway PostgreSQL" in text


@pytest.mark.slow
def test_demo_console_serves_the_demos_cameras_until_ctrl_c(models, captures, tmp_path):
    """20 s of the clip: the speaker appears after about 12 s, and the demo keeps a frame's JPEG
    (the camera's picture on its tile) only when it shows a person."""
    port = free_port()
    # the demo's throwaway PostgreSQL folder goes into a temp folder of its own (nobody, who
    # runs the server when we are root, must be able to reach it)
    temp = Path(tempfile.mkdtemp(prefix="kvsa-t-"))
    temp.chmod(0o755)
    stderr_path = tmp_path / "demo.err"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "demo", "--console", "--seconds", "20",
             "--cameras", "1", "--console-port", str(port), "--output",
             str(tmp_path / "demo-output"), "--models-dir", str(models),
             "--clip", str(captures / "vogels_330.mkv")],
            cwd=REPO, env=environ(TMPDIR=str(temp)), stdout=subprocess.PIPE, stderr=stderr,
            text=True)
    lines = Lines(process)
    try:
        url = lines.wait_for(re.compile(rf"^\s+(http://127\.0\.0\.1:{port}/console/)$"),
                             timeout=240).group(1)
        assert len(list(temp.glob("kvsa-pg-*"))) == 1  # its event store, while it serves
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200, page.text
        assert "demo-cam-1" in page.text
        assert "kvs-analytics-demo-checkpoints" in page.text  # owners from its lease table
        # the demo's consumer has stopped and released its lease by now
        assert 'class="badge unowned"' in page.text
        [src] = re.findall(r'<img class="thumb" src="([^"]+)" alt="latest picture of '
                           r'demo-cam-1"', page.text)
        image = httpx.get(html.unescape(src), timeout=30)
        assert image.status_code == 200 and image.content.startswith(b"\xff\xd8")
        timeline = httpx.get(f"{url}cameras/demo-cam-1", timeout=30)
        assert timeline.status_code == 200 and "demo-cam-1" in timeline.text
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        rc = process.wait(timeout=30)
        assert time.monotonic() - started < 30
        output = lines.text + "\n" + stderr_path.read_text()
        assert rc == 0, output[-3000:]
        assert list(temp.glob("kvsa-pg-*")) == [], "the throwaway PostgreSQL was left behind"
        assert "console (Ctrl-C stops it" in lines.text
    finally:
        stop_demo(process, temp)
        lines.finish()


def stop_demo(process: subprocess.Popen, temp: Path) -> None:
    """After a failure: Ctrl-C, then kill; stop a PostgreSQL server a killed demo left running
    in `temp`, and remove `temp`."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            stop(process)
    folder = binaries()
    for data in temp.glob("kvsa-pg-*/data"):
        if folder is not None and (data / "postmaster.pid").exists():
            run_as = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
            subprocess.run([*run_as, str(folder / "pg_ctl"), "-D", str(data), "-m",
                            "immediate", "stop"], capture_output=True, check=False, timeout=60)
    shutil.rmtree(temp, ignore_errors=True)


# ---- the tiles' health badges ------------------------------------------------------------------

NOW = 1_700_000_000.0


def lease(owner: str | None = "worker-a", renewed: float | None = 1.0,
          lag: float | None = 2.0) -> dict:
    return {"owner": owner, "seconds_since_renewal": renewed, "lag_seconds": lag}


def test_health_with_a_lease():
    camera = {"stream": "cam-1", "last_seen": NOW - 10 * QUIET_SECONDS}  # ignored with a lease
    assert health(camera, lease(owner=None), NOW) == "unowned"
    assert health(camera, lease(owner=""), NOW) == "unowned"
    assert health(camera, lease(owner=None, renewed=10 * STALE_SECONDS), NOW) == "unowned"
    assert health(camera, lease(renewed=STALE_SECONDS + 0.1), NOW) == "stale"
    assert health(camera, lease(renewed=STALE_SECONDS + 0.1, lag=10 * BEHIND_SECONDS),
                  NOW) == "stale"
    assert health(camera, lease(renewed=STALE_SECONDS), NOW) == "live"
    assert health(camera, lease(lag=BEHIND_SECONDS + 0.1), NOW) == "behind"
    assert health(camera, lease(lag=BEHIND_SECONDS), NOW) == "live"
    assert health(camera, lease(renewed=None, lag=None), NOW) == "live"
    assert health({"stream": "cam-1"}, lease(), NOW) == "live"


def test_health_without_a_lease_is_how_recently_the_camera_was_heard():
    assert health({"last_seen": NOW}, None, NOW) == "live"
    assert health({"last_seen": NOW - QUIET_SECONDS}, None, NOW) == "live"
    assert QUIET_SECONDS == 120
    assert health({"last_seen": NOW - 119.5}, None, NOW) == "live"
    assert health({"last_seen": NOW - 120.5}, None, NOW) == "quiet"
    assert health({"last_seen": NOW - 86400}, None, NOW) == "quiet"
    assert health({"last_seen": None}, None, NOW) == "quiet"
    assert health({}, None, NOW) == "quiet"
