"""Rows of the event store as the API's JSON.

An event: every column, with `event_id` as text, `start_fragment`/`end_fragment` as decimal
strings (~47-digit numbers: JSON numbers would lose digits), times in seconds since the epoch,
`details` (and `record` for one event) as objects, and `highlight`/`clip` as
{bucket, key, url, url_expires_at}: `url` presigned now for `expiry` seconds, and
`url_expires_at` no later than it really expires; both null for an object written to a folder
(no bucket), the whole object null when the event has none.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

EVENT_FIELDS = ("stream", "event_type", "rule", "status", "track_id", "zone", "confidence",
                "start_time", "end_time", "details")


class Presigner:
    """GET URLs for objects in S3, valid `expiry` seconds (boto3 clients are thread-safe)."""

    def __init__(self, client, expiry: int):
        self.client = client
        self.expiry = expiry

    def media(self, bucket: str | None, key: str | None) -> dict | None:
        if key is None:
            return None
        if bucket is None:
            return {"bucket": None, "key": key, "url": None, "url_expires_at": None}
        expires_at = round(time.time() + self.expiry, 3)  # before signing: never later
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.expiry)
        return {"bucket": bucket, "key": key, "url": url, "url_expires_at": expires_at}


def fragment(value: Decimal | int | None) -> str | None:
    return None if value is None else str(int(value))


def event(row: dict[str, Any], presigner: Presigner) -> dict[str, Any]:
    out: dict[str, Any] = {"event_id": str(row["event_id"])}
    out.update((name, row[name]) for name in EVENT_FIELDS)
    out["start_fragment"] = fragment(row["start_fragment"])
    out["end_fragment"] = fragment(row["end_fragment"])
    out["highlight"] = presigner.media(row["highlight_bucket"], row["highlight_key"])
    out["clip"] = presigner.media(row["clip_bucket"], row["clip_key"])
    if "record" in row:
        out["record"] = row["record"]
    return out


def camera(row: dict[str, Any], presigner: Presigner) -> dict[str, Any]:
    """A camera; `thumbnail`: its latest frame JPEG ({bucket, key, url, url_expires_at, time}),
    or null when none was written."""
    out = {key: value for key, value in row.items() if not key.startswith("thumbnail_")}
    out["last_fragment"] = fragment(row["last_fragment"])
    out["thumbnail"] = presigner.media(row["thumbnail_bucket"], row["thumbnail_key"])
    if out["thumbnail"] is not None:
        out["thumbnail"]["time"] = row["thumbnail_time"]
    return out


def frame(row: dict[str, Any], presigner: Presigner) -> dict[str, Any]:
    """A frame record: time, fragment (a decimal string), index, size, persons (TrackId,
    Confidence, BoundingBox as ratios of the picture) and its JPEG, presigned."""
    return {"record_id": str(row["record_id"]), "producer_time": row["producer_time"],
            "fragment": fragment(row["fragment"]), "frame_index": row["frame_index"],
            "width": row["width"], "height": row["height"], "persons": row["persons"],
            "image": presigner.media(row["image_bucket"], row["image_key"])}
