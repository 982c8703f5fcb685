"""The read API (`kvs-analytics serve`) over a real event store: the real records of a recorded
video (batch mode over the speaker capture, highlights and clips written to the local stack's
bucket in moto), filed into a throwaway Debian PostgreSQL with `consumer.store.events.apply`,
read back through Starlette's TestClient and once through a real `serve` process (uvicorn) on a
free port; every presigned URL is fetched with plain httpx from moto's S3."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from consumer import cli
from consumer.api.app import create_app
from consumer.api.settings import ApiSettings
from consumer.store import events as store
from consumer.store.schema import migrate
from infra.local.resources import create_resources
from infra.local.stack import LocalStack
from tests.batch_helpers import speaker_records_batch
from tests.conftest import REPO
from tests.postgres_helpers import fresh_database, postgres_server

BUCKET = "video-analytics"
EXPIRY = 60  # the batch presigned its records' URLs for an hour: ours must differ


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(stack, records, server DSN): the batch's records name objects in the stack's bucket."""
    tmp = tmp_path_factory.mktemp("read-api")
    with LocalStack() as stack, postgres_server() as server:
        create_resources(stack, BUCKET, BUCKET, [])
        speaker_records_batch(tmp, stack, bucket=BUCKET)
        [path] = (tmp / "out" / "records").rglob("records.jsonl")
        records = [json.loads(line) for line in path.read_text().splitlines()]
        yield stack, records, server


@pytest.fixture
def dsn(world) -> str:
    """A fresh database holding the batch's records."""
    _stack, records, server = world
    url = fresh_database(server)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn)
        store.apply(conn, records)
    return url


@pytest.fixture
def client(world, dsn) -> TestClient:
    stack = world[0]
    settings = ApiSettings(dsn, url_expiry=EXPIRY, endpoint_url=stack.endpoints["s3"],
                           region=stack.region)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def stream_of(records: list[dict]) -> str:
    return records[0]["InputInformation"]["File"]["VideoId"]


def record_time(record: dict) -> float:
    where = record["InputInformation"]["File"]
    return where["ProducerTimestamp"] + where.get("FrameOffsetInSeconds", 0)


def events_of(records: list[dict]) -> dict[str, dict]:
    """EventId -> the latest record of the event (an ended one closes its started one)."""
    latest: dict[str, dict] = {}
    for record in records:
        if record["RecordType"] == "Event" and latest.get(record["EventId"], {}).get(
                "Status") != "ended":
            latest[record["EventId"]] = record
    return latest


def store_rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT event_id::text, event_type, start_time FROM events "
                            "ORDER BY start_time, event_id").fetchall()


def test_cameras_lists_the_camera_with_its_counts(world, client):
    _stack, records, _server = world
    response = client.get("/cameras")
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    [camera] = response.json()["cameras"]
    frames = [r for r in records if r["RecordType"] == "Frame"]
    times = [record_time(r) for r in records]
    assert camera["stream"] == stream_of(records)
    assert camera["events"] == len(events_of(records)) >= 3
    assert camera["records"] == len(records)
    assert camera["first_seen"] == pytest.approx(min(times))
    assert camera["last_seen"] == pytest.approx(max(times))
    assert camera["last_producer_time"] == pytest.approx(max(times))
    # the video's 20 s are all in its first minute (producer times from 0: the epoch)
    assert camera["last_minute"] == 0.0
    assert camera["last_minute_frames"] == len(frames)
    assert camera["last_minute_persons"] == sum(len(r["Persons"]) for r in frames)
    assert camera["last_fragment"] == str(max(int(r["InputInformation"]["File"][
        "FragmentNumber"]) for r in records))


