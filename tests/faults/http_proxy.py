"""An HTTP fault proxy for tests: AWS-shaped failures between a real client and a real local
server (moto's server, the local KVS service), switched on and off while the client runs.

    proxy = HttpFaultProxy(stack.moto_port).start()     # proxy.endpoint for the client
    fault = proxy.add(Throttle(operation="PutRecords"))
    ...
    proxy.remove(fault)                                 # or proxy.clear(); proxy.close()

Every request is read whole, then the active faults that match it act, in the order added:
`Delay` waits; `Cut` drops the connection unanswered (and drops the matching exchanges in flight
when it is added); `Fail` answers an error status; `Throttle` answers the service's own
throttling error; `PartialPutRecords` forwards a Kinesis PutRecords without some of its
entries and answers those as throttled at their original positions; `ResetBody` forwards and
resets the connection after some bytes of the response body. A fault matches by operation
(`X-Amz-Target`'s name after the dot, or the whole target), by path, or everything; `times`
makes it switch itself off after acting that often (`fired` counts).

Responses stream through chunk by chunk (a GetMedia response lasts as long as its stream), and
GetDataEndpoint answers are rewritten to point at the proxy, so a client that finds its data
endpoint that way (GetMedia) keeps going through the proxy. Request bodies are read whole, so a
long streaming upload (PutMedia) cannot go through: point producers at the service itself.

Error shapes follow the protocol botocore speaks to each service (the service is read from the
SigV4 credential scope): JSON 1.0/1.1 with `X-Amz-Target` (Kinesis, DynamoDB) put `__type` in
the body; REST-JSON (Kinesis Video) puts `x-amzn-ErrorType` in a header; REST-XML (S3) answers
`<Error><Code>`. Throttling codes are the ones botocore's retry handler classifies as throttling
(`ProvisionedThroughputExceededException`, `SlowDown`), except Kinesis Video's
`ClientLimitExceededException`, which AWS sends for GetMedia and botocore does not retry.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                        "te", "trailer", "upgrade", "expect", "content-length"})
UPSTREAM_TIMEOUT = 300.0  # a GetMedia response may idle this long between fragments
PIECE = 65536


@dataclass
class Request:
    """One request as the faults see it."""

    method: str
    path: str  # without the query
    target: str  # X-Amz-Target, "" for REST protocols
    service: str  # from the SigV4 credential scope: s3, kinesis, dynamodb, kinesisvideo, ""
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def operation(self) -> str:
        """The JSON protocol's operation name (PutRecords), or the path's last segment."""
        if self.target:
            return self.target.rsplit(".", 1)[-1]
        return self.path.rsplit("/", 1)[-1]

    @property
    def protocol(self) -> str:
        if self.target:
            return "json"
        return "rest-xml" if self.service == "s3" else "rest-json"


@dataclass(eq=False)
class Fault:
    """Base of the faults: which requests it matches, how often it may still act."""

    operation: str | None = None  # PutRecords, or Kinesis_20131202.PutRecords; None: any
    path: str | None = None  # exact path, e.g. /getMedia; None: any
    times: int | None = None  # act this often, then switch off; None: until removed
    fired: int = field(default=0, init=False)  # how often it acted

    def matches(self, request: Request) -> bool:
        if self.operation is not None and self.operation not in (request.target,
                                                                 request.operation):
            return False
        return self.path is None or self.path == request.path


@dataclass(eq=False)
class Cut(Fault):
    """The service is unreachable: the connection closes (reset) without an answer."""


@dataclass(eq=False)
class Delay(Fault):
    """Wait `seconds` before the request goes on (to the next fault, or upstream)."""

    seconds: float = 1.0


@dataclass(eq=False)
class Fail(Fault):
    """Answer `status` with the protocol's error shape (InternalFailure by default)."""

    status: int = 500
    code: str | None = None  # default: InternalFailure (InternalError for S3)


@dataclass(eq=False)
class Throttle(Fault):
    """Answer the service's throttling error for the whole call."""


@dataclass(eq=False)
class ResetBody(Fault):
    """Reset the connection after `after_bytes` bytes of a response body: of a response that
    starts while it is on, or of one in flight when it is switched on, counted from then (a
    GetMedia response lasts as long as its stream)."""

    after_bytes: int = 0


