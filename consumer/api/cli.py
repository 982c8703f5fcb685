"""`kvs-analytics serve`: the read API over the event store (`consumer.api.app`), on uvicorn."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading

from consumer.api import MAX_URL_EXPIRY
from consumer.store.database_url import DATABASE_URL_ENV

SERVE_EPILOG = f"""\
endpoints (JSON; errors are {{"error": "..."}}):
  GET /cameras                         every camera: first/last seen, events, progress
  GET /cameras/STREAM/events           its events by start time; from <= start_time < to
      ?from=&to=&type=&limit=          from/to: seconds since the epoch or ISO 8601 (no
                                       timezone: UTC); type: zone_entry, dwell, ...;
                                       limit 1..1000 (default 100)
  GET /events/ID                       one event (a UUID) with its latest record
  GET /health                          200 when the database answers, else 503
Each event's highlight and clip carry a GET URL presigned for this response (--url-expiry
seconds, at most {MAX_URL_EXPIRY}); the S3 credentials and region come from the usual chain
(--endpoint-url and --region for the local stack). The database's migrations are applied at
start. The default host is loopback: put an authenticating proxy in front before exposing it.

exit status: 0 stopped (Ctrl-C or SIGTERM), 1 the database or the port cannot be used,
2 bad arguments.

examples:
  export {DATABASE_URL_ENV}=postgresql://analytics@db.internal/events
  kvs-analytics serve
  kvs-analytics serve --database-url "host=127.0.0.1 dbname=events" --port 9000
  kvs-analytics serve --endpoint-url http://127.0.0.1:5000 --region us-east-1  # local stack
  curl 'http://127.0.0.1:8080/cameras/cam-1/events?from=2024-05-01T12:00:00Z&type=dwell'"""


def add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="the read API over the event store (HTTP, JSON)",
        description="Serve the event store read-only over HTTP: cameras, their events by time "
                    "and type, one event, with presigned URLs for highlights and clips.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", metavar="DSN",
                        help=f"the event store: a postgresql:// URL or libpq key=value string "
                             f"(default: ${DATABASE_URL_ENV})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default %(default)s: loopback only)")
    parser.add_argument("--port", type=int, default=8080,
                        help="port to listen on (default %(default)s; 0: any free one)")
    parser.add_argument("--url-expiry", type=int, default=900, metavar="SECONDS",
                        help=f"presigned URLs' lifetime, 1..{MAX_URL_EXPIRY} "
                             f"(default %(default)s)")
    parser.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (the local stack)")
    parser.add_argument("--region", help="AWS region (default: the usual chain)")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    database_url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if not database_url:
        print(f"serve: no event store: pass --database-url or set {DATABASE_URL_ENV}",
              file=sys.stderr)
        return 2
    from consumer.api.settings import ApiSettings
    try:
        settings = ApiSettings(database_url, args.url_expiry, args.endpoint_url, args.region,
                               args.host, args.port)
    except ValueError as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    import psycopg
    import uvicorn

    from consumer.api.app import create_app
    from consumer.cloud.aws import AwsSetupError
    from consumer.store.database_url import redact
    from consumer.store.schema import migrate
    try:
        app = create_app(settings)
    except AwsSetupError as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    try:
        with psycopg.connect(settings.connect_info(), autocommit=True) as conn:
            applied = migrate(conn)
    except psycopg.Error as err:
        print(f"serve: the event store at {settings.safe_database_url}: "
              f"{redact(str(err), database_url).strip()}", file=sys.stderr)
        return 1
    try:
        sock = _listen(settings.host, settings.port)
    except OSError as err:
        print(f"serve: cannot listen on {settings.host}:{settings.port}: {err.strerror or err}",
              file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serve: event store {settings.safe_database_url}"
          f"{f' (migrations {applied} applied)' if applied else ''}", file=sys.stderr)
    print(f"serve: listening on http://{shown}:{port}/", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info", server_header=False))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # handler that was there before: make that a plain return (exit status 0)
    previous = _on_sigterm(_stop)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        _on_sigterm(previous)
        sock.close()
    return 0


class _Stopped(Exception):
    """SIGTERM after uvicorn's graceful shutdown."""


def _stop(signum, frame) -> None:
    raise _Stopped


def _on_sigterm(handler):
    """Install `handler` for SIGTERM (main thread only); the one it replaces."""
    if threading.current_thread() is not threading.main_thread() or handler is None:
        return None
    return signal.signal(signal.SIGTERM, handler)


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (uvicorn listens on it): the real port is known before serving."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock
