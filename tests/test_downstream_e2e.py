"""Downstream end to end, on the demo pipeline: simulated cameras -> consumer -> data stream ->
the local Firehose leg -> the lake (copied to the demo's output folder), and the data stream ->
`kvs-analytics events sync` -> PostgreSQL (Debian's, a throwaway server) -> the read API, whose
presigned URLs fetch the highlights from the demo's bucket in moto.

- the lake's objects all parse, hold every record of the data stream once, and its `events`
  view returns the demo's events;
- the demo syncs a store itself when given a database;
- a sync killed mid-way (after filing, before storing its position) and run again leaves the
  store holding exactly the data stream's events, once each;
- the API lists both cameras and their events with presigned highlight URLs that fetch the
  very JPEGs in the bucket.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from consumer import cli
from consumer.api.app import create_app
from consumer.api.settings import ApiSettings
from consumer.demo import BUCKET, DATA_STREAM, read_all_records, run_demo
from consumer.lake.views import open_lake
from tests.postgres_helpers import fresh_database, postgres_server

pytestmark = pytest.mark.slow


def kill_a_sync_after_it_filed(stack, database: str) -> None:
    """A `--follow` sync, SIGKILLed once it has filed a batch and is storing its position (held
    back by a lock), its connection dying with it."""
    with psycopg.connect(database, autocommit=True) as blocker, \
            psycopg.connect(database, autocommit=True) as watcher:
        from consumer.store.schema import migrate
        migrate(blocker)
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE shard_positions IN SHARE MODE")
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "events", "sync", "--follow", "--data-stream",
             DATA_STREAM, "--database-url", database, "--endpoint-url",
             stack.endpoints["kinesis"], "--region", stack.region],
            env={**os.environ, "PYTHONPATH": os.getcwd()}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        waiting = ("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                   " AND query LIKE 'INSERT INTO shard_positions%'")
        deadline = time.monotonic() + 60
        try:
            while not (pids := watcher.execute(waiting).fetchall()):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the sync never got to its position"
                time.sleep(0.1)
            assert watcher.execute("SELECT count(*) FROM events").fetchone()[0] > 0
        finally:
            process.send_signal(signal.SIGKILL)
            process.communicate()
        watcher.execute("SELECT pg_terminate_backend(%s)", pids[0])
        blocker.execute("ROLLBACK")


def test_the_demo_feeds_the_lake_the_event_store_and_the_read_api(models, captures, tmp_path):
    out = tmp_path / "demo-output"
    seen: dict = {}
    with postgres_server() as server:
        demo_store, store = fresh_database(server), fresh_database(server)

        def downstream(stack) -> None:
            kinesis, s3 = stack.client("kinesis"), stack.client("s3")
            records = read_all_records(kinesis, DATA_STREAM)
            events = [r for r in records if r["RecordType"] == "Event"]
            assert {r["InputInformation"]["KinesisVideo"]["StreamName"] for r in events} == {
                "demo-cam-1", "demo-cam-2"}, "each demo camera should raise events"
            seen["records"], seen["events"] = records, events

            # the lake: every object parses; together they hold each record once
            lines = [json.loads(line) for path in (out / "lake" / "records").rglob("*.json.gz")
                     for line in gzip.decompress(path.read_bytes()).splitlines()]
            assert sorted(r["RecordId"] for r in lines) == sorted(r["RecordId"] for r in records)
            view = open_lake(out / "lake").execute(
                "SELECT event_id, status, stream FROM events").fetchall()
            assert sorted(view) == sorted(
                (r["EventId"], r["Status"], r["InputInformation"]["KinesisVideo"]["StreamName"])
                for r in events)

            # the store: a sync killed mid-way, then run again to the end
            kill_a_sync_after_it_filed(stack, store)
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                assert cli.main(["events", "sync", "--data-stream", DATA_STREAM,
                                 "--database-url", store, "--endpoint-url",
                                 stack.endpoints["kinesis"], "--region", stack.region]) == 0
            assert " seen before" in output.getvalue() and "caught up" in output.getvalue()
            with psycopg.connect(store) as conn:
                rows = conn.execute("SELECT event_id::text, status FROM events").fetchall()
                applied = conn.execute("SELECT count(*) FROM applied_records").fetchone()[0]
            final: dict[str, str] = {}  # an event's last state: ended wins over started
            for r in events:
                if final.get(r["EventId"]) != "ended":
                    final[r["EventId"]] = r["Status"]
            assert sorted(rows) == sorted(final.items())  # each event once, in its last state
            assert applied == len(records)

            # the API: both cameras, their events, highlight URLs that fetch the bucket's JPEGs
            settings = ApiSettings(store, url_expiry=300, endpoint_url=stack.endpoints["s3"],
                                   region=stack.region)
            client = TestClient(create_app(settings))
            cameras = {c["stream"]: c for c in client.get("/cameras").json()["cameras"]}
            assert set(cameras) == {"demo-cam-1", "demo-cam-2"}
            for stream, camera in cameras.items():
                listed = client.get(f"/cameras/{stream}/events").json()["events"]
                assert sorted(e["event_id"] for e in listed) == sorted(
                    e for e in final if any(r["EventId"] == e and r["InputInformation"][
                        "KinesisVideo"]["StreamName"] == stream for r in events))
                assert camera["events"] == len(listed)
                for event in listed:
                    highlight = event["highlight"]
                    assert highlight["url"] and highlight["url_expires_at"] <= time.time() + 300
                    fetched = httpx.get(highlight["url"], timeout=10)
                    assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"
                    assert fetched.content == s3.get_object(
                        Bucket=BUCKET, Key=highlight["key"])["Body"].read()
            seen["checked"] = True

        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            rc = run_demo(captures / "vogels_330.mkv", 20, 2, out, models,
                          database_url=demo_store, then=downstream)
        assert rc == 0, printed.getvalue()[-3000:]
        assert seen.get("checked"), "the downstream checks did not run"
        summary = printed.getvalue()
        assert f"kvs-analytics query --lake {out / 'lake'}" in summary
        assert f"event store: {len(seen['records'])} records filed ({len(seen['events'])} event" \
            in summary
        with psycopg.connect(demo_store) as conn:
            assert conn.execute("SELECT count(DISTINCT event_id) FROM events").fetchone()[0] == \
                len({r["EventId"] for r in seen["events"]})
