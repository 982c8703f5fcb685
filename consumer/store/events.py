"""Records into the event store: a batch in one transaction, idempotent on RecordId.

Records come as the data stream holds them (bytes of JSON) or parsed. For each record not
applied before (its RecordId inserted into `applied_records`; a record id already there makes
the record a no-op, so a replayed shard writes nothing twice):
- its camera (stream name, or a batch file's video id) is created or its seen-times widened;
- a frame record adds one frame and its persons to the camera's minute (`camera_minutes`), and
  is kept in `frames` (its persons' boxes and tracks, its JPEG's key; not the landmarks);
- an event record creates or updates its event (one row per EventId: a lasting event's `ended`
  record closes the row its `started` one opened, in whichever order they come), and counts
  once in its minute;
- the camera's progress (latest producer time and fragment, records applied) moves forward.
A record the store cannot file (not JSON, not a frame or event record, no RecordId or
provenance, an event without its fields) goes to `rejected_records` with the reason, in the
same transaction: one bad record never blocks the shard behind it, and is not lost either.
The caller checkpoints its shard only after `apply` returned: the transaction has committed.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

UPSERT_CAMERA = """
INSERT INTO cameras (stream, first_seen, last_seen) VALUES (%(stream)s, %(time)s, %(time)s)
ON CONFLICT (stream) DO UPDATE SET first_seen = least(cameras.first_seen, EXCLUDED.first_seen),
                                   last_seen = greatest(cameras.last_seen, EXCLUDED.last_seen)"""
ADD_TO_MINUTE = """
INSERT INTO camera_minutes (stream, minute, frames, persons, events)
VALUES (%(stream)s, date_trunc('minute', to_timestamp(%(time)s)), %(frames)s, %(persons)s,
        %(events)s)
ON CONFLICT (stream, minute) DO UPDATE SET frames = camera_minutes.frames + EXCLUDED.frames,
    persons = camera_minutes.persons + EXCLUDED.persons,
    events = camera_minutes.events + EXCLUDED.events"""
UPSERT_EVENT = """
INSERT INTO events (event_id, stream, event_type, rule, status, track_id, zone, confidence,
                    start_time, end_time, start_fragment, end_fragment, highlight_bucket,
                    highlight_key, clip_bucket, clip_key, details, record)
VALUES (%(event_id)s, %(stream)s, %(event_type)s, %(rule)s, %(status)s, %(track_id)s,
        %(zone)s, %(confidence)s, %(start_time)s, %(end_time)s, %(start_fragment)s,
        %(end_fragment)s, %(highlight_bucket)s, %(highlight_key)s, %(clip_bucket)s,
        %(clip_key)s, %(details)s, %(record)s)
ON CONFLICT (event_id) DO UPDATE SET
    status = CASE WHEN events.status = 'ended' THEN events.status ELSE EXCLUDED.status END,
    end_time = CASE WHEN EXCLUDED.status = 'ended' OR events.end_time IS NULL
                    THEN EXCLUDED.end_time ELSE events.end_time END,
    end_fragment = CASE WHEN EXCLUDED.status = 'ended' OR events.end_fragment IS NULL
                        THEN EXCLUDED.end_fragment ELSE events.end_fragment END,
    details = events.details || EXCLUDED.details,
    record = CASE WHEN events.status = 'ended' THEN events.record ELSE EXCLUDED.record END"""
ADVANCE = """
INSERT INTO stream_progress (stream, last_producer_time, last_fragment, records)
VALUES (%(stream)s, %(time)s, %(fragment)s, 1)
ON CONFLICT (stream) DO UPDATE SET
    last_producer_time = greatest(stream_progress.last_producer_time,
                                  EXCLUDED.last_producer_time),
    last_fragment = greatest(stream_progress.last_fragment, EXCLUDED.last_fragment),
    records = stream_progress.records + 1, updated_at = now()"""
ADD_FRAME = """
INSERT INTO frames (record_id, stream, producer_time, fragment, frame_index, width, height,
                    persons, image_bucket, image_key)
