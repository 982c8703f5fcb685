"""`python -m consumer fleet` against a lease table on moto's server (the local stack)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from consumer.cli import main
from consumer.fleet.lease_table import LeaseTable
from consumer.fleet.view import STREAM_KEYS, format_duration
from infra.local.stack import LocalStack

from .conftest import REPO

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/{}/1700000000000"
BIG = 91343852333181432392682062600000000000000000007  # 47 digits, like KVS's


@pytest.fixture(scope="module")
def stack():
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def fleet(stack):
    """A table with three streams: cam-a checkpointed by worker-a, cam-b held by worker-b (no
    worker item), cam-c unowned; worker-a has a worker item, worker-idle only a worker item."""
    table = f"fleet-{uuid.uuid4().hex[:8]}"
    client = stack.client("dynamodb")
    a, b = LeaseTable(client, table, "worker-a"), LeaseTable(client, table, "worker-b")
    a.ensure_table()
    for name in ("cam-a", "cam-b", "cam-c"):
        assert a.create(ARN.format(name), name)
    held_a = a.take(a.lease(ARN.format("cam-a")))
    assert b.take(b.lease(ARN.format("cam-b"))) is not None
    produced = time.time() - 42.0
    a.checkpoint(ARN.format("cam-a"), held_a.counter, BIG, produced)
    a.heartbeat("host-a", 4242)
    LeaseTable(client, table, "worker-idle").heartbeat("host-i", 7)
    return table, produced


def write_config(tmp_path: Path, stack, table: str, **extra) -> Path:
    data = {"aws": {"region": stack.region,
                    "endpoints": {"dynamodb": stack.endpoints["dynamodb"]}},
            "streams": {"names": ["cam-a"]},
            "outputs": {"kinesis": {"stream": "records"}},
            "checkpoint": {"table": table}, **extra}
    path = tmp_path / "consumer.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["fleet", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_json_rows_show_owners_checkpoints_and_workers(stack, fleet, tmp_path, capsys):
    table, produced = fleet
    status, out, err = run_cli(capsys, "--config", str(write_config(tmp_path, stack, table)),
                               "--json")
    assert status == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    streams = {row["stream"]: row for row in rows if "stream" in row}
    workers = {row["worker"]: row for row in rows if "worker" in row}
    assert len(rows) == len(streams) + len(workers)
    assert all(tuple(row) == STREAM_KEYS for row in streams.values())

    a = streams["cam-a"]
    assert a["owner"] == "worker-a" and a["lease_counter"] == 2
    assert a["checkpoint"] == str(BIG)  # whole in JSON
    assert a["checkpoint_producer_time"] == pytest.approx(produced)
    assert 42.0 <= a["lag_seconds"] < 100
    assert 0 <= a["seconds_since_renewal"] < 60
    assert a["stream_arn"] == ARN.format("cam-a")
    assert (streams["cam-b"]["owner"], streams["cam-b"]["lease_counter"]) == ("worker-b", 1)
    c = streams["cam-c"]
    assert (c["owner"], c["lease_counter"], c["checkpoint"], c["checkpoint_producer_time"],
            c["lag_seconds"]) == (None, 0, None, None, None)

    assert set(workers) == {"worker-a", "worker-b", "worker-idle"}  # items + lease owners
    assert {k: workers["worker-a"][k] for k in ("streams", "host", "pid")} == \
        {"streams": 1, "host": "host-a", "pid": 4242}
    assert 0 <= workers["worker-a"]["seconds_since_heartbeat"] < 60
    assert {k: workers["worker-b"][k] for k in ("streams", "host", "pid")} == \
        {"streams": 1, "host": None, "pid": None}
    assert (workers["worker-idle"]["streams"], workers["worker-idle"]["pid"]) == (0, 7)


def test_table_is_aligned_and_shortens_fragment_numbers(stack, fleet, tmp_path, capsys):
    table, _ = fleet
    status, out, _ = run_cli(capsys, "--config", str(write_config(tmp_path, stack, table)))
    assert status == 0
    lines = out.splitlines()
    assert table in lines[0]
    header = lines[1].split()
    assert header == ["stream", "owner", "counter", "renewed_ago_wall", "checkpoint",
                      "producer_time", "lag"]
    rows = {line.split()[0]: line for line in lines[2:5]}
    assert set(rows) == {"cam-a", "cam-b", "cam-c"}
    a = rows["cam-a"].split()
    assert a[:3] == ["cam-a", "worker-a", "2"]
    assert a[4] == "..." + str(BIG)[-10:] and str(BIG) not in out
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", a[5])
    assert re.fullmatch(r"4\d\.\ds", a[6])
    assert rows["cam-c"].split()[1:] == ["-", "0", rows["cam-c"].split()[3], "-", "-", "-"]
    # aligned: every column starts where its heading does
    start = lines[1].index("checkpoint")
    assert all(line[start:start + 3] in ("...", "-  ") for line in lines[2:5])
    assert "3 streams, 1 without an owner" in out
    workers = out[out.index("\nworker"):].splitlines()[1:]
    assert workers[0].split()[:4] == ["worker", "streams", "host", "pid"]
    assert workers[1].split()[:4] == ["worker-a", "1", "host-a", "4242"]
    assert workers[2].split()[:4] == ["worker-b", "1", "-", "-"]
    assert workers[3].split()[:4] == ["worker-idle", "0", "host-i", "7"]
    assert "3 workers" in out


def test_as_a_subprocess(stack, fleet, tmp_path):
    table, _ = fleet
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "fleet", "--config",
         str(write_config(tmp_path, stack, table)), "--json"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["stream"] for row in rows if "stream" in row] == ["cam-a", "cam-b", "cam-c"]
    assert [row["worker"] for row in rows if "worker" in row] == \
        ["worker-a", "worker-b", "worker-idle"]


def test_an_empty_table_prints_headings_only(stack, tmp_path, capsys):
    table = f"empty-{uuid.uuid4().hex[:8]}"
    LeaseTable(stack.client("dynamodb"), table, "w").ensure_table()
    config = str(write_config(tmp_path, stack, table))
    status, out, _ = run_cli(capsys, "--config", config)
    assert status == 0 and "0 streams" in out and "0 workers" in out
    assert run_cli(capsys, "--config", config, "--json")[:2] == (0, "")


def test_a_missing_table_exits_3_naming_it(stack, tmp_path, capsys):
    status, out, err = run_cli(capsys, "--config",
                               str(write_config(tmp_path, stack, "no-such-table")))
    assert status == 3 and out == ""
    assert "lease table no-such-table does not exist" in err


def test_an_unreachable_endpoint_exits_3_naming_the_table(stack, tmp_path, capsys):
    path = write_config(tmp_path, stack, "some-table")
    data = yaml.safe_load(path.read_text())
    data["aws"]["endpoints"]["dynamodb"] = "http://127.0.0.1:9"  # discard: nothing listens
    path.write_text(yaml.safe_dump(data))
    status, _, err = run_cli(capsys, "--config", str(path))
    assert status == 3
    assert err.startswith("consumer: cannot read lease table some-table")


def test_a_config_error_exits_2(stack, tmp_path, capsys):
    path = write_config(tmp_path, stack, "t", checkpoint={"table": "t", "lease_secs": 3})
    status, _, err = run_cli(capsys, "--config", str(path))
    assert status == 2
    assert err.startswith("consumer: invalid configuration") and "checkpoint.lease_secs" in err


def test_help_describes_the_columns():
    result = subprocess.run([sys.executable, "-m", "consumer", "fleet", "--help"],
                            check=False, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0
    for word in ("renewed_ago_wall", "wall clock", "lag_seconds", "example",
                 "python -m consumer fleet --config"):
        assert word in result.stdout


def test_format_duration():
    assert [format_duration(s) for s in (4.24, 125, 3 * 3600 + 245, 2 * 86400 + 3 * 3600, -1.5)] \
        == ["4.2s", "2m05s", "3h04m", "2d03h", "-1.5s"]
