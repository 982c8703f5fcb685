"""The two feeds of the event store, on the local stack's data stream (moto) into a throwaway
Debian PostgreSQL, with the records a batch run delivered to the stream:

- `kvs-analytics events sync`: each record filed once; a rerun resumes from the stored shard
  positions; a sync killed after filing a batch but before storing its position files nothing
  twice when run again; a bad record in the stream is kept aside; both shards of a two-shard
  stream are read.
- `kvs-analytics events kcl`, the KCL record processor, under the real amazon_kclpy (its Python
  side, from PyPI's sdist: its install downloads the daemon's jars from Maven Central, which
  this machine cannot reach), driven over stdin/stdout with the MultiLangDaemon's messages
  carrying the stream's records: a shard is checkpointed only at a batch's last record and only
  once the batch is in the store; a replayed batch writes nothing; an unreachable store ends the
  processor without a checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from consumer import cli
from infra.local.resources import create_resources
from infra.local.stack import LocalStack
from tests.batch_helpers import speaker_records_batch
from tests.postgres_helpers import fresh_database, postgres_server

DATA_STREAM = "video-analytics"


def stream_records(kinesis, stream: str) -> list[bytes]:
    """Every record in the stream, read directly."""
    out = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator)
            out += [record["Data"] for record in response["Records"]]
            iterator = response.get("NextShardIterator") if response["Records"] else None
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The local stack, its data stream holding a batch run's records (the speaker capture's
    first 20 s, with the demo's stage zone and a dwell rule) and one record that is not JSON."""
    tmp = tmp_path_factory.mktemp("sync")
    with LocalStack() as stack:
        create_resources(stack, DATA_STREAM, DATA_STREAM, [])
        speaker_records_batch(tmp, stack, data_stream=DATA_STREAM, bucket=DATA_STREAM)
        stack.client("kinesis").put_record(StreamName=DATA_STREAM, Data=b"{not json",
                                           PartitionKey="garbage")
        yield stack


@pytest.fixture(scope="module")
def server():
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
def database(server) -> str:
    return fresh_database(server)


def sync(stack, database: str, *extra: str, stream: str = DATA_STREAM) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["events", "sync", "--data-stream", stream, "--database-url", database,
                       "--endpoint-url", stack.endpoints["kinesis"], "--region", stack.region,
                       *extra])
    assert rc == 0, err.getvalue()
    return rc, out.getvalue()


def expected(records: list[bytes]) -> tuple[set[str], set[str], int]:
    """(record ids, event ids, frame records) of the parsable records."""
    parsed = []
    for data in records:
        with contextlib.suppress(ValueError):
            parsed.append(json.loads(data))
    return ({r["RecordId"] for r in parsed}, {r["EventId"] for r in parsed if "EventId" in r},
            sum(r["RecordType"] == "Frame" for r in parsed))


def store_contents(database: str) -> dict:
    with psycopg.connect(database) as conn:
        return {
            "records": {row[0] for row in conn.execute(
                "SELECT record_id::text FROM applied_records")},
            "events": [row[0] for row in conn.execute("SELECT event_id::text FROM events")],
            "frames": conn.execute("SELECT sum(frames) FROM camera_minutes").fetchone()[0],
            "rejected": conn.execute("SELECT count(*) FROM rejected_records").fetchone()[0],
            "dump": [conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
                     for table in ("cameras", "events", "camera_minutes")],
        }


def test_sync_files_each_record_once_and_resumes_where_it_stopped(stack, database):
    records = stream_records(stack.client("kinesis"), DATA_STREAM)
    record_ids, event_ids, frames = expected(records)
    assert event_ids and frames
    _, out = sync(stack, database)
    assert (f"{len(record_ids)} records filed ({len(record_ids) - frames} event, {frames} frame)"
            ", 0 seen before, 1 rejected") in out
    assert "caught up" in out and "password" not in out
    stored = store_contents(database)
    assert stored["records"] == record_ids
    assert sorted(stored["events"]) == sorted(event_ids)  # one row per event, each once
    assert (stored["frames"], stored["rejected"]) == (frames, 1)
    _, again = sync(stack, database)  # from the stored positions: nothing read twice
    assert "0 records filed (0 event, 0 frame), 0 seen before, 0 rejected" in again
    assert store_contents(database) == stored