VALUES (%(record_id)s, %(stream)s, %(producer_time)s, %(fragment)s, %(frame_index)s, %(width)s,
        %(height)s, %(persons)s, %(image_bucket)s, %(image_key)s)"""
REJECT = """
INSERT INTO rejected_records (digest, reason, data) VALUES (%s, %s, %s)
ON CONFLICT (digest) DO NOTHING"""
MAX_REJECTED_BYTES = 64 * 1024
EVENT_FIELDS = ("EventId", "EventType", "Rule", "Status", "StartTimestamp",
                "StartFragmentNumber")


class BadRecord(ValueError):
    """A record the store cannot file (no RecordId, no stream, an unknown type)."""


@dataclass
class Applied:
    records: int = 0  # applied now
    duplicates: int = 0  # applied before: nothing written
    rejected: int = 0  # could not be filed: in rejected_records
    frames: int = 0
    events: int = 0  # event records applied (a lasting event has two)

    def add(self, other: Applied) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def apply(conn, records: Iterable[dict | bytes]) -> Applied:
    """File `records` in one transaction (all or nothing: a database error leaves nothing
    written, and the caller retries or replays the batch)."""
    applied = Applied()
    rows, rejects = [], []
    for record in records:
        try:
            rows.append(_row(_parsed(record)))
        except BadRecord as bad:
            rejects.append((record, str(bad)))
    with conn.transaction():
        for record, reason in rejects:
            data = record if isinstance(record, bytes) else json.dumps(record).encode()
            conn.execute(REJECT, (hashlib.sha256(data).hexdigest(), reason,
                                  data[:MAX_REJECTED_BYTES].decode("utf-8", "replace")))
            applied.rejected += 1
        for record, facts in rows:
            inserted = conn.execute(
                "INSERT INTO applied_records (record_id) VALUES (%s) ON CONFLICT DO NOTHING",
                (facts["record_id"],)).rowcount
            if not inserted:
                applied.duplicates += 1
                continue
            applied.records += 1
            conn.execute(UPSERT_CAMERA, facts)
            if record["RecordType"] == "Frame":
                applied.frames += 1
                conn.execute(ADD_TO_MINUTE, {**facts, "frames": 1,
                                             "persons": len(record.get("Persons") or []),
                                             "events": 0})
                conn.execute(ADD_FRAME, _frame(record, facts))
            else:
                applied.events += 1
                conn.execute(UPSERT_EVENT, _event(record, facts))
                if record.get("Status") in ("instant", "started"):
                    conn.execute(ADD_TO_MINUTE, {**facts, "frames": 0, "persons": 0,
                                                 "events": 1})
            conn.execute(ADVANCE, facts)
    return applied


def _parsed(record: dict | bytes):
    if not isinstance(record, bytes):
        return record
    try:
        return json.loads(record)
    except ValueError:
        raise BadRecord(f"not JSON: {record[:80]!r}") from None


def _row(record) -> tuple[dict, dict]:
    if not isinstance(record, dict) or record.get("RecordType") not in ("Frame", "Event"):
        raise BadRecord(f"not a frame or event record: {str(record)[:80]}")
    where = record.get("InputInformation")
    origin = (where.get("KinesisVideo") or where.get("File")) if isinstance(where, dict) else None
    record_id = record.get("RecordId")
    if not isinstance(origin, dict) or not _is_uuid(record_id):
        raise BadRecord(f"record {record_id!r}: no RecordId (a UUID) or InputInformation")
    if record["RecordType"] == "Frame":
        for name in ("Persons", "Frames"):
            items = record.get(name) or []
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise BadRecord(f"frame record {record_id}: {name} is not a list of objects")
    if record["RecordType"] == "Event":
        missing = [name for name in EVENT_FIELDS if record.get(name) is None]
        if missing or not _is_uuid(record["EventId"]):
            raise BadRecord(f"event record {record_id}: no {', '.join(missing) or 'UUID EventId'}")
    try:
        facts = {"record_id": record_id, "stream": origin.get("StreamName") or origin["VideoId"],
                 "time": (float(origin["ProducerTimestamp"])
                          + float(origin.get("FrameOffsetInSeconds", 0))),
                 "fragment": int(origin["FragmentNumber"])}
    except (KeyError, TypeError, ValueError) as err:
        raise BadRecord(f"record {record_id}: its InputInformation lacks {err}") from None
    return record, facts


def _is_uuid(value) -> bool:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return False
    return True


def _frame(record: dict, facts: dict) -> dict:
    frame = record.get("Frame") if isinstance(record.get("Frame"), dict) else {}
    origin = record["InputInformation"]
    image = next(iter(record.get("Frames") or []), {})
    persons = [{key: person.get(key) for key in ("TrackId", "Confidence", "BoundingBox")}
               for person in record.get("Persons") or []]
    return {"record_id": facts["record_id"], "stream": facts["stream"],
            "producer_time": facts["time"],
            "fragment": facts["fragment"],
            "frame_index": (origin.get("KinesisVideo") or origin.get("File"))
            .get("FrameIndex"),
            "width": frame.get("Width"), "height": frame.get("Height"),
            "persons": json.dumps(persons), "image_bucket": image.get("Bucket"),
            "image_key": image.get("Key") or image.get("Path")}


def _event(record: dict, facts: dict) -> dict:
    details = record.get("Details") or {}
    highlight = record.get("Highlight") or {}
    clip = record.get("Clip") or {}
    return {
        "event_id": record["EventId"], "stream": facts["stream"],
        "event_type": record["EventType"], "rule": record["Rule"], "status": record["Status"],
        "track_id": record.get("TrackId"), "zone": details.get("zone"),
        "confidence": record.get("Confidence"), "start_time": record["StartTimestamp"],
        "end_time": record.get("EndTimestamp"),
        "start_fragment": int(record["StartFragmentNumber"]),
        "end_fragment": (int(record["EndFragmentNumber"])
                         if record.get("EndFragmentNumber") else None),
        "highlight_bucket": highlight.get("Bucket"),
        "highlight_key": highlight.get("Key") or highlight.get("Path"),
        "clip_bucket": clip.get("Bucket"), "clip_key": clip.get("Key") or clip.get("Path"),
        "details": json.dumps(details), "record": json.dumps(record),
    }
