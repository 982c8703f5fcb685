"""The event store on a real PostgreSQL server (Debian's, started for the test): the real
records of a recorded video (batch mode over the speaker capture, with a zone and a dwell rule)
filed once each, replays writing nothing, a lasting event's two records in either order, bad
records kept aside with their reasons, and a failed transaction leaving nothing behind."""

from __future__ import annotations

import json

import psycopg
import pytest

from consumer.store import events as store
from consumer.store.schema import migrate, migrations
from tests.batch_helpers import speaker_records_batch
from tests.postgres_helpers import fresh_database, postgres_server


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    """The frame and event records of the first 20 s of the speaker capture."""
    tmp = tmp_path_factory.mktemp("store")
    speaker_records_batch(tmp)
    [path] = (tmp / "out" / "records").rglob("records.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def server():
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture
def conn(server):
    with psycopg.connect(fresh_database(server), autocommit=True) as connection:
        migrate(connection)
        yield connection


def dump(conn) -> dict:
    return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
            for table in ("cameras", "events", "camera_minutes")}


def test_migrations_apply_once(conn):
    assert migrate(conn) == []  # the fixture applied them
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    assert versions == [version for version, _name, _sql in migrations()]


def test_every_record_is_filed_once_and_a_replay_writes_nothing(conn, records):
    frames = [r for r in records if r["RecordType"] == "Frame"]
    event_records = [r for r in records if r["RecordType"] == "Event"]
    assert event_records, "the capture should raise zone and dwell events"
    applied = store.apply(conn, records)
    assert (applied.records, applied.duplicates, applied.frames, applied.events) == (
        len(records), 0, len(frames), len(event_records))
    [(stream,)] = conn.execute("SELECT stream FROM cameras").fetchall()
    assert stream == frames[0]["InputInformation"]["File"]["VideoId"]
    [(frame_count, person_count, event_count)] = conn.execute(
        "SELECT sum(frames), sum(persons), sum(events) FROM camera_minutes").fetchall()
    assert frame_count == len(frames)
    assert person_count == sum(len(r["Persons"]) for r in frames)
    assert event_count == sum(r["Status"] in ("instant", "started") for r in event_records)
    assert conn.execute("SELECT count(*), sum(jsonb_array_length(persons)), count(image_key)"
                        " FROM frames").fetchone() == (
        len(frames), sum(len(r["Persons"]) for r in frames),
        sum(bool(r.get("Frames")) for r in frames))
    ids = {r["EventId"] for r in event_records}
    rows = dict(conn.execute("SELECT event_id::text, status FROM events").fetchall())
    assert set(rows) == ids
    lasting = {r["EventId"] for r in event_records if r["Status"] == "ended"}
    assert lasting and all(rows[event] == "ended" for event in lasting)
    [(progress,)] = conn.execute("SELECT records FROM stream_progress").fetchall()
    assert progress == len(records)
    before = dump(conn)
    again = store.apply(conn, records)  # a replayed shard
    assert (again.records, again.duplicates) == (0, len(records))
    assert dump(conn) == before


def test_a_lasting_event_closes_whichever_record_comes_first(conn, records):
    ended = next(r for r in records if r["RecordType"] == "Event" and r["Status"] == "ended")
    started = next(r for r in records if r.get("EventId") == ended["EventId"]
                   and r["Status"] == "started")
    store.apply(conn, [ended])
    store.apply(conn, [started])
    [(status, start, end)] = conn.execute(
        "SELECT status, start_time, end_time FROM events").fetchall()
    assert status == "ended" and start == started["StartTimestamp"]
    assert end == ended["EndTimestamp"] and end > start


def test_a_bad_record_is_kept_aside_and_the_rest_filed(conn, records):
    bad = [b"not json", {"RecordType": "Frame", "RecordId": "x"},
           {**records[0], "RecordId": None},
           {**next(r for r in records if r["RecordType"] == "Event"), "EventId": None},
           {**(frame := next(r for r in records if r["RecordType"] == "Frame")),
            "Persons": "none"}]
    applied = store.apply(conn, [*records[:5], *bad])
    assert (applied.records, applied.rejected) == (5, 5)
    reasons = [row[0] for row in conn.execute("SELECT reason FROM rejected_records")]
    assert sorted(reasons) == sorted([
        "not JSON: b'not json'",
        "record 'x': no RecordId (a UUID) or InputInformation",
        "record None: no RecordId (a UUID) or InputInformation",
        f"event record {bad[3]['RecordId']}: no EventId",
        f"frame record {frame['RecordId']}: Persons is not a list of objects"])
    again = store.apply(conn, bad)  # replayed: nothing added
    assert again.rejected == 5
    assert conn.execute("SELECT count(*) FROM rejected_records").fetchone() == (5,)
    assert conn.execute("SELECT count(*) FROM applied_records").fetchone() == (5,)


def test_a_failed_transaction_leaves_nothing_behind(conn, records):
    conn.execute("ALTER TABLE events ADD CONSTRAINT no_events CHECK (false)")
    with pytest.raises(psycopg.errors.CheckViolation):
        store.apply(conn, records)
    assert conn.execute("SELECT count(*) FROM applied_records").fetchone() == (0,)
    assert dump(conn) == {"cameras": [], "events": [], "camera_minutes": []}
