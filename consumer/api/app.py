"""The read API as a Starlette application (`create_app`), read-only over the event store.

    GET /cameras                        {"cameras": [camera, ...]}
    GET /cameras/{stream}/events        {"stream", "from", "to", "type", "limit", "more",
        ?from=&to=&type=&limit=          "events": [event, ...]}   by start time;
                                         from <= start_time < to; limit 1..1000 (100);
                                         more: further events match
    GET /events/{id}                    event, with its "record" (the latest, as delivered)
    GET /events?from=&to=&type=&limit=  {"from", "to", "type", "limit", "more", "events"}:
                                         every camera's, by start time
    GET /events/{id}/frames?seconds=    {"event_id", "frames": [frame, ...]}: the camera's
                                         frame records from `seconds` (5; 0..60) before the
                                         event to as long after it ended (or started)
    GET /cameras/{stream}/counts        {"stream", "from", "to", "minutes": [{minute, frames,
        ?from=&to=                       persons, events}]}; default: the last hour of data
    GET /health                         200 {"status": "ok"}; 503 when the database is not

Errors are JSON {"error": "..."}: 400 a bad parameter (the message names it and what was
expected), 404 an unknown camera, event or path, 503 the database failed (logged without the
connection string's password). Events are rendered by `render.event`, with URLs presigned per
response. Endpoints are sync (Starlette runs them in its threadpool); each request opens its own
connection (autocommit, read-only queries) and closes it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from consumer.api import params, queries, render
from consumer.api.settings import ApiSettings
from consumer.store.database_url import redact

log = logging.getLogger("consumer.api")
EVENT_PARAMETERS = ("from", "to", "type", "limit")
MAX_FRAMES = 500  # frame records around one event
COUNT_SPAN = 3600.0  # seconds of counts when no range is given


def create_app(settings: ApiSettings, s3_client=None) -> Starlette:
    """The application; `s3_client` defaults to one for settings.endpoint_url/region (raises
    consumer.cloud.aws.AwsSetupError when no region or credentials can be found)."""
    if s3_client is None:
        from consumer.cloud.aws import AwsContext
        s3_client = AwsContext(settings.endpoint_url, settings.region).client("s3")
    presigner = render.Presigner(s3_client, settings.url_expiry)
    conninfo = settings.connect_info()

    @contextmanager
    def database() -> Iterator[psycopg.Connection]:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            yield conn

    def list_cameras(request: Request) -> JSONResponse:
        with database() as conn:
            rows = queries.cameras(conn)
        return _json({"cameras": [render.camera(row, presigner) for row in rows]})

    def camera_events(request: Request) -> JSONResponse:
        return events_page(request, params.stream(request.path_params["stream"]))

    def all_events(request: Request) -> JSONResponse:
        return events_page(request, None)

    def events_page(request: Request, stream: str | None) -> JSONResponse:
        """One camera's events (`stream`), or every camera's (None)."""
        query = params.only(request.query_params, EVENT_PARAMETERS)
        start, end = params.time_range(query)
        event_type = params.event_type(query.get("type"))
        limit = params.limit(query.get("limit"))
        with database() as conn:
            rows = queries.camera_events(conn, stream, start, end, event_type, limit + 1)
            if stream is not None and not rows and not queries.has_camera(conn, stream):
                raise HTTPException(404, f"stream: no camera {stream!r} in the event store")
        page = {"from": start, "to": end, "type": event_type, "limit": limit,
                "more": len(rows) > limit,
                "events": [render.event(row, presigner) for row in rows[:limit]]}
        return _json(page if stream is None else {"stream": stream, **page})

    def event_frames(request: Request) -> JSONResponse:
        event_id = params.event_id(request.path_params["event_id"])
        seconds = params.seconds(params.only(request.query_params, ("seconds",)).get("seconds"))
        with database() as conn:
            row = queries.event(conn, event_id)
            if row is None:
                raise HTTPException(404, f"id: no event {str(event_id)!r} in the event store")
            last = row["end_time"] if row["end_time"] is not None else row["start_time"]
            frames = queries.frames_between(conn, row["stream"], row["start_time"] - seconds,
                                            last + seconds, MAX_FRAMES)
        return _json({"event_id": str(event_id), "stream": row["stream"],
                      "frames": [render.frame(frame, presigner) for frame in frames]})

    def camera_counts(request: Request) -> JSONResponse:
        stream = params.stream(request.path_params["stream"])
        start, end = params.time_range(params.only(request.query_params, ("from", "to")))
        with database() as conn:
            if not queries.has_camera(conn, stream):
                raise HTTPException(404, f"stream: no camera {stream!r} in the event store")
            if end is None:
                end = (queries.cameras_last_seen(conn, stream) or 0.0) + 60.0
            start = end - COUNT_SPAN if start is None else start
            rows = queries.minute_counts(conn, start, end, stream)
        return _json({"stream": stream, "from": start, "to": end, "minutes": [
            {key: row[key] for key in ("minute", "frames", "persons", "events")}
            for row in rows]})

    def one_event(request: Request) -> JSONResponse:
        event_id = params.event_id(request.path_params["event_id"])
        with database() as conn:
            row = queries.event(conn, event_id)
        if row is None:
            raise HTTPException(404, f"id: no event {str(event_id)!r} in the event store")
        return _json(render.event(row, presigner))

    def health(request: Request) -> JSONResponse:
        try:
            with database() as conn:
                queries.ping(conn)
        except psycopg.Error as err:
            _log_database_error(err, settings)
            return _json({"status": "unavailable", "error": "the database is unreachable"}, 503)
        return _json({"status": "ok"})

    def bad_parameter(request: Request, err: Exception) -> JSONResponse:
        return _json({"error": str(err)}, 400)

    def database_error(request: Request, err: Exception) -> JSONResponse:
        _log_database_error(err, settings)
        return _json({"error": "the event store is unavailable; try again later"}, 503)

    def http_error(request: Request, err: Exception) -> JSONResponse:
        assert isinstance(err, HTTPException)
        response = _json({"error": err.detail}, err.status_code)
        response.headers.update(err.headers or {})
        return response

    app = Starlette(
        routes=[Route("/cameras", list_cameras),
                Route("/cameras/{stream}/events", camera_events),
                Route("/cameras/{stream}/counts", camera_counts),
                Route("/events", all_events),
                Route("/events/{event_id}", one_event),
                Route("/events/{event_id}/frames", event_frames),
                Route("/health", health)],
        exception_handlers={params.BadParameter: bad_parameter, psycopg.Error: database_error,
                            HTTPException: http_error})
    # for the console's pages, served by the same application (consumer.console.app)
    app.state.database, app.state.presigner = database, presigner
    return app


def _json(body: dict, status: int = 200) -> JSONResponse:
    # presigned URLs are bearer tokens with an expiry: nothing in between should keep them
    return JSONResponse(body, status, headers={"Cache-Control": "no-store"})


def _log_database_error(err: Exception, settings: ApiSettings) -> None:
    log.error("event store %s: %s: %s", settings.safe_database_url, type(err).__name__,
              redact(str(err), settings.database_url).strip())
