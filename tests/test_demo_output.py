"""Where the demo writes (issue 13, item 6): its output folder holds one run (what a previous run
left there is removed first, and nothing else), git ignores the default `demo-output/`, and a
folder the demo did not write is not emptied. The whole demo, briefly, through its command line:
one camera, its stderr free of native log lines, the outputs where it says they are."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from consumer.demo import MARKER, NATIVE_LOG, prepare_output

from .conftest import REPO
from .test_demo_native_logs import NATIVE


def test_a_previous_runs_outputs_are_removed_and_nothing_else(tmp_path):
    out = tmp_path / "demo-output"
    assert prepare_output(out) is None and (out / MARKER).is_file()
    (out / "s3" / "events" / "old").mkdir(parents=True)
    (out / "s3" / "events" / "old" / "highlight.jpg").write_bytes(b"old")
    for name in ("records.jsonl", "cameras.log", NATIVE_LOG, "notes.txt"):
        (out / name).write_text("old")
    assert prepare_output(out) is None
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "notes.txt"]  # the user's stays


def test_an_s3_folder_the_demo_did_not_write_is_left_alone(tmp_path):
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "mine.txt").write_text("keep")
    problem = prepare_output(tmp_path)
    assert problem is not None and "s3/" in problem and "did not write" in problem
    assert (tmp_path / "s3" / "mine.txt").read_text() == "keep"
    file = tmp_path / "file"
    file.write_text("x")
    assert "not a folder" in prepare_output(file)


def test_git_ignores_the_default_output_folder():
    for path in ("demo-output/records.jsonl", "demo-output/s3/events/x/highlight.jpg"):
        done = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO, check=False)
        assert done.returncode == 0, f"{path} is not ignored by git"


@pytest.mark.slow
def test_the_demo_runs_quietly_into_its_output_folder(models, captures, tmp_path):
    out = tmp_path / "demo-output"
    (out / "s3" / "stale").mkdir(parents=True)
    (out / "records.jsonl").write_text("stale\n")
    (out / "s3" / "stale" / "x.jpg").write_bytes(b"stale")
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "demo", "--seconds", "6", "--cameras", "1",
         "--output", str(out), "--models-dir", str(models),
         "--clip", str(captures / "vogels_330.mkv")],
        cwd=REPO, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    native = [line for line in done.stderr.splitlines() if NATIVE.search(line)]
    assert native == [], native[:5]
    first = done.stdout.splitlines()[0]
    assert f"outputs go to {out.resolve()}/" in first and NATIVE_LOG in first
    assert re.search(rf"outputs copied to {re.escape(str(out))}/: .*native\.log", done.stdout)
    assert not (out / "s3" / "stale").exists()
    assert "stale" not in (out / "records.jsonl").read_text()
    assert any(NATIVE.search(line) for line in (out / NATIVE_LOG).read_text().splitlines())
    assert (out / "cameras.log").is_file()
    # it ends naming the lake, the store and the console
    assert f"kvs-analytics query --lake {out / 'lake'}" in done.stdout
    assert "event store: not synced" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith(
        "console: python -m consumer demo --console serves these events at "
        "http://127.0.0.1:8080/console/")
    assert '"RecordType": "Frame"' in (out / "records.jsonl").read_text()  # this run's
