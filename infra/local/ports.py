"""Listening sockets for the local stack's servers, and the one error a port that cannot be used
becomes: `CannotListen` names the server, the address and why (in use, not permitted), so
`python -m infra.local` can say it in one line with the option that changes the port, instead of
hanging (werkzeug exits its own thread when its port is taken) or printing a traceback.
"""

from __future__ import annotations

import errno
import os
import socket


class CannotListen(RuntimeError):
    """`server` ("kvs" or "moto") could not listen on host:port."""

    def __init__(self, server: str, host: str, port: int, error: OSError):
        self.server = server
        self.host = host
        self.port = port
        self.error = error
        self.in_use = error.errno == errno.EADDRINUSE
        reason = ("is in use by another program" if self.in_use
                  else f"cannot be used: {error.strerror or error}")
        super().__init__(f"port {port} on {host} ({NAMES.get(server, server)}) {reason}")


NAMES = {"kvs": "the local Kinesis Video service",
         "moto": "moto's server for S3, Kinesis and DynamoDB"}


def listen(server: str, host: str, port: int, backlog: int = 128) -> socket.socket:
    """A socket bound to host:port (0: any free port) and listening, or CannotListen."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise CannotListen(server, host, port, OSError(errno.EADDRNOTAVAIL, str(err))) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "posix":  # as asyncio and werkzeug do: rebind while old ones TIME_WAIT
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as err:
        sock.close()
        raise CannotListen(server, host, port, err) from None
    return sock