@dataclass(eq=False)
class PartialPutRecords(Fault):
    """Kinesis PutRecords in which a share of the entries fail with
    ProvisionedThroughputExceeded.

    The failed entries are removed from the request before it is forwarded (so they are really
    not written) and put back into the answer at their positions. One in `every` entries fails,
    counted over all the calls this fault sees (entry k from the first, from 0, fails when
    k % every == every - 1), so with `every=3` a third fail however the calls are sized, a call
    of one record included. `tail=True` fails as many entries of each call, but the last ones:
    the shape of a shard running out of its per-second budget part-way through a call, which
    leaves the accepted records in order."""

    every: int = 3
    tail: bool = False
    seen: int = field(default=0, init=False)  # entries seen
    failed: int = field(default=0, init=False)  # entries answered as failed
    # (failed entry, later entry of the same call that was written) pairs: the most records
    # that can land ahead of an earlier one of the same key, if the client resends correctly
    overtaken: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.operation = self.operation or "PutRecords"

    def choose(self, count: int) -> list[bool]:
        """Which of a call's `count` entries fail."""
        chosen = [(self.seen + i) % self.every == self.every - 1 for i in range(count)]
        if self.tail:
            failing = sum(chosen)
            chosen = [i >= count - failing for i in range(count)]
        self.seen += count
        self.failed += sum(chosen)
        self.overtaken += sum(chosen[i] and not chosen[j]
                              for i in range(count) for j in range(i + 1, count))
        return chosen


