"""The console's pages, rendered on the server from the event store (the read API's queries
and rendering: the same JSON shapes go to the templates), with presigned URLs made per page.

    /console/                      cameras: a tile per camera, updated every refresh_seconds
                                   from /console/tiles.json (no reload)
    /console/cameras/{stream}      its timeline: ?span=hour|day&end=&type=&zone=&track=
    /console/events/{id}           one event: highlight with the rule's geometry, clip, record,
                                   its pose sequence objects
    /console/search                ?from=&to=&type=: events across cameras, and the person
                                   count per camera over that time as a chart
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse
from starlette.templating import Jinja2Templates

from consumer.api import params, queries, render
from consumer.console.chart import person_count_chart
from consumer.console.fleet import FleetReader
from consumer.console.geometry import overlay_svg, rule_shapes
from consumer.console.poses import pose_keys
from consumer.console.tiles import tile
from consumer.console.timeline import SPANS, timeline_svg

TIMELINE_EVENTS = 500
SEARCH_EVENTS = 200
SEARCH_SPAN = 3600.0  # default: the hour before the latest data
CHART_POINTS = 120  # points per camera on the person-count chart
FRAMES_SPAN = 6 * 3600.0  # longer periods are charted from the per-minute counts


@dataclass(frozen=True)
class ConsoleOptions:
    refresh_seconds: float = 5.0
    events: Any = None  # consumer.config_events.Events: zones and lines to draw; None: none
    fleet: FleetReader | None = None  # the lease table; None: no owners or lag
    s3_prefix: str = ""  # outputs.s3.prefix: where the pose sequences are


class Pages:
    def __init__(self, options: ConsoleOptions, templates: Jinja2Templates, s3_client):
        self.options = options
        self.templates = templates
        self.s3 = s3_client

    def _render(self, request: Request, name: str, **context) -> Any:
        context["logged_in"] = getattr(request.state, "logged_in", False)
        response = self.templates.TemplateResponse(request, name, context)
        response.headers["Cache-Control"] = "no-store"  # presigned URLs inside
        return response

    def _tiles(self, request: Request) -> list[dict]:
        with request.app.state.database() as conn:
            rows = queries.cameras(conn)
        presigner = request.app.state.presigner
        fleet = self.options.fleet.view() if self.options.fleet else None
        now = time.time()
        return [tile(render.camera(row, presigner),
                     fleet.streams.get(row["stream"]) if fleet else None, now)
                for row in rows]

    def cameras(self, request: Request):
        fleet = self.options.fleet.view() if self.options.fleet else None
        return self._render(request, "cameras.html", tiles=self._tiles(request),
                            refresh_seconds=self.options.refresh_seconds,
                            fleet_error=fleet.error if fleet else None,
                            fleet_table=self.options.fleet.table if self.options.fleet else None)

    def tiles_json(self, request: Request) -> JSONResponse:
        return JSONResponse({"tiles": self._tiles(request)},
                            headers={"Cache-Control": "no-store"})

    def timeline(self, request: Request):
        stream = params.stream(request.path_params["stream"])
        query = params.only(request.query_params, ("span", "end", "type", "zone", "track"))
        span = query.get("span", "hour")
        if span not in SPANS:
            raise params.BadParameter(f"span: expected hour or day, got {span[:20]!r}")
        event_type = params.event_type(query.get("type") or None)
        zone = query.get("zone") or None
        track = params.track(query.get("track") or None)
        end = params.time("end", query.get("end") or None)
        with request.app.state.database() as conn:
            last_seen = queries.cameras_last_seen(conn, stream)
            if last_seen is None:
                raise HTTPException(404, f"stream: no camera {stream!r} in the event store")
            if end is None:
                end = last_seen - last_seen % 60 + 60  # the minute after the latest data
            start = end - SPANS[span]
            rows = queries.camera_events(conn, stream, start, end, event_type, TIMELINE_EVENTS,
                                         zone=zone, track=track)
            zones = queries.camera_zones(conn, stream)
        presigner = request.app.state.presigner
        events = [render.event(row, presigner) for row in rows]
        return self._render(
            request, "timeline.html", stream=stream, events=events, span=span, start=start,
            end=end, filters={"type": event_type, "zone": zone, "track": track},
            event_types=params.event_types(), zones=zones,
            axis=timeline_svg(events, start, end, span), utc=_utc)

    def event(self, request: Request):
        event_id = params.event_id(request.path_params["event_id"])
        with request.app.state.database() as conn:
            row = queries.event(conn, event_id)
        if row is None:
            raise HTTPException(404, f"id: no event {str(event_id)!r} in the event store")
        event = render.event(row, request.app.state.presigner)
        shapes = rule_shapes(self.options.events, event["stream"]) if self.options.events else []
        poses = []
        bucket = (event["highlight"] or event["clip"] or {}).get("bucket")
        if bucket and event["track_id"] is not None:
            poses = [request.app.state.presigner.media(bucket, key) for key in pose_keys(
                self.s3, bucket, self.options.s3_prefix, event["stream"], event)]
        return self._render(
            request, "event.html", event=event,
            overlay=overlay_svg(shapes, event["zone"] or event["rule"]) if shapes else "",
            record=json.dumps(event["record"], indent=2, sort_keys=True), poses=poses, utc=_utc)

    def search(self, request: Request):
        query = params.only(request.query_params, ("from", "to", "type"))
        start, end = params.time_range({k: v for k, v in query.items() if v})
        event_type = params.event_type(query.get("type") or None)
        with request.app.state.database() as conn:
            first, last = queries.data_extent(conn)
            if end is None:
                end = float(int(last if last is not None else time.time()) + 1)
            if start is None:  # the last hour of data, or less when there is less
                start = max(end - SEARCH_SPAN, float(int(first)) if first is not None else 0)
            rows = queries.camera_events(conn, None, start, end, event_type, SEARCH_EVENTS + 1)
            series = self._person_series(conn, start, end)
        presigner = request.app.state.presigner
        return self._render(
            request, "search.html",
            events=[render.event(r, presigner) for r in rows[:SEARCH_EVENTS]],
            more=len(rows) > SEARCH_EVENTS, start=start, end=end, event_type=event_type,
            event_types=params.event_types(), chart=person_count_chart(series, start, end),
            utc=_utc, iso=_iso)

    @staticmethod
    def _person_series(conn, start: float, end: float) -> dict[str, list[tuple[float, float]]]:
        """Mean persons per frame per camera, about CHART_POINTS points over the period: from
        the frame records up to FRAMES_SPAN, from the per-minute counts beyond."""
        series: dict[str, list[tuple[float, float]]] = {}
        if end - start <= FRAMES_SPAN:
            bucket = max((end - start) / CHART_POINTS, 1.0)
            for row in queries.person_counts(conn, start, end, bucket):
                series.setdefault(row["stream"], []).append((row["time"], row["persons"]))
            return series
        for count in queries.minute_counts(conn, start, end):
            if count["frames"]:
                series.setdefault(count["stream"], []).append(
                    (count["minute"], count["persons"] / count["frames"]))
        return series


def home(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("console-cameras"), 303)


def _utc(seconds: float | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return "-" if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime(fmt)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