def test_events_are_the_stores_with_urls_presigned_now(world, client, dsn):
    stack, records, _server = world
    s3 = stack.client("s3")
    stream = stream_of(records)
    before = time.time()
    response = client.get(f"/cameras/{stream}/events")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["stream"], body["limit"], body["more"]) == (stream, 100, False)
    events = body["events"]
    assert [(e["event_id"], e["event_type"], e["start_time"]) for e in events] == [
        tuple(row) for row in store_rows(dsn)]
    latest = events_of(records)
    for event in events:
        record = latest[event["event_id"]]
        assert set(event) == {"event_id", "stream", "event_type", "rule", "status", "track_id",
                              "zone", "confidence", "start_time", "end_time", "start_fragment",
                              "end_fragment", "details", "highlight", "clip"}
        assert (event["stream"], event["rule"], event["status"], event["track_id"]) == (
            stream, record["Rule"], record["Status"], record["TrackId"])
        assert event["start_fragment"] == record["StartFragmentNumber"]
        assert isinstance(event["start_fragment"], str)
        assert event["end_fragment"] == record["EndFragmentNumber"]
        assert event["details"] == record["Details"] and event["zone"] == "stage"
        for name, field in (("highlight", "Highlight"), ("clip", "Clip")):
            media = event[name]
            assert (media["bucket"], media["key"]) == (BUCKET, record[field]["Key"])
            assert media["url"] != record[field]["Url"]  # presigned for this response
            assert before + EXPIRY - 1 <= media["url_expires_at"] <= time.time() + EXPIRY
            fetched = httpx.get(media["url"], timeout=10)
            assert fetched.status_code == 200
            stored = s3.get_object(Bucket=BUCKET, Key=media["key"])["Body"].read()
            assert fetched.content == stored
        assert event["highlight"]["key"].endswith(".jpg")
        assert httpx.get(event["highlight"]["url"]).content.startswith(b"\xff\xd8")


def test_from_to_type_and_limit_filter_the_events(world, client, dsn):
    _stack, records, _server = world
    stream = stream_of(records)
    rows = store_rows(dsn)
    times = sorted({row[2] for row in rows})
    assert len(times) >= 2, "the capture's events should start at two times"
    middle = (times[0] + times[-1]) / 2

    def ids(**query) -> list[str]:
        response = client.get(f"/cameras/{stream}/events", params=query)
        assert response.status_code == 200, response.text
        return [e["event_id"] for e in response.json()["events"]]

    def expected(start=float("-inf"), end=float("inf"), kind=None) -> list[str]:
        return [row[0] for row in rows
                if start <= row[2] < end and (kind is None or row[1] == kind)]

    assert ids(**{"from": str(middle)}) == expected(start=middle) != []
    assert ids(to=str(middle)) == expected(end=middle) != []
    assert ids(**{"from": str(times[0]), "to": str(times[-1])}) == expected(times[0], times[-1])
    # the same instant in ISO 8601: UTC with Z, another offset, and naive (taken as UTC)
    for iso in ("1970-01-01T00:00:{:06.3f}Z", "1970-01-01T01:00:{:06.3f}+01:00",
                "1970-01-01T00:00:{:06.3f}"):
        assert ids(to=iso.format(middle)) == expected(end=middle)
    for kind in {row[1] for row in rows}:
        assert ids(type=kind) == expected(kind=kind) != []
    assert ids(type="fall") == []
    assert ids(**{"from": "1e9"}) == []
    response = client.get(f"/cameras/{stream}/events", params={"limit": 1})
    assert response.json()["more"] is True and len(response.json()["events"]) == 1
    assert response.json()["events"][0]["event_id"] == rows[0][0]
    assert ids(limit=str(len(rows))) == expected()


def test_one_event_with_its_latest_record(world, client):
    _stack, records, _server = world
    latest = events_of(records)
    dwell = next(r for r in latest.values() if r["EventType"] == "dwell")
    assert dwell["Status"] == "ended"
    response = client.get(f"/events/{dwell['EventId']}")
    assert response.status_code == 200, response.text
    event = response.json()
    assert event["record"] == dwell
    assert (event["status"], event["start_time"], event["end_time"]) == (
        "ended", dwell["StartTimestamp"], dwell["EndTimestamp"])
    assert event["details"] == dwell["Details"]  # the ended record's details merged in
    assert httpx.get(event["highlight"]["url"]).content.startswith(b"\xff\xd8")
    # the same id in upper case is the same event
    assert client.get(f"/events/{dwell['EventId'].upper()}").json()["event_id"] == \
        dwell["EventId"]


def test_the_cameras_thumbnail_is_its_latest_frame_jpeg(world, client):
    stack, records, _server = world
    [camera] = client.get("/cameras").json()["cameras"]
    with_images = [r for r in records if r["RecordType"] == "Frame" and r.get("Frames")]
    latest = max(with_images, key=record_time)
    thumbnail = camera["thumbnail"]
    assert thumbnail["key"] == latest["Frames"][0]["Key"]
    assert thumbnail["time"] == pytest.approx(record_time(latest))
    fetched = httpx.get(thumbnail["url"], timeout=10)
    assert fetched.status_code == 200 and fetched.content[:2] == b"\xff\xd8"
    assert fetched.content == stack.client("s3").get_object(
        Bucket=BUCKET, Key=thumbnail["key"])["Body"].read()