def test_a_sync_killed_before_storing_its_position_files_nothing_twice(stack, database):
    records = stream_records(stack.client("kinesis"), DATA_STREAM)
    record_ids, event_ids, _frames = expected(records)
    with psycopg.connect(database, autocommit=True) as blocker, \
            psycopg.connect(database, autocommit=True) as watcher:  # a fresh snapshot each read
        from consumer.store.schema import migrate
        migrate(blocker)
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE shard_positions IN SHARE MODE")  # reads pass, writes wait
        env = {**os.environ, "PYTHONPATH": os.getcwd()}
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "events", "sync", "--data-stream", DATA_STREAM,
             "--database-url", database, "--endpoint-url", stack.endpoints["kinesis"],
             "--region", stack.region], env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            waiting = ("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                       " AND query LIKE 'INSERT INTO shard_positions%'")
            while not (pids := watcher.execute(waiting).fetchall()):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the sync never reached its position"
                time.sleep(0.1)
            # the batch is filed (committed), its position not yet stored
            filed = watcher.execute("SELECT count(*) FROM applied_records").fetchone()[0]
            assert filed == len(record_ids)
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate()
        # the killed process's connection dies with it, as in a crash
        watcher.execute("SELECT pg_terminate_backend(%s)", pids[0])
        blocker.execute("ROLLBACK")
    before = store_contents(database)
    _, out = sync(stack, database)
    assert f"0 records filed (0 event, 0 frame), {len(record_ids)} seen before" in out
    after = store_contents(database)
    assert after == before and after["records"] == record_ids
    assert sorted(after["events"]) == sorted(event_ids)


def test_every_shard_of_a_resharded_stream_is_read(stack, database):
    kinesis = stack.client("kinesis")
    kinesis.create_stream(StreamName="two-shards", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="two-shards")
    records = [data for data in stream_records(kinesis, DATA_STREAM) if data.startswith(b"{\"")]
    for start in range(0, len(records), 200):
        kinesis.put_records(StreamName="two-shards", Records=[
            {"Data": data, "PartitionKey": str(index)}
            for index, data in enumerate(records[start:start + 200])])
    shards = {shard["ShardId"] for shard in kinesis.list_shards(StreamName="two-shards")["Shards"]}
    assert len(shards) == 2
    sync(stack, database, stream="two-shards")
    record_ids, _events, _frames = expected(records)
    assert store_contents(database)["records"] == record_ids
    with psycopg.connect(database) as conn:
        positions = dict(conn.execute("SELECT shard_id, sequence_number FROM shard_positions"
                                      " WHERE data_stream = 'two-shards'").fetchall())
    assert set(positions) == shards


def test_sync_refuses_bad_arguments_and_names_what_is_missing(stack, database, capsys,
                                                              monkeypatch):
    monkeypatch.delenv("KVS_ANALYTICS_DATABASE_URL", raising=False)
    assert cli.main(["events", "sync", "--data-stream", DATA_STREAM]) == 2
    assert "--database-url or set KVS_ANALYTICS_DATABASE_URL" in capsys.readouterr().err
    where = ["--endpoint-url", stack.endpoints["kinesis"], "--region", stack.region]
    rc = cli.main(["events", "sync", "--data-stream", DATA_STREAM, "--database-url",
                   "host=127.0.0.1 port=1 password=sekret", "--store-attempts", "1", *where])
    err = capsys.readouterr().err
    assert rc == 1 and "after 1 attempts" in err and "sekret" not in err
    rc = cli.main(["events", "sync", "--data-stream", "no-such-stream", "--database-url",
                   database, *where])
    err = capsys.readouterr().err
    assert rc == 1 and "data stream 'no-such-stream'" in err


KCLPY = "amazon-kclpy==3.2.0"
KCLPY_CACHE = Path.home() / ".cache" / "kvs-analytics" / "amazon_kclpy-3.2.0"


@pytest.fixture(scope="session")
def kclpy() -> Path:
    """A folder holding amazon_kclpy's Python package, taken from its sdist on PyPI."""
    if (KCLPY_CACHE / "amazon_kclpy" / "kcl.py").exists():
        return KCLPY_CACHE
    with tempfile.TemporaryDirectory() as download:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                              "--no-binary", ":all:", "--quiet", KCLPY, "-d", download],
                             check=False, capture_output=True, text=True, timeout=240)
        if got.returncode:
            message = f"{KCLPY} could not be downloaded from PyPI: {got.stderr[-500:]}"
            pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
        [sdist] = Path(download).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if "/amazon_kclpy/" in m.name]
            for member in members:
                member.name = member.name.split("/", 1)[1]
            KCLPY_CACHE.mkdir(parents=True, exist_ok=True)
            archive.extractall(KCLPY_CACHE, members=members, filter="data")
    return KCLPY_CACHE


class Daemon:
    """The MultiLangDaemon's side of the protocol, for one shard's record processor."""

    def __init__(self, database: str, kclpy: Path, *extra: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), str(kclpy)])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "events", "kcl", "--database-url", database,
             *extra], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.checkpoints: list[str | None] = []

    def call(self, message: dict, on_checkpoint=lambda sequence: None) -> None:
        """Send one action and answer the processor's checkpoints until it reports done."""
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            assert line, f"the processor ended: {self.process.wait()} {self.process.stderr.read()}"
            if not line.strip():
                continue  # amazon_kclpy writes a newline before each message
            reply = json.loads(line)
            if reply["action"] == "status":
                assert reply["responseFor"] == message["action"]
                return
            assert reply["action"] == "checkpoint", reply
            on_checkpoint(reply["sequenceNumber"])
            self.checkpoints.append(reply["sequenceNumber"])
            self.process.stdin.write(json.dumps({**reply, "error": None}) + "\n")
            self.process.stdin.flush()

    def process_records(self, entries: list[dict], on_checkpoint=lambda sequence: None):
        self.call({"action": "processRecords", "millisBehindLatest": 0, "records": [
            {"action": "record", "data": base64.b64encode(entry["Data"]).decode(),
             "partitionKey": entry["PartitionKey"], "sequenceNumber": entry["SequenceNumber"],
             "subSequenceNumber": 0,
             "approximateArrivalTimestamp": int(entry["ApproximateArrivalTimestamp"].timestamp()
                                                * 1000)} for entry in entries]}, on_checkpoint)

    def close(self) -> tuple[int, str]:
        self.process.stdin.close()
        rc = self.process.wait(timeout=30)
        return rc, self.process.stderr.read()


