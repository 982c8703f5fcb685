"""`python -m consumer run --processes N`: the parent that starts, signals and restarts children.

The children here are a stand-in: a Python one-liner that prints what it was given, waits, and
exits on SIGTERM/SIGINT with a status from its environment (the real consumer needs a model and
AWS; how the children share streams is the lease table's business, tested elsewhere).
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import consumer.run
from consumer.cli import main
from consumer.config import load_config
from consumer.fleet.processes import (
    AUTO,
    DECODE_DEVICE_VARIABLE,
    DEVICE_VARIABLE,
    WORKER_ID_VARIABLE,
    WORKERS_VARIABLE,
    child_commands,
    child_environments,
    explicit_worker_id,
    process_count,
    resolve_count,
)

from .conftest import REPO

# Prints one JSON line on start; on SIGTERM/SIGINT waits 0.3 s (to count duplicates), prints
# the signals it got and exits with $CHILD_STATUS; with $CHILD_IGNORE it only reports them.
CHILD = r"""
import json, os, signal, sys, time
def say(text): os.write(1, (text + "\n").encode())  # one write: lines of children never mix
got = []
signal.signal(signal.SIGTERM, lambda n, f: got.append(signal.Signals(n).name))
signal.signal(signal.SIGINT, lambda n, f: got.append(signal.Signals(n).name))
say("start " + json.dumps({"pid": os.getpid(), "argv": sys.argv[1:],
    "worker": os.environ.get("KVSA_CHECKPOINT__WORKER_ID"),
    "device": os.environ.get("KVSA_PROCESSING__YOLO__DEVICE")}))
first = None
while True:
    time.sleep(0.02)
    if got and first is None:
        first = time.monotonic()
        if os.environ.get("CHILD_IGNORE"):
            say(f"ignored {os.getpid()} {got[0]}")
    if first is not None and not os.environ.get("CHILD_IGNORE") and time.monotonic() - first > 0.3:
        say(f"stop {os.getpid()} {','.join(got)}")
        sys.exit(int(os.environ.get("CHILD_STATUS", "0")))
"""
STAND_IN = [sys.executable, "-c", CHILD]

# The parent under test, in its own process: signals to it must not reach pytest.
DRIVER = r"""
import json, logging, sys
from consumer.fleet.processes import ProcessSupervisor, run_processes
spec = json.loads(sys.argv[1])
if "config" in spec:
    gpus = spec.get("gpus", 1)
    raise SystemExit(run_processes(spec["config"], spec["processes"], spec.get("stats_file"),
                                   program=spec["program"], gpus=lambda: gpus))
logging.basicConfig(level=logging.INFO, format="parent: %(message)s")
raise SystemExit(ProcessSupervisor(spec["commands"], spec.get("envs"),
                            **spec.get("options", {})).run())
"""


class Parent:
    """The driver as a subprocess; its output (and its children's) read line by line."""

    def __init__(self, spec: dict, new_session: bool = False):
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, json.dumps(spec)], cwd=REPO, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=new_session)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pattern: str, count: int = 1, timeout: float = 20.0) -> list[re.Match]:
        """The next `count` lines matching `pattern` (others are kept in `seen`)."""
        found: list[re.Match] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; "
                                     f"seen: {self.seen}") from None
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                found.append(match)
        return found

    def started(self, count: int) -> list[dict]:
        return [json.loads(m.group(1)) for m in self.expect(r"^start (\{.*\})$", count)]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture()
def parents():
    started: list[Parent] = []

    def start(spec: dict, **kwargs) -> Parent:
        started.append(Parent(spec, **kwargs))
        return started[-1]
    yield start
    for parent in started:
        parent.close()


def supervise(n: int, envs: list[dict] | None = None, **options) -> dict:
    base = dict(os.environ)
    return {"commands": [STAND_IN] * n,
            "envs": [{**base, **(envs[i] if envs else {})} for i in range(n)],
            "options": options}


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- signals and exit status --------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_reaches_every_child_once_and_all_exiting_0_is_0(parents, signum):
    parent = parents(supervise(3))
    pids = {child["pid"] for child in parent.started(3)}
    parent.signal(signum)
    stops = parent.expect(r"^stop (\d+) (\S+)$", 3)
    assert {int(m.group(1)) for m in stops} == pids
    assert {m.group(2) for m in stops} == {signum.name}  # once each
    assert parent.wait() == 0