def test_events_across_cameras_and_the_frames_around_one(world, client):
    _stack, records, _server = world
    everything = client.get("/events").json()
    assert [e["event_id"] for e in everything["events"]] == [
        e["event_id"] for e in client.get(f"/cameras/{stream_of(records)}/events").json()[
            "events"]]
    dwell = client.get("/events", params={"type": "dwell"}).json()["events"]
    [ended] = [e for e in dwell if e["status"] == "ended"]
    around = client.get(f"/events/{ended['event_id']}/frames", params={"seconds": 1}).json()
    frames = [r for r in records if r["RecordType"] == "Frame"
              and ended["start_time"] - 1 <= record_time(r) <= ended["end_time"] + 1]
    assert [f["record_id"] for f in around["frames"]] == [r["RecordId"] for r in frames]
    tracked = [p for f in around["frames"] for p in f["persons"] if p["TrackId"] is not None]
    assert tracked and all(set(p["BoundingBox"]) == {"Left", "Top", "Width", "Height"}
                           for p in tracked)
    assert any(f["image"] and f["image"]["url"] for f in around["frames"])
    assert client.get(f"/events/{ended['event_id']}/frames",
                      params={"seconds": 90}).status_code == 400


def test_per_minute_counts_of_a_camera(world, client):
    _stack, records, _server = world
    frames = [r for r in records if r["RecordType"] == "Frame"]
    counts = client.get(f"/cameras/{stream_of(records)}/counts").json()
    assert sum(m["frames"] for m in counts["minutes"]) == len(frames)
    assert sum(m["persons"] for m in counts["minutes"]) == sum(len(r["Persons"]) for r in frames)
    empty = client.get(f"/cameras/{stream_of(records)}/counts",
                       params={"from": 10_000, "to": 20_000}).json()
    assert empty["minutes"] == []
    assert client.get("/cameras/nobody/counts").status_code == 404


def test_an_object_in_a_folder_has_no_url(world, client, dsn):
    _stack, records, _server = world
    record = dict(next(r for r in records if r["RecordType"] == "Event"))
    record.update(EventId=str(uuid.uuid4()), RecordId=str(uuid.uuid4()),
                  Highlight={"Path": "events/x/highlight.jpg"})
    record.pop("Clip")
    with psycopg.connect(dsn, autocommit=True) as conn:
        store.apply(conn, [record])
    event = client.get(f"/events/{record['EventId']}").json()
    assert event["highlight"] == {"bucket": None, "key": "events/x/highlight.jpg", "url": None,
                                  "url_expires_at": None}
    assert event["clip"] is None


@pytest.mark.parametrize("query, parameter", [
    ({"from": "yesterday"}, "from"),
    ({"from": "nan"}, "from"),
    ({"to": "2024-13-01T00:00:00Z"}, "to"),
    ({"from": "20", "to": "10"}, "from"),
    ({"type": "walk"}, "type"),
    ({"limit": "0"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"form": "10"}, "form"),
])
def test_a_bad_parameter_is_400_naming_it(world, client, query, parameter):
    response = client.get(f"/cameras/{stream_of(world[1])}/events", params=query)
    assert response.status_code == 400
    message = response.json()["error"]
    assert message.startswith(f"{parameter}: "), message
    assert "expected" in message or "is after to" in message, message


def test_bad_and_unknown_names_and_ids(client):
    response = client.get("/cameras/bad!name/events")
    assert response.status_code == 400
    assert response.json()["error"].startswith("stream: not a Kinesis Video stream name")
    response = client.get("/cameras/no-such-camera/events")
    assert response.status_code == 404 and "no-such-camera" in response.json()["error"]
    response = client.get("/events/not-a-uuid")
    assert response.status_code == 400 and response.json()["error"].startswith("id: expected")
    unknown = str(uuid.uuid4())
    response = client.get(f"/events/{unknown}")
    assert response.status_code == 404 and unknown in response.json()["error"]
    assert client.get("/nowhere").json() == {"error": "Not Found"}


