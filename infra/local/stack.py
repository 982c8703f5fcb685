"""The whole local stack: our Kinesis Video service plus moto's server for S3, Kinesis Data
Streams and DynamoDB. One object gives the consumer every AWS endpoint it needs."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from pathlib import Path

from .kvs_service import LocalKvsService
from .limits import Limits
from .ports import listen

# moto accepts any credentials; botocore still wants some to sign with.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


class LocalStack:
    def __init__(self, host: str = "127.0.0.1", kvs_port: int = 0, moto_port: int = 0,
                 region: str = "us-east-1", data_dir: str | Path | None = None,
                 retention_seconds: float = 300.0, limits: Limits | None = None):
        self.host = host
        self.region = region
        self.moto_port = moto_port
        self.kvs = LocalKvsService(host, kvs_port, region, data_dir, retention_seconds, limits)
        self._moto = None

    def start(self) -> "LocalStack":
        """Start both servers; a port that cannot be used raises ports.CannotListen at once."""
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self.kvs.start()
        try:
            self._moto = _MotoServer(self.host, self.moto_port)
            self.moto_port = self._moto.port
            _wait_until_up(f"http://{self.host}:{self.moto_port}/moto-api/")
            # moto keeps its buckets and streams in module state, which a stack started earlier
            # in this process would otherwise hand on: a started stack is empty
            urllib.request.urlopen(urllib.request.Request(
                f"http://{self.host}:{self.moto_port}/moto-api/reset", method="POST"),
                timeout=10).close()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._moto is not None:
            self._moto.stop()
            self._moto = None
        self.kvs.stop()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoints(self) -> dict[str, str]:
        moto = f"http://{self.host}:{self.moto_port}"
        return {"region": self.region, "kinesisvideo": self.kvs.endpoint_url,
                "s3": moto, "kinesis": moto, "dynamodb": moto}

    def client(self, service: str):
        """A boto3 client for `service` pointed at this stack."""
        import boto3
        key = "kinesisvideo" if service.startswith("kinesis-video") else service
        return boto3.client(service, endpoint_url=self.endpoints[key], region_name=self.region,
                            **LOCAL_CREDENTIALS)


class _MotoServer:
    """moto's server (what moto.server.ThreadedMotoServer runs) on a socket bound here first:
    ThreadedMotoServer binds in its thread, where werkzeug answers a port in use with
    sys.exit, so its start() would wait forever."""

    def __init__(self, host: str, port: int):
        try:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                create_backend_app,
            )
            from werkzeug.serving import make_server
        except ImportError as err:
            raise RuntimeError("moto's server is not installed: pip install 'moto[server]'") \
                from err
        sock = listen("moto", host, port)
        try:
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(host, port, app, threaded=True, fd=sock.fileno())
        finally:
            sock.close()  # werkzeug serves on its own duplicate of the descriptor
        self.port = self._server.port
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def _wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto's server did not answer at {url}") from None
            time.sleep(0.1)