def test_ctrl_c_in_a_terminal_reaches_the_children_once(parents):
    # A terminal signals its whole foreground group; the children are not in it, so each gets
    # SIGINT once, from the parent (a consumer exits at once on a second one).
    parent = parents(supervise(2), new_session=True)
    parent.started(2)
    os.killpg(parent.process.pid, signal.SIGINT)
    assert [m.group(1) for m in parent.expect(r"^stop \d+ (\S+)$", 2)] == ["SIGINT"] * 2
    assert parent.wait() == 0


def test_the_exit_status_is_the_highest_child_status(parents):
    parent = parents(supervise(3, [{"CHILD_STATUS": "0"}, {"CHILD_STATUS": "5"},
                                   {"CHILD_STATUS": "3"}]))
    parent.started(3)
    parent.signal(signal.SIGTERM)
    assert parent.wait() == 5


def test_a_second_signal_kills_the_children(parents):
    parent = parents(supervise(2, [{"CHILD_IGNORE": "1"}] * 2))
    pids = [child["pid"] for child in parent.started(2)]
    parent.signal(signal.SIGTERM)
    parent.expect(r"^ignored \d+ SIGTERM$", 2)
    parent.signal(signal.SIGTERM)
    assert parent.wait() == 128 + signal.SIGTERM
    assert all(gone(pid) for pid in pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_children_stop_when_the_parent_is_killed(parents):
    parent = parents(supervise(2))
    pids = {child["pid"] for child in parent.started(2)}
    parent.process.kill()
    stops = parent.expect(r"^stop (\d+) (\S+)$", 2)
    assert {int(m.group(1)) for m in stops} == pids
    assert {m.group(2) for m in stops} == {"SIGTERM"}


# --- restarts -----------------------------------------------------------------------------

def test_a_killed_child_is_restarted_with_a_doubling_backoff(parents):
    parent = parents(supervise(2))  # the real backoff: 1 s, then 2 s
    first, other = parent.started(2)
    os.kill(first["pid"], signal.SIGKILL)
    log = parent.expect(r"consumer process (\d) \(pid (\d+)\) was killed by SIGKILL after "
                        r"[\d.]+ s; restarting in (\S+) s")[0]
    assert (int(log.group(2)), log.group(3)) == (first["pid"], "1")
    began = time.monotonic()
    second = parent.started(1)[0]
    assert 0.9 <= time.monotonic() - began < 5
    assert second["pid"] not in (first["pid"], other["pid"])
    assert second["argv"] == first["argv"]

    os.kill(second["pid"], signal.SIGKILL)  # died again within 60 s: twice the wait
    assert parent.expect(r"was killed by SIGKILL after .* restarting in (\S+) s")[0] \
        .group(1) == "2"
    third = parent.started(1)[0]
    parent.signal(signal.SIGTERM)
    assert {int(m.group(1)) for m in parent.expect(r"^stop (\d+)", 2)} == \
        {third["pid"], other["pid"]}
    assert parent.wait() == 0  # the last run of each child counts


CRASH = [sys.executable, "-c", "import sys; print('crash', flush=True); sys.exit(3)"]


def test_backoff_doubles_to_its_cap_and_logs_the_status(parents):
    parent = parents({"commands": [CRASH],
                      "options": {"backoff": 0.05, "max_backoff": 0.2, "reset_after": 60}})
    delays = [m.group(1) for m in parent.expect(
        r"consumer process 0 \(pid \d+\) exited with status 3 after [\d.]+ s; "
        r"restarting in (\S+) s", 5)]
    assert delays == ["0.05", "0.1", "0.2", "0.2", "0.2"]
    parent.signal(signal.SIGTERM)
    assert parent.wait() != 0


def test_backoff_resets_after_a_long_enough_run(parents):
    parent = parents({"commands": [CRASH],
                      "options": {"backoff": 0.05, "max_backoff": 0.2, "reset_after": 0}})
    delays = [m.group(1) for m in parent.expect(r"restarting in (\S+) s", 4)]
    assert delays == ["0.05"] * 4
    parent.signal(signal.SIGTERM)
    parent.wait()


# --- run_processes: the children's commands and environments ------------------------------

def write_config(tmp_path: Path, **extra) -> str:
    data = {"streams": {"names": ["cam-1"]}, "outputs": {"kinesis": {"stream": "records"}},
            **extra}
    path = tmp_path / "consumer.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_children_get_unique_worker_ids_and_stats_files(parents, tmp_path):
    config = write_config(tmp_path, checkpoint={"worker_id": "edge-7"})
    parent = parents({"config": config, "processes": 2, "stats_file": "/tmp/s.json",
                      "program": STAND_IN})
    children = sorted(parent.started(2), key=lambda child: child["worker"])
    assert [child["worker"] for child in children] == ["edge-7-0", "edge-7-1"]
    assert [child["argv"] for child in children] == [
        ["run", "--config", config, "--stats-file", f"/tmp/s.json.{i}"] for i in range(2)]
    assert [child["device"] for child in children] == [None, None]  # pose: no GPU
    parent.signal(signal.SIGTERM)
    assert parent.wait() == 0


def test_yolo_children_are_spread_over_the_gpus(parents, tmp_path):
    config = write_config(tmp_path, processing={"processor": "yolo"})
    parent = parents({"config": config, "processes": AUTO, "gpus": 3, "program": STAND_IN})
    children = parent.started(3)
    assert sorted(child["device"] for child in children) == ["cuda:0", "cuda:1", "cuda:2"]
    assert {child["worker"] for child in children} == {None}  # each makes a unique id
    assert all(child["argv"] == ["run", "--config", config] for child in children)
    parent.signal(signal.SIGINT)
    assert parent.wait() == 0


def test_a_config_error_exits_2_before_any_child_starts(tmp_path):
    config = write_config(tmp_path, checkpoint={"lease_secs": 3})
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--config", config, "--processes", "3"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.startswith("consumer: invalid configuration")
    assert "checkpoint.lease_secs" in result.stderr


def test_a_worker_id_too_long_for_its_suffix_is_a_config_error(tmp_path, capsys):
    config = write_config(tmp_path, checkpoint={"worker_id": "w" * 127})
    assert main(["run", "--config", config, "--processes", "2"]) == 2
    assert "worker_id" in capsys.readouterr().err


def test_child_environments(tmp_path):
    config = load_config(write_config(tmp_path, processing={"processor": "yolo"},
                                      checkpoint={"worker_id": "gpu-box"}), environ={})
    envs = child_environments(config, 4, True, {"PATH": "/bin"}, gpus=lambda: 2)
    assert [(e[WORKER_ID_VARIABLE], e[DEVICE_VARIABLE], e["PATH"]) for e in envs] == [
        ("gpu-box-0", "cuda:0", "/bin"), ("gpu-box-1", "cuda:1", "/bin"),
        ("gpu-box-2", "cuda:0", "/bin"), ("gpu-box-3", "cuda:1", "/bin")]
    one_gpu = child_environments(config, 2, False, {}, gpus=lambda: 1)
    assert one_gpu == [{}, {}]
    pinned = load_config(data={"streams": {"names": ["a"]}, "outputs": {"kinesis": {"stream": "r"}},
                               "processing": {"processor": "yolo", "yolo": {"device": "cuda:1"}}},
                         environ={})
    assert child_environments(pinned, 2, False, {}, gpus=lambda: 2) == [{}, {}]
    nvdec = load_config(data={"streams": {"names": ["a"]}, "outputs": {"kinesis": {"stream": "r"}},
                              "processing": {"processor": "yolo",
                                             "decode": {"device": "cuda"}}}, environ={})
    envs = child_environments(nvdec, 3, False, {}, gpus=lambda: 2)
    assert [(e[DEVICE_VARIABLE], e[DECODE_DEVICE_VARIABLE]) for e in envs] == [
        ("cuda:0", "cuda:0"), ("cuda:1", "cuda:1"), ("cuda:0", "cuda:0")]  # decode beside YOLO


def test_pose_children_share_the_cores_instead_of_each_taking_all(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    pose = load_config(write_config(tmp_path), environ={})
    assert [e[WORKERS_VARIABLE] for e in child_environments(pose, 4, False, {})] == ["2"] * 4
    mine = child_environments(pose, 4, False, {WORKERS_VARIABLE: "3"})
    assert [e[WORKERS_VARIABLE] for e in mine] == ["3"] * 4  # the user's choice stands


def test_explicit_worker_id_comes_from_the_file_or_the_environment(tmp_path):
    plain = write_config(tmp_path)
    assert not explicit_worker_id(plain, {})
    assert explicit_worker_id(plain, {WORKER_ID_VARIABLE: "edge"})
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({"checkpoint": {"worker_id": "edge"}}))
    assert explicit_worker_id(str(fixed), {})


def test_auto_is_cores_for_pose_and_gpus_for_yolo(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    pose = load_config(write_config(tmp_path), environ={})
    yolo = load_config(write_config(tmp_path, processing={"processor": "yolo"}), environ={})
    assert resolve_count(AUTO, pose, gpus=lambda: 8) == 6
    assert resolve_count(AUTO, yolo, gpus=lambda: 4) == 4
    assert resolve_count(AUTO, yolo, gpus=lambda: 0) == 1
    assert resolve_count(3, yolo) == 3


def test_child_commands():
    assert child_commands("c.yaml", 2, None, program=["prog"]) == \
        [["prog", "run", "--config", "c.yaml"]] * 2
    assert child_commands("c.yaml", 1, "s")[0][-2:] == ["--stats-file", "s.0"]
    assert child_commands("c.yaml", 1, None)[0][:3] == [sys.executable, "-m", "consumer"]


# --- the command line ---------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [("0", "must be at least 1"),
                                            ("-2", "must be at least 1"),
                                            ("abc", "expected an integer >= 1 or 'auto'")])