def shard_entries(kinesis, stream: str) -> tuple[str, list[dict]]:
    [shard] = kinesis.list_shards(StreamName=stream)["Shards"]
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    return shard["ShardId"], kinesis.get_records(ShardIterator=iterator)["Records"]


def test_the_kcl_processor_checkpoints_each_batch_only_once_it_is_filed(stack, database, kclpy):
    shard, entries = shard_entries(stack.client("kinesis"), DATA_STREAM)
    record_ids, event_ids, _frames = expected([entry["Data"] for entry in entries])
    batches = [entries[start:start + 10] for start in range(0, len(entries), 10)]
    daemon = Daemon(database, kclpy)
    daemon.call({"action": "initialize", "shardId": shard, "sequenceNumber": "TRIM_HORIZON",
                 "subSequenceNumber": 0})
    for number, batch in enumerate(batches, 1):
        def filed_before(sequence, upto=number, batch=batch):
            assert sequence == batch[-1]["SequenceNumber"]
            with psycopg.connect(database) as conn:
                stored = conn.execute("SELECT (SELECT count(*) FROM applied_records)"
                                      " + (SELECT count(*) FROM rejected_records)").fetchone()[0]
            assert stored == sum(len(b) for b in batches[:upto])
        daemon.process_records(batch, filed_before)
    assert daemon.checkpoints == [batch[-1]["SequenceNumber"] for batch in batches]
    daemon.call({"action": "shutdownRequested"})
    assert daemon.checkpoints[-1] is None  # at the last batch handed over
    assert daemon.close()[0] == 0
    stored = store_contents(database)
    assert stored["records"] == record_ids and stored["rejected"] == 1
    assert sorted(stored["events"]) == sorted(event_ids)

    replay = Daemon(database, kclpy)  # the lease moved before the last checkpoints landed
    replay.call({"action": "initialize", "shardId": shard,
                 "sequenceNumber": batches[0][-1]["SequenceNumber"], "subSequenceNumber": 0})
    for batch in batches[1:]:
        replay.process_records(batch)
    replay.call({"action": "shardEnded"})
    assert replay.checkpoints[-1] is None
    rc, log = replay.close()
    assert rc == 0
    filed = [line for line in log.splitlines() if "records filed" in line]
    assert len(filed) == len(batches) - 1
    assert all(": 0 records filed," in line for line in filed), filed
    assert store_contents(database) == stored


def test_the_kcl_processor_exits_without_a_checkpoint_when_the_store_is_unreachable(
        stack, kclpy):
    shard, entries = shard_entries(stack.client("kinesis"), DATA_STREAM)
    daemon = Daemon("host=127.0.0.1 port=1 user=postgres password=sekret", kclpy,
                    "--store-attempts", "2")
    daemon.call({"action": "initialize", "shardId": shard, "sequenceNumber": "TRIM_HORIZON",
                 "subSequenceNumber": 0})
    daemon.process.stdin.write(json.dumps({
        "action": "processRecords", "millisBehindLatest": 0, "records": [
            {"action": "record", "data": base64.b64encode(entries[0]["Data"]).decode(),
             "partitionKey": "p", "sequenceNumber": entries[0]["SequenceNumber"],
             "subSequenceNumber": 0, "approximateArrivalTimestamp": 0}]}) + "\n")
    daemon.process.stdin.flush()
    assert daemon.process.stdout.read().strip() == ""  # no checkpoint, no status: it ended
    rc, log = daemon.close()
    assert rc == 1 and "exiting without a checkpoint" in log and "sekret" not in log


def test_kcl_without_amazon_kclpy_says_how_to_install_it(database, capsys):
    try:
        import amazon_kclpy  # noqa: F401
    except ImportError:
        assert cli.main(["events", "kcl", "--database-url", database]) == 2
        assert "pip install 'kvs-analytics[kcl]'" in capsys.readouterr().err
    else:
        pytest.skip("amazon_kclpy is installed here: nothing to hint")


def test_the_kcl_properties_start_this_processor():
    properties = dict(
        line.split(" = ", 1) for line in
        (Path(__file__).parents[1] / "infra" / "kcl" / "event-store.properties")
        .read_text().splitlines() if line and not line.startswith("#"))
    program, *argv = properties["executableName"].split()
    assert program == "kvs-analytics"
    assert cli.build_parser().parse_args(argv).handler.__name__ == "run_kcl"
    assert properties["initialPositionInStream"] == "TRIM_HORIZON"
