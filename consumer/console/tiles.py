"""A camera's tile on the cameras page: the store's row (consumer.api.render.camera), its
lease (owner, lag) when the console reads the lease table, and a health badge:

- with a lease table: `unowned` (no worker holds the stream), `stale` (its lease not renewed
  for STALE_SECONDS: the owner may be gone), `behind` (checkpoint more than BEHIND_SECONDS
  behind the live edge), else `live`;
- without one (or a stream it does not list): `live` when the store heard from the camera
  within QUIET_SECONDS, else `quiet`.
"""

from __future__ import annotations

from typing import Any

STALE_SECONDS = 30.0
BEHIND_SECONDS = 60.0
QUIET_SECONDS = 120.0
BAD = ("unowned", "stale")


def tile(camera: dict[str, Any], lease: dict[str, Any] | None, now: float) -> dict[str, Any]:
    out = dict(camera)
    out["owner"] = lease["owner"] if lease else None
    out["lag_seconds"] = lease["lag_seconds"] if lease else None
    out["frames_per_minute"] = camera.get("last_minute_frames")
    out["health"] = health(camera, lease, now)
    return out


def health(camera: dict[str, Any], lease: dict[str, Any] | None, now: float) -> str:
    if lease is not None:
        if not lease["owner"]:
            return "unowned"
        renewed = lease["seconds_since_renewal"]
        if renewed is not None and renewed > STALE_SECONDS:
            return "stale"
        lag = lease["lag_seconds"]
        return "behind" if lag is not None and lag > BEHIND_SECONDS else "live"
    last = camera.get("last_seen")
    return "live" if last is not None and now - last <= QUIET_SECONDS else "quiet"