def test_a_bad_processes_value_is_an_error_naming_the_option(value, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--config", "c.yaml", "--processes", value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --processes" in err and message in err


def test_process_count_parses():
    assert [process_count(text) for text in ("1", "12", "auto", "AUTO")] == [1, 12, AUTO, AUTO]


def test_one_process_runs_the_consumer_in_this_process(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(consumer.run, "run",
                        lambda path, stats_file=None: calls.append((path, stats_file)) or 0)
    config = write_config(tmp_path)
    assert main(["run", "--config", config]) == 0
    assert main(["run", "--config", config, "--processes", "1", "--stats-file", "s"]) == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert main(["run", "--config", config, "--processes", "auto"]) == 0  # auto -> 1
    assert calls == [(config, None), (config, "s"), (config, None)]


def test_run_help_describes_processes():
    result = subprocess.run([sys.executable, "-m", "consumer", "run", "--help"],
                            check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0
    text = result.stdout
    for words in ("--processes N", "auto", "one per GPU", "<id>-<i>", "cuda:<i mod GPUs>",
                  "FILE.<i>", "restarted", "--processes auto"):
        assert words in text, words


def test_the_parent_merges_the_childrens_stats_files(tmp_path):
    from consumer.fleet.processes import merge_stats
    target = tmp_path / "stats.json"
    for i, (stream, calls) in enumerate([("cam-1", 3), ("cam-2", 4)]):
        (tmp_path / f"stats.json.{i}").write_text(json.dumps({
            "worker_id": f"w{i}", "streams": {stream: {"frames_analysed": 10 * (i + 1)}},
            "api_calls": {"kinesis:PutRecords": calls, f"only:{i}": 1},
            "checkpoint_writes": 5}))
    merge_stats(str(target), 3)  # the third child wrote nothing (killed): still merged
    merged = json.loads(target.read_text())
    assert merged["streams"] == {"cam-1": {"frames_analysed": 10, "worker_id": "w0"},
                                 "cam-2": {"frames_analysed": 20, "worker_id": "w1"}}
    assert merged["api_calls"] == {"kinesis:PutRecords": 7, "only:0": 1, "only:1": 1}
    assert merged["checkpoint_writes"] == 10 and len(merged["processes"]) == 2
