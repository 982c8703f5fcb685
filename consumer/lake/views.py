"""DuckDB views over a lake folder, and named reports.

Views (each empty, with its columns, when the lake has nothing of its kind yet):
- `frames`: one row per analysed frame: stream, date, record_id, fragment_number (a decimal
  string), frame_index, producer_time (seconds since the epoch), width, height, persons.
- `persons`: one row per person per frame: the frame's keys, track_id, confidence (0-100), and
  the box (left, top, width, height, ratios of the image).
- `events`: one row per event record: stream, date, event_id, event_type, rule, status, track_id,
  start_time, end_time, confidence, details (JSON), highlight_key, clip_key.
- `poses`: the pose sequences' rows as stored (consumer.formats.pose_sequence), with stream and
  date from their partitions.
Records of recorded files (batch mode) appear under their video id as the stream.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

RECORDS = "records/type={kind}/*/*/*.json.gz"
POSES = "poses/*/*/*.parquet"

# through JSON: a folder of batch records only has no KinesisVideo in its inferred struct
_SOURCE = ("coalesce(to_json(InputInformation) ->> '$.KinesisVideo.{field}', "
           "to_json(InputInformation) ->> '$.File.{field}')")

FRAMES = f"""
SELECT stream, date, CAST(RecordId AS VARCHAR) AS record_id,
       {_SOURCE.format(field='FragmentNumber')} AS fragment_number,
       CAST({_SOURCE.format(field='FrameIndex')} AS BIGINT) AS frame_index,
       Frame.ProducerTime AS producer_time, Frame.Width AS width, Frame.Height AS height,
       len(Persons) AS persons, Persons AS person_list
FROM read_json('{{glob}}', format='newline_delimited', hive_partitioning=true,
               union_by_name=true)"""
FRAMES_EMPTY = """
SELECT NULL::VARCHAR AS stream, NULL::DATE AS date, NULL::VARCHAR AS record_id,
       NULL::VARCHAR AS fragment_number, NULL::BIGINT AS frame_index,
       NULL::DOUBLE AS producer_time, NULL::BIGINT AS width, NULL::BIGINT AS height,
       NULL::BIGINT AS persons,
       NULL::STRUCT("TrackId" BIGINT, "Confidence" DOUBLE,
                    "BoundingBox" STRUCT("Left" DOUBLE, "Top" DOUBLE, "Width" DOUBLE,
                                         "Height" DOUBLE))[] AS person_list
WHERE false"""
PERSONS = """
SELECT stream, date, record_id, fragment_number, frame_index, producer_time,
       p.TrackId AS track_id, p.Confidence AS confidence, p.BoundingBox.Left AS "left",
       p.BoundingBox.Top AS top, p.BoundingBox.Width AS width, p.BoundingBox.Height AS height
FROM (SELECT *, unnest(person_list) AS p FROM frames_all)"""
EVENTS = f"""
SELECT stream, date, CAST(EventId AS VARCHAR) AS event_id, EventType AS event_type, Rule AS rule,
       Status AS status, TrackId AS track_id, StartTimestamp AS start_time,
       EndTimestamp AS end_time, Confidence AS confidence, to_json(Details) AS details,
       Highlight::JSON ->> '$.Key' AS highlight_key, Clip::JSON ->> '$.Key' AS clip_key,
       {_SOURCE.format(field='FragmentNumber')} AS fragment_number
FROM read_json('{{glob}}', format='newline_delimited', hive_partitioning=true,
               union_by_name=true)"""
EVENTS_EMPTY = """
SELECT NULL::VARCHAR AS stream, NULL::DATE AS date, NULL::VARCHAR AS event_id,
       NULL::VARCHAR AS event_type, NULL::VARCHAR AS rule, NULL::VARCHAR AS status,
       NULL::BIGINT AS track_id, NULL::DOUBLE AS start_time, NULL::DOUBLE AS end_time,
       NULL::DOUBLE AS confidence, NULL::JSON AS details, NULL::VARCHAR AS highlight_key,
       NULL::VARCHAR AS clip_key, NULL::VARCHAR AS fragment_number
WHERE false"""
POSES_VIEW = """
SELECT * FROM read_parquet('{glob}', hive_partitioning=true, union_by_name=true)"""
POSES_EMPTY = """
SELECT NULL::VARCHAR AS stream, NULL::DATE AS date, NULL::VARCHAR AS stream_name,
       NULL::BIGINT AS track_id, NULL::DOUBLE AS producer_time WHERE false"""

REPORTS = {
    "events-per-hour": (
        "events per camera per hour",
        """SELECT stream, date_trunc('hour', to_timestamp(start_time)) AS hour, event_type,
                  count(*) AS events
           FROM events WHERE status IN ('instant', 'started')
           GROUP BY ALL ORDER BY stream, hour, event_type"""),
    "dwell-per-zone": (
        "dwell time per zone: dwell events and how long each lasted",
        """SELECT stream, details ->> '$.zone' AS zone, count(*) AS dwells,
                  round(sum(end_time - start_time), 1) AS seconds,
                  round(max(end_time - start_time), 1) AS longest
           FROM events WHERE event_type = 'dwell' AND status = 'ended'
           GROUP BY ALL ORDER BY stream, zone"""),
    "persons-over-time": (
        "person count over time: per camera per minute, the mean and the most in a frame",
        """SELECT stream, date_trunc('minute', to_timestamp(producer_time)) AS minute,
                  round(avg(persons), 2) AS mean_persons, max(persons) AS most, count(*) AS frames
           FROM frames GROUP BY ALL ORDER BY stream, minute"""),
    "track-poses": (
        "the pose sequence of one track ($stream, $track): one row per frame it was seen in",
        """SELECT producer_time, fragment_number, frame_index, confidence
           FROM poses WHERE stream = $stream AND track_id = $track
           ORDER BY producer_time"""),
}


def open_lake(root: str | Path) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection (in memory) with the views over the lake folder `root`."""
    root = Path(root)
    con = duckdb.connect()
    frames = root / RECORDS.format(kind="Frame")
    events = root / RECORDS.format(kind="Event")
    poses = root / POSES
    con.execute("CREATE VIEW frames_all AS " + (
        FRAMES.format(glob=_quoted(frames)) if _any(root, frames) else FRAMES_EMPTY))
    con.execute("CREATE VIEW frames AS SELECT * EXCLUDE (person_list) FROM frames_all")
    con.execute("CREATE VIEW persons AS " + PERSONS)
    con.execute("CREATE VIEW events AS " + (
        EVENTS.format(glob=_quoted(events)) if _any(root, events) else EVENTS_EMPTY))
    con.execute("CREATE VIEW poses AS " + (
        POSES_VIEW.format(glob=_quoted(poses)) if _any(root, poses) else POSES_EMPTY))
    return con


def _quoted(path: Path) -> str:
    """The path inside a SQL string literal."""
    return str(path).replace("'", "''")


def _any(root: Path, pattern: Path) -> bool:
    return any(root.glob(str(pattern.relative_to(root))))
