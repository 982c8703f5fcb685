"""The health and metrics endpoint: `ThreadingHTTPServer` on a daemon thread.

    server = HealthServer(config.health).start()   # OSError when the port cannot be bound
    server.attach(supervisor)                       # once it has started
    server.stopping()                               # before the supervisor's shutdown
    server.close()

GET (or HEAD) `/healthz`, `/readyz`: 200 or 503 with a JSON body (`consumer.observe.probes`);
`/metrics`: Prometheus' text format (`consumer.observe.metrics`, plus the process collector's
CPU, memory and file descriptors); anything else 404. A probe reads only what the supervisor
keeps in memory, so probing often costs no AWS call. Requests are served on their own threads;
a failure while answering is a 500 naming it, logged, and never reaches the consumer.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest

from consumer.observe.metrics import SupervisorCollector
from consumer.observe.probes import liveness, readiness

log = logging.getLogger(__name__)


class HealthServer:
    def __init__(self, health, host: str | None = None, port: int | None = None):
        """`health`: the config's `health` section; `host`/`port` override it (port 0: any)."""
        self.host = health.host if host is None else host
        self.requested_port = health.port if port is None else port
        self.stuck_seconds = health.stuck_seconds
        self.supervisor = None
        self.is_stopping = False
        self.collector = SupervisorCollector(stuck_seconds=self.stuck_seconds)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        ProcessCollector(registry=self.registry)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one asked for, or the one given for port 0)."""
        return self._httpd.server_address[1] if self._httpd else self.requested_port

    def start(self) -> HealthServer:
        server_class = _V6Server if ":" in self.host else _Server
        self._httpd = server_class((self.host, self.requested_port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="health-http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)
        self._thread.start()
        log.info("health endpoint on http://%s:%d (/healthz, /readyz, /metrics)",
                 self.host, self.port)
        return self

    def attach(self, supervisor) -> None:
        self.supervisor = supervisor
        self.collector.supervisor = supervisor

    def stopping(self) -> None:
        self.is_stopping = True

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    # --- answers (the request threads) ----------------------------------------------------

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of `path`."""
        path = path.split("?", 1)[0].rstrip("/") or "/"
        if path == "/healthz":
            return _json(liveness(self.supervisor, self.is_stopping))
        if path == "/readyz":
            return _json(readiness(self.supervisor, self.stuck_seconds, self.is_stopping))
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, "text/plain; charset=utf-8", b"not found: try /healthz, /readyz, /metrics\n"


def _json(verdict) -> tuple[int, str, bytes]:
    body = json.dumps(verdict.body, indent=1, default=str).encode() + b"\n"
    return verdict.status, "application/json", body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HealthServer


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server_version = "kvs-analytics"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # http.server's naming
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def _respond(self, head: bool) -> None:
        try:
            status, content_type, body = self.server.owner.answer(self.path)
        except Exception as err:  # a bug in a probe must not take the endpoint down
            log.exception("health endpoint: %s failed", self.path)
            status, content_type = 500, "text/plain; charset=utf-8"
            body = f"{type(err).__name__}: {err}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # the base's signature
        log.debug("health endpoint: %s - %s", self.address_string(), format % args)
