"""The SQL of the read API: plain functions over a psycopg 3 connection, rows as dicts
(`dict_row`), values as the database gives them (UUID, Decimal, float, dict for jsonb).

- `cameras`: every camera with its event count, its progress (stream_progress) and its latest
  minute of data (camera_minutes: one row per stream and minute, read through its primary key).
- `camera_events`: one camera's (or every camera's) events by start time,
  `start <= start_time < end`, through the index events_by_camera_and_time (stream,
  start_time), or events_by_time.
- `event`: one event by id, with the record that last changed it.
- `frames_between`: one camera's frame records in a time range (frames_by_camera_and_time).
- `minute_counts`: frames, persons and events per camera per minute (camera_minutes' key).
- `person_counts`: the mean persons per frame per camera in buckets of any length (frames).
Ids and names are validated by the caller; this module only binds them as parameters.
"""

from __future__ import annotations

import uuid

from psycopg import sql
from psycopg.rows import dict_row

EVENT_COLUMNS = sql.SQL(
    "event_id, stream, event_type, rule, status, track_id, zone, confidence, start_time, "
    "end_time, start_fragment, end_fragment, highlight_bucket, highlight_key, clip_bucket, "
    "clip_key, details")

CAMERAS = """
SELECT c.stream, c.first_seen, c.last_seen,
       (SELECT count(*) FROM events e WHERE e.stream = c.stream) AS events,
       p.last_producer_time, p.last_fragment, p.records,
       extract(epoch FROM m.minute)::double precision AS last_minute,
       m.frames AS last_minute_frames, m.persons AS last_minute_persons,
       f.image_bucket AS thumbnail_bucket, f.image_key AS thumbnail_key,
       f.producer_time AS thumbnail_time
FROM cameras c
LEFT JOIN stream_progress p ON p.stream = c.stream
LEFT JOIN LATERAL (SELECT minute, frames, persons FROM camera_minutes
                   WHERE stream = c.stream ORDER BY minute DESC LIMIT 1) m ON true
LEFT JOIN LATERAL (SELECT image_bucket, image_key, producer_time FROM frames
                   WHERE stream = c.stream AND image_key IS NOT NULL
                   ORDER BY producer_time DESC LIMIT 1) f ON true
ORDER BY c.stream"""


def cameras(conn) -> list[dict]:
    """One dict per camera, by stream name."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(CAMERAS).fetchall()


def has_camera(conn, stream: str) -> bool:
    return conn.execute("SELECT 1 FROM cameras WHERE stream = %s", (stream,)).fetchone() \
        is not None


def cameras_last_seen(conn, stream: str) -> float | None:
    row = conn.execute("SELECT last_seen FROM cameras WHERE stream = %s", (stream,)).fetchone()
    return None if row is None else row[0]


def camera_events(conn, stream: str | None, start: float | None, end: float | None,
                  event_type: str | None, limit: int, zone: str | None = None,
                  track: int | None = None) -> list[dict]:
    """Up to `limit` events of `stream` (None: every camera) with `start <= start_time < end`
    (None: unbounded), of `event_type`, in `zone`, of `track` (None: any), by start time then
    id: through events_by_camera_and_time, or events_by_time for every camera."""
    given = {"stream": stream, "start": start, "end": end, "type": event_type, "zone": zone,
             "track": track}
    conditions = {"stream": "stream = %(stream)s", "start": "start_time >= %(start)s",
                  "end": "start_time < %(end)s", "type": "event_type = %(type)s",
                  "zone": "zone = %(zone)s", "track": "track_id = %(track)s"}
    where = [sql.SQL(conditions[name]) for name, value in given.items() if value is not None]
    query = sql.SQL("SELECT {} FROM events WHERE {} ORDER BY start_time, event_id "
                    "LIMIT %(limit)s").format(EVENT_COLUMNS,
                                              sql.SQL(" AND ").join(where or [sql.SQL("true")]))
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**given, "limit": limit}).fetchall()


def event(conn, event_id: uuid.UUID) -> dict | None:
    """The event with its `record`, or None."""
    query = sql.SQL("SELECT {}, record FROM events WHERE event_id = %s").format(EVENT_COLUMNS)
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, (event_id,)).fetchone()


def ping(conn) -> None:
    """Raises psycopg.Error unless the database answers."""
    conn.execute("SELECT 1").fetchone()


def frames_between(conn, stream: str, start: float, end: float, limit: int) -> list[dict]:
    """Up to `limit` frame records of `stream` with `start <= producer_time <= end`, by time."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT record_id, producer_time, fragment, frame_index, width, height, persons,"
            " image_bucket, image_key FROM frames WHERE stream = %s"
            " AND producer_time BETWEEN %s AND %s ORDER BY producer_time LIMIT %s",
            (stream, start, end, limit)).fetchall()


def minute_counts(conn, start: float, end: float, stream: str | None = None) -> list[dict]:
    """Per camera (or `stream` only) per minute in [start, end): frames, persons, events."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT stream, extract(epoch FROM minute)::double precision AS minute, frames,"
            " persons, events FROM camera_minutes"
            " WHERE minute >= to_timestamp(%(start)s) AND minute < to_timestamp(%(end)s)"
            " AND (%(stream)s::text IS NULL OR stream = %(stream)s) ORDER BY stream, minute",
            {"start": start, "end": end, "stream": stream}).fetchall()


def camera_zones(conn, stream: str) -> list[str]:
    """The zones `stream`'s events name."""
    return [row[0] for row in conn.execute(
        "SELECT DISTINCT zone FROM events WHERE stream = %s AND zone IS NOT NULL ORDER BY 1",
        (stream,))]


def person_counts(conn, start: float, end: float, bucket: float) -> list[dict]:
    """Per camera, per `bucket` seconds in [start, end): the bucket's start and the mean number
    of persons in its frames (frames_by_time)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT stream, floor(producer_time / %(bucket)s) * %(bucket)s AS time,"
            " avg(jsonb_array_length(persons))::double precision AS persons FROM frames"
            " WHERE producer_time >= %(start)s AND producer_time < %(end)s"
            " GROUP BY 1, 2 ORDER BY 1, 2",
            {"start": start, "end": end, "bucket": bucket}).fetchall()


def data_extent(conn) -> tuple[float | None, float | None]:
    """The first and last producer times the store has heard from any camera."""
    return tuple(conn.execute("SELECT min(first_seen), max(last_seen) FROM cameras").fetchone())
