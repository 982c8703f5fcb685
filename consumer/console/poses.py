"""The pose sequence objects of a track's event: the consumer writes one Parquet object per
fragment (`{fragment}.parquet`) or per window (`{YYYYMMDDTHHMMSSZ}-{N}s.parquet`) under
`{prefix}/poses/stream=/date=/` (consumer.formats.s3_layout); those holding the event's frames
are the fragments from its start to its end fragment, or the windows overlapping its times."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from consumer.formats.s3_layout import partition

WINDOW = re.compile(r"(\d{8}T\d{6}Z)-([0-9.]+)s\.parquet")
FRAGMENT = re.compile(r"(\d+)\.parquet")
MOST = 20  # objects listed per event page


def pose_keys(s3, bucket: str, prefix: str, stream: str, event: dict) -> list[str]:
    """Keys of the pose objects holding `event`'s frames (API-rendered event: times, fragment
    numbers as strings), in order."""
    start, end = event["start_time"], event["end_time"] or event["start_time"]
    first = int(event["start_fragment"])
    last = int(event["end_fragment"] or event["start_fragment"])
    keys = []
    for day in sorted({_day(start), _day(end)}):
        folder = partition(prefix, "poses", stream, day) + "/"
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder)
        for item in (item for page in pages for item in page.get("Contents", [])):
            name = item["Key"][len(folder):]
            if (match := FRAGMENT.fullmatch(name)) and first <= int(match[1]) <= last:
                keys.append(item["Key"])
            elif match := WINDOW.fullmatch(name):
                begins = datetime.strptime(match[1], "%Y%m%dT%H%M%SZ").replace(
                    tzinfo=UTC).timestamp()
                if begins <= end and start < begins + float(match[2]):
                    keys.append(item["Key"])
    return sorted(keys)[:MOST]


def _day(seconds: float) -> float:
    return seconds - seconds % 86400