class HttpFaultProxy:
    """A threaded HTTP proxy to `127.0.0.1:target_port` with switchable faults (module doc)."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._faults: list[Fault] = []
        self._in_flight: dict[_Exchange, None] = {}
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # operation -> requests received
        self.cut_requests = 0  # requests dropped by a Cut

    def start(self) -> HttpFaultProxy:
        threading.Thread(target=self._server.serve_forever, name="http-fault-proxy",
                         daemon=True).start()
        return self

    def close(self) -> None:
        self.clear()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            exchanges = list(self._in_flight)
        for exchange in exchanges:
            exchange.drop()

    def add(self, fault: Fault) -> Fault:
        """Switch `fault` on; a `Cut` also drops the matching exchanges in flight, a
        `ResetBody` also counts the bytes of the matching responses in flight from now."""
        with self._lock:
            self._faults.append(fault)
            matching = [e for e in self._in_flight if fault.matches(e.request)]
            if isinstance(fault, ResetBody):
                for exchange in matching:
                    exchange.resets[fault] = exchange.sent
        if isinstance(fault, Cut):
            for exchange in matching:
                exchange.drop()
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def matching(self, request: Request) -> list[Fault]:
        """The active faults that match `request` (which is counted in `requests`)."""
        with self._lock:
            self.requests[request.operation] += 1
            return [f for f in self._faults if f.matches(request)]

    def reset_at(self, exchange: _Exchange) -> tuple[ResetBody, int] | None:
        """The active ResetBody that ends `exchange`'s body first, and at which byte."""
        with self._lock:
            armed = [(fault, start + fault.after_bytes)
                     for fault, start in exchange.resets.items() if fault in self._faults]
        return min(armed, key=lambda each: each[1], default=None)

    def acted(self, fault: Fault) -> None:
        """`fault` did what it does once more; switched off when its `times` are spent
        (requests in parallel may each act before that is seen)."""
        with self._lock:
            fault.fired += 1
            if fault.times is not None and fault.fired >= fault.times and fault in self._faults:
                self._faults.remove(fault)

    def track(self, exchange: _Exchange, on: bool) -> None:
        with self._lock:
            if on:
                self._in_flight[exchange] = None
            else:
                self._in_flight.pop(exchange, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's name
        pass  # one line per request otherwise

    def _any(self) -> None:
        exchange = _Exchange(self, self.server.proxy)
        try:
            exchange.run()
        except OSError:
            self.close_connection = True  # the client or upstream went away: nothing to answer

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any


class _Exchange:
    """One request through the proxy: read, apply the faults, forward, relay."""

    def __init__(self, handler: _Handler, proxy: HttpFaultProxy):
        self.handler = handler
        self.proxy = proxy
        self.request: Request | None = None
        self.upstream: http.client.HTTPConnection | None = None
        self.sent = 0  # response body bytes relayed
        self.resets: dict[ResetBody, int] = {}  # armed reset -> body byte it counts from

    def run(self) -> None:
        self.request = self._read_request()
        self.proxy.track(self, True)
        try:
            self._serve(self.proxy.matching(self.request))
        finally:
            self.proxy.track(self, False)
            if self.upstream is not None:
                self.upstream.close()

    def _serve(self, faults: list[Fault]) -> None:
        partial = None
        for fault in faults:
            if isinstance(fault, Delay):
                self.proxy.acted(fault)
                time.sleep(fault.seconds)
            elif isinstance(fault, Cut):
                self.proxy.acted(fault)
                self.proxy.cut_requests += 1
                self.reset()
                return
            elif isinstance(fault, (Fail, Throttle)):
                self.proxy.acted(fault)
                self._answer(*error_response(self.request, fault))
                return
            elif isinstance(fault, ResetBody):
                self.resets[fault] = 0  # acts (and counts) only if the body gets that long
            elif isinstance(fault, PartialPutRecords) and self.request.operation == "PutRecords":
                partial = partial or fault
        if partial is not None:
            self.proxy.acted(partial)
            self._partial_put_records(partial)
        else:
            self._forward()

    # --- the request ----------------------------------------------------------------------

    def _read_request(self) -> Request:
        handler = self.handler
        headers = handler.headers
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            body = _read_chunked(handler.rfile)
        else:
            body = handler.rfile.read(int(headers.get("Content-Length") or 0))
        return Request(handler.command, handler.path.split("?", 1)[0],
                       headers.get("X-Amz-Target", ""), _service(headers), headers, body)

    def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
        self.upstream = http.client.HTTPConnection(*self.proxy.target, timeout=UPSTREAM_TIMEOUT)
        self.upstream.putrequest(self.handler.command, self.handler.path, skip_host=True,
                                 skip_accept_encoding=True)
        for name, value in self.request.headers.items():
            if name.lower() not in HOP_BY_HOP:
                self.upstream.putheader(name, value)
        self.upstream.putheader("Content-Length", str(len(body)))
        self.upstream.endheaders(body)
        return self.upstream.getresponse()

    # --- the response ---------------------------------------------------------------------

    def _forward(self) -> None:
        response = self._send_upstream(self.request.body)
        if self.request.path == "/getDataEndpoint" and response.status == 200:
            body = json.loads(response.read())
            body["DataEndpoint"] = self.proxy.endpoint  # GetMedia comes back through us
            self._answer(200, _relayed(response.headers), json.dumps(body).encode())
            return
        self._relay(response)

    def _relay(self, response: http.client.HTTPResponse) -> None:
        """Stream the upstream response to the client, chunk by chunk."""
        handler = self.handler
        length = response.getheader("Content-Length")
        chunked = length is None and self.request.method != "HEAD" \
            and response.status not in (204, 304)
        handler.send_response_only(response.status, response.reason)
        for name, value in _relayed(response.headers).items():
            handler.send_header(name, value)
        if chunked:
            handler.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            handler.send_header("Content-Length", length)
        if "close" in (response.getheader("Connection") or "").lower():
            handler.send_header("Connection", "close")  # as the service said
            handler.close_connection = True
        handler.end_headers()
        self._pump(response, chunked)

    def _pump(self, response: http.client.HTTPResponse, chunked: bool) -> None:
        wfile = self.handler.wfile
        while True:
            try:
                piece = response.read1(PIECE)
            except (OSError, http.client.HTTPException):
                self.reset()  # upstream broke mid-body: so does the client's response
                return
            armed = self.proxy.reset_at(self)
            if armed is not None and self.sent + len(piece) >= armed[1]:
                _write(wfile, piece[:max(0, armed[1] - self.sent)], chunked)
                self.proxy.acted(armed[0])
                self.reset()
                return
            if not piece:
                break
            _write(wfile, piece, chunked)
            self.sent += len(piece)
        if chunked:
            wfile.write(b"0\r\n\r\n")

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        handler = self.handler
        handler.send_response_only(status)
        for name, value in headers.items():
            if name.lower() == "x-amz-crc32":  # botocore checks it (DynamoDB): of this body
                value = str(zlib.crc32(body))
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _partial_put_records(self, fault: PartialPutRecords) -> None:
        """Forward the kept entries; answer the others as throttled, at their positions."""
        body = json.loads(self.request.body)
        entries = body.get("Records") or []
        failing = fault.choose(len(entries))
        kept = [entry for entry, fails in zip(entries, failing) if not fails]
        if kept:
            response = self._send_upstream(json.dumps({**body, "Records": kept}).encode())
            raw = response.read()
            if response.status != 200:  # moto refused the call: pass its answer on
                self._answer(response.status, _relayed(response.headers), raw)
                return
            answer, headers = json.loads(raw), _relayed(response.headers)
        else:
            answer = {"FailedRecordCount": 0, "Records": []}
            headers = {"Content-Type": self.request.headers.get(
                "Content-Type", "application/x-amz-json-1.1")}
        accepted = iter(answer["Records"])
        merged = [_THROTTLED_ENTRY if fails else next(accepted) for fails in failing]
        answer.update(Records=merged,
                      FailedRecordCount=answer.get("FailedRecordCount", 0) + sum(failing))
        self._answer(200, headers, json.dumps(answer).encode())

    def reset(self) -> None:
        """Drop the client's connection with a TCP reset, nothing more sent."""
        handler = self.handler
        handler.close_connection = True
        sock = handler.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.rfile.close()  # its reference would keep the descriptor open
            sock.close()
        except OSError:
            pass

    def drop(self) -> None:
        """From another thread: end this exchange now, both sides (a cut)."""
        for sock in (self.handler.connection,
                     getattr(self.upstream, "sock", None) if self.upstream else None):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


_THROTTLED_ENTRY = {"ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard shardId-000000000000 in stream "
                                    "(proxy) under account 123456789012."}

_THROTTLING = {"kinesis": (400, "ProvisionedThroughputExceededException"),
               "dynamodb": (400, "ProvisionedThroughputExceededException"),
               "kinesisvideo": (400, "ClientLimitExceededException"),
               "s3": (503, "SlowDown")}


def error_response(request: Request, fault: Fail | Throttle) -> tuple[int, dict, bytes]:
    """(status, headers, body) of the error `fault` answers, in the request's protocol."""
    if isinstance(fault, Throttle):
        status, code = _THROTTLING.get(request.service, (400, "ThrottlingException"))
        message = "Rate exceeded"
    else:
        status = fault.status
        code = fault.code or ("InternalError" if request.protocol == "rest-xml"
                              else "InternalFailure")
        message = "injected by the fault proxy"
    headers = {"x-amzn-RequestId": "fault-proxy"}
    if request.protocol == "json":
        headers["Content-Type"] = request.headers.get("Content-Type",
                                                      "application/x-amz-json-1.1")
        return status, headers, json.dumps({"__type": code, "message": message}).encode()
    if request.protocol == "rest-json":
        headers.update({"Content-Type": "application/json", "x-amzn-ErrorType": code})
        return status, headers, json.dumps({"message": message}).encode()
    headers["Content-Type"] = "application/xml"
    body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>"
            f"<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>")
    return status, headers, body.encode()


def _service(headers: http.client.HTTPMessage) -> str:
    """The service a SigV4 request was signed for (Credential=key/date/region/SERVICE/...)."""
    authorization = headers.get("Authorization", "")
    scope = authorization.partition("Credential=")[2].split(",", 1)[0].split("/")
    return scope[3] if len(scope) > 3 else ""


def _relayed(headers: http.client.HTTPMessage) -> dict[str, str]:
    """The upstream response headers a client should see (hop-by-hop ones are ours)."""
    return {name: value for name, value in headers.items()
            if name.lower() not in HOP_BY_HOP | {"date", "server"}}


def _read_chunked(rfile) -> bytes:
    body = bytearray()
    while True:
        size = int(rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return bytes(body)
        body += rfile.read(size)
        rfile.readline()


def _write(wfile, piece: bytes, chunked: bool) -> None:
    if not piece:
        return
    wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
