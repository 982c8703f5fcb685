"""The Kinesis Data Streams record for an event (zone entry/exit, line crossing, dwell, count,
fall, face match), beside the per-frame records on the same data stream and shaped in their conventions
(`consumer.formats.records`): decimal-string fragment numbers, seconds since the epoch, percentages.

`RecordType` is "Event" (frame records say "Frame"). An instant event gives one record with
`Status` "instant"; a lasting one (dwell, count) gives "started" (EndTimestamp null) and later
"ended", both with the same `EventId`. `RecordId` is per record: uuid5(EventId, Status).
`InputInformation.KinesisVideo` is the frame that raised the event, so the record joins back to
the video; `Highlight` and `Clip` name the S3 objects and carry presigned GET URLs that expire
at `UrlExpiresAt`. Schema: `consumer/formats/schema/event_record.schema.json`.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from consumer.formats.records import (
    PERCENT_DIGITS,
    SCHEMA_VERSION,
    TIME_DIGITS,
    _num,
    consumer_version,
    input_information,
)
from processors.events import Event
from processors.frames import FrameSource

SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "event_record.schema.json"
LASTING = frozenset({"dwell", "count"})


def status(event: Event) -> str:
    if event.end_time is None:
        return "started"
    return "ended" if event.type in LASTING else "instant"


def event_record(event: Event, source: FrameSource, processor: dict[str, str], *,
                 media: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """`processor` is {"Name", "Model", "ModelVersion"}; `media` maps "Highlight"/"Clip" to
    {"Bucket", "Key", "Url", "UrlExpiresAt"}."""
    state = status(event)
    record: dict[str, Any] = {
        "RecordType": "Event",
        "RecordId": str(uuid.uuid5(uuid.UUID(event.event_id), state)),
        "SchemaVersion": SCHEMA_VERSION,
        "EventId": event.event_id,
        "EventType": event.type,
        "Rule": event.rule,
        "Status": state,
        "TrackId": event.track_id,
        "StartTimestamp": _num(event.start_time, TIME_DIGITS, "StartTimestamp"),
        "EndTimestamp": (None if event.end_time is None
                         else _num(event.end_time, TIME_DIGITS, "EndTimestamp")),
        "StartFragmentNumber": str(event.start_fragment),
        "EndFragmentNumber": None if event.end_fragment is None else str(event.end_fragment),
        "Confidence": _num(min(1.0, max(0.0, event.confidence)) * 100, PERCENT_DIGITS,
                           "Confidence"),
        "Details": dict(event.details),
        "InputInformation": input_information(source),
        "Processor": {**processor, "ConsumerVersion": consumer_version()},
    }
    for name, location in (media or {}).items():
        record[name] = dict(location)
    return record