def serve(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        return cli.main(["serve", *argv]), err.getvalue()


def test_settings_are_checked_before_anything_starts(monkeypatch):
    with pytest.raises(ValueError, match="--url-expiry must be 1..3600"):
        ApiSettings("dbname=x", url_expiry=7200)
    with pytest.raises(ValueError, match="--url-expiry"):
        ApiSettings("dbname=x", url_expiry=0)
    with pytest.raises(ValueError, match="--database-url"):
        ApiSettings("dbname='unclosed")
    settings = ApiSettings("postgresql://bob:pa55word@db.example/events")
    assert "pa55word" not in repr(settings) and "pa55word" not in settings.safe_database_url
    monkeypatch.delenv("KVS_ANALYTICS_DATABASE_URL", raising=False)
    rc, err = serve("--url-expiry", "7200", "--database-url", "dbname=x")
    assert rc == 2 and "--url-expiry must be 1..3600" in err
    rc, err = serve()
    assert rc == 2 and "--database-url" in err and "KVS_ANALYTICS_DATABASE_URL" in err


def test_health_and_a_stopped_database(world, caplog):
    stack = world[0]
    with postgres_server() as server:
        # trust authentication ignores the password: it is here to be kept out of the logs
        settings = ApiSettings(f"{server} password=hunter2-secret", url_expiry=EXPIRY,
                               endpoint_url=stack.endpoints["s3"], region=stack.region)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            migrate(conn)
        client = TestClient(create_app(settings))
        assert client.get("/health").json() == {"status": "ok"}
        assert client.get("/cameras").json() == {"cameras": []}
    with caplog.at_level(logging.ERROR, logger="consumer.api"):
        response = client.get("/health")
        assert response.status_code == 503 and response.json()["status"] == "unavailable"
        response = client.get("/cameras")
        assert response.status_code == 503 and "unavailable" in response.json()["error"]
    assert len(caplog.records) == 2 and "OperationalError" in caplog.text
    assert "hunter2" not in caplog.text and "hunter2" not in response.text


def test_a_real_serve_process_migrates_then_serves(world, tmp_path):
    stack, records, server = world
    url = fresh_database(server, "api_serve") + " password=hunter2-secret"
    log, out = tmp_path / "serve.log", tmp_path / "serve.out"
    environ = {**os.environ, "KVS_ANALYTICS_DATABASE_URL": url,
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as stderr, open(out, "w") as stdout:
        process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "serve", "--port", "0", "--url-expiry", "120",
             "--endpoint-url", stack.endpoints["s3"], "--region", stack.region],
            cwd=REPO, env=environ, stdout=stdout, stderr=stderr)
    try:
        base = _listening_url(process, out, log)
        assert base.startswith("http://127.0.0.1:")
        with psycopg.connect(url, autocommit=True) as conn:  # the process applied migrations
            store.apply(conn, records)
        assert httpx.get(f"{base}health").json() == {"status": "ok"}
        [camera] = httpx.get(f"{base}cameras").json()["cameras"]
        assert camera["events"] == len(events_of(records))
        stream = stream_of(records)
        events = httpx.get(f"{base}cameras/{stream}/events", params={"type": "zone_entry"}
                           ).json()["events"]
        assert [e["event_type"] for e in events] == ["zone_entry"]
        image = httpx.get(events[0]["highlight"]["url"])
        assert image.status_code == 200 and image.content.startswith(b"\xff\xd8")
        assert events[0]["highlight"]["url_expires_at"] <= time.time() + 120
        bad = httpx.get(f"{base}cameras/{stream}/events", params={"to": "soon"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("to: expected")
    finally:
        process.send_signal(signal.SIGTERM)
        rc = process.wait(timeout=15)
    text = log.read_text() + out.read_text()
    assert rc == 0, text
    assert "migrations [1" in text and "hunter2" not in text
    assert "GET /cameras HTTP/1.1\" 200" in text  # uvicorn's access log (on stdout)


def _listening_url(process: subprocess.Popen, out, log) -> str:
    """The URL `serve` prints once it is listening."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        for line in out.read_text().splitlines():
            if line.startswith("serve: listening on "):
                return line.split()[3]
        time.sleep(0.1)
    raise AssertionError(f"serve did not start (rc {process.poll()}): {log.read_text()}")
