"""`kvs-analytics serve`: the events console and the read API over the event store
(consumer.console.app over consumer.api.app), on uvicorn. Imports only the standard library
until it runs, so `--help` works without the `serve` extra."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass

from consumer.api import MAX_URL_EXPIRY
from consumer.store.database_url import DATABASE_URL_ENV

SERVE_EPILOG = f"""\
the console (HTML): /console/ cameras, /console/cameras/STREAM a timeline,
  /console/events/ID an event, /console/search events and a person-count chart
endpoints (JSON; errors are {{"error": "..."}}):
  GET /cameras                         every camera: first/last seen, events, progress,
                                       its latest picture
  GET /cameras/STREAM/events           its events by start time; from <= start_time < to
      ?from=&to=&type=&limit=          from/to: seconds since the epoch or ISO 8601 (no
                                       timezone: UTC); type: zone_entry, dwell, ...;
                                       limit 1..1000 (default 100)
  GET /cameras/STREAM/counts?from=&to= frames, persons and events per minute
  GET /events?from=&to=&type=&limit=   every camera's events
  GET /events/ID                       one event (a UUID) with its latest record
  GET /events/ID/frames?seconds=       the frame records around it (persons, boxes)
  GET /health                          200 when the database answers, else 503
Each highlight, clip and picture carries a GET URL presigned for this response
(--url-expiry seconds, at most {MAX_URL_EXPIRY}); the S3 credentials and region come from the
usual chain (--endpoint-url and --region for the local stack). The database's migrations are
applied at start. The default host is loopback; before exposing it, set console.password (a
hash from --hash-password: every page and the API then need a login) and use TLS in front.

exit status: 0 stopped (Ctrl-C or SIGTERM), 1 the database or the port cannot be used,
2 bad arguments or configuration.

examples:
  export {DATABASE_URL_ENV}=postgresql://analytics@db.internal/events
  kvs-analytics serve --config consumer.yaml           # console + API on 127.0.0.1:8080
  kvs-analytics serve --hash-password                  # for console.password
  kvs-analytics serve --database-url "host=127.0.0.1 dbname=events" --port 9000
  kvs-analytics serve --endpoint-url http://127.0.0.1:5000 --region us-east-1  # local stack
  curl 'http://127.0.0.1:8080/cameras/cam-1/events?from=2024-05-01T12:00:00Z&type=dwell'"""


def add_serve(subparsers) -> None:
    parser = subparsers.add_parser(
        "serve", help="the events console and the read API over the event store (HTTP)",
        description="Serve the event store read-only over HTTP: the events console (cameras, "
                    "timelines, events, search) at /console/, and the JSON read API (cameras, "
                    "their events by time and type, one event), with presigned URLs for "
                    "highlights and clips.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", metavar="DSN",
                        help=f"the event store: a postgresql:// URL or libpq key=value string "
                             f"(default: ${DATABASE_URL_ENV})")
    parser.add_argument("--config", metavar="FILE",
                        help="the consumer's configuration: its console: section (host, port, "
                             "url_expiry, password), AWS endpoints and region, the lease table "
                             "(checkpoint.table: owners and lag on the cameras page) and the "
                             "event rules (zones and lines drawn over highlights)")
    parser.add_argument("--host", help="address to listen on (default: console.host, "
                                       "127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, help="port to listen on (default: console.port, "
                                                 "8080; 0: any free one)")
    parser.add_argument("--url-expiry", type=int, metavar="SECONDS",
                        help=f"presigned URLs' lifetime, 1..{MAX_URL_EXPIRY} (default: "
                             f"console.url_expiry, 900)")
    parser.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (the local stack; "
                                                              "default: aws.endpoints.s3)")
    parser.add_argument("--region", help="AWS region (default: aws.region, the usual chain)")
    parser.add_argument("--hash-password", action="store_true",
                        help="ask for a console password and print its hash for "
                             "console.password, then exit")
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if args.hash_password:
        from consumer.console.auth import prompt_password_hash
        try:
            print(prompt_password_hash())
        except ValueError as err:
            print(f"serve: {err}", file=sys.stderr)
            return 2
        return 0
    database_url = args.database_url or os.environ.get(DATABASE_URL_ENV)
    if not database_url:
        print(f"serve: no event store: pass --database-url or set {DATABASE_URL_ENV}",
              file=sys.stderr)
        return 2
    from consumer.cloud.aws import AwsSetupError
    from consumer.config import ConfigError
    try:
        server = build_server(database_url, args)
    except (ValueError, ConfigError, AwsSetupError) as err:
        print(f"serve: {err}", file=sys.stderr)
        return 2
    return serve(server)


@dataclass
class Server:
    app: object
    settings: object  # ApiSettings


def build_server(database_url: str, args: argparse.Namespace) -> Server:
    """The application for `serve`'s arguments over the configuration file (if any)."""
    from consumer.api.settings import ApiSettings
    from consumer.config import Config, load_config
    from consumer.console.app import create_server
    from consumer.console.pages import ConsoleOptions
    config = load_config(args.config, live=False) if args.config else Config()
    console = config.console
    endpoints = config.aws.endpoints
    settings = ApiSettings(
        database_url, args.url_expiry if args.url_expiry is not None else console.url_expiry,
        args.endpoint_url or endpoints.get("s3"), args.region or config.aws.region,
        args.host or console.host, args.port if args.port is not None else console.port)
    fleet = None
    if args.config:
        from consumer.cloud.aws import AwsContext
        from consumer.console.fleet import FleetReader
        dynamodb = AwsContext(endpoints.get("dynamodb"), settings.region).client("dynamodb")
        fleet = FleetReader(dynamodb, config.checkpoint.table)
    options = ConsoleOptions(console.refresh_seconds, config.events if args.config else None,
                             fleet, config.outputs.s3.prefix if config.outputs.s3 else "")
    return Server(create_server(settings, options, console.password), settings)


def serve(server: Server, on_listening=None) -> int:
    """Apply the store's migrations, listen, and serve until SIGINT or SIGTERM; the exit
    status. `on_listening(url)`: called once the socket is bound."""
    import psycopg
    import uvicorn

    from consumer.store.database_url import redact
    from consumer.store.schema import migrate
    settings = server.settings
    try:
        with psycopg.connect(settings.connect_info(), autocommit=True) as conn:
            applied = migrate(conn)
    except psycopg.Error as err:
        print(f"serve: the event store at {settings.safe_database_url}: "
              f"{redact(str(err), settings.database_url).strip()}", file=sys.stderr)
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
    url = f"http://{shown}:{port}/"
    print(f"serve: listening on {url} (the console: {url}console/)", flush=True)
    if on_listening is not None:
        on_listening(url)
    uvicorn_server = uvicorn.Server(uvicorn.Config(server.app, log_level="info",
                                                  server_header=False))
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # handler that was there before: make that a plain return (exit status 0)
    previous = _on_sigterm(_stop)
    try:
        uvicorn_server.run(sockets=[sock])
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
    """A listening socket (uvicorn serves it): the real port is known before serving, and a
    client that connects once "listening" is printed waits in the backlog until uvicorn has
    started, rather than being refused."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)  # uvicorn's default backlog
    except OSError:
        sock.close()
        raise
    return sock
