"""Query-string and path parameters of the read API, parsed once; a bad one raises BadParameter,
whose message names the parameter, what it got and what was expected (the API's 400 body).

Times (`from`, `to`) are seconds since the epoch (`1700000000`, `1700000000.5`) or ISO 8601
(`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00+02:00`; without a timezone: UTC).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, datetime
from functools import cache

from consumer.formats.s3_layout import check_stream_name

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class BadParameter(ValueError):
    """A parameter the API cannot use: the message is shown to the caller."""


def stream(value: str) -> str:
    try:
        return check_stream_name(value)
    except ValueError as err:
        raise BadParameter(f"stream: {err}") from None


def event_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise BadParameter(f"id: expected an event id (a UUID such as "
                           f"'2f1c...-...'), got {value[:80]!r}") from None


def time(name: str, value: str | None) -> float | None:
    """Seconds since the epoch, or None when the parameter is absent."""
    if value is None:
        return None
    text = value.strip()
    if NUMBER.fullmatch(text):
        seconds = float(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            seconds = math.nan
        else:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp()
    if not math.isfinite(seconds):
        raise BadParameter(f"{name}: expected seconds since the epoch or an ISO 8601 time "
                           f"(e.g. 2024-05-01T12:00:00Z), got {value[:80]!r}")
    return seconds


def only(query, names: tuple[str, ...]):
    """`query` (the request's query parameters) when it holds no other names."""
    for name in query:
        if name not in names:
            raise BadParameter(f"{name}: not a parameter; expected {', '.join(names)}")
    return query


def time_range(query) -> tuple[float | None, float | None]:
    """`from` and `to` (either may be absent), from not after to."""
    start, end = time("from", query.get("from")), time("to", query.get("to"))
    if start is not None and end is not None and start > end:
        raise BadParameter(f"from: {start} is after to ({end})")
    return start, end


def track(value: str | None) -> int | None:
    if value is None:
        return None
    if not re.fullmatch(r"\d{1,12}", value.strip()):
        raise BadParameter(f"track: expected a track id (a whole number), got {value[:80]!r}")
    return int(value)


def seconds(value: str | None, default: float = 5.0, most: float = 60.0) -> float:
    if value is None:
        return default
    number = float(value) if NUMBER.fullmatch(value.strip()) else math.nan
    if not 0 <= number <= most:
        raise BadParameter(f"seconds: expected a number 0..{most:g}, got {value[:80]!r}")
    return number


def event_type(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in event_types():
        raise BadParameter(f"type: expected one of {', '.join(event_types())}, "
                           f"got {value[:80]!r}")
    return value


def limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    number = int(value) if re.fullmatch(r"\d{1,7}", value.strip()) else 0
    if not 1 <= number <= MAX_LIMIT:
        raise BadParameter(f"limit: expected an integer 1..{MAX_LIMIT}, got {value[:80]!r}")
    return number


@cache
def event_types() -> tuple[str, ...]:
    """The EventType enum of the event record's JSON Schema."""
    from consumer.formats.event_records import SCHEMA_PATH
    schema = json.loads(SCHEMA_PATH.read_text())
    return tuple(schema["properties"]["EventType"]["enum"])
