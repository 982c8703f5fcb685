"""The whole local stack: our Kinesis Video service plus moto's server for S3, Kinesis Data
Streams and DynamoDB. One object gives the consumer every AWS endpoint it needs."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from pathlib import Path

from .kvs_service import LocalKvsService
from .limits import Limits

# moto accepts any credentials; botocore still wants some to sign with.
LOCAL_CREDENTIALS = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as err:
            raise RuntimeError("moto's server is not installed: pip install 'moto[server]'") from err
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
        self.kvs.start()
        self.moto_port = self.moto_port or _free_port(self.host)
        self._moto = ThreadedMotoServer(ip_address=self.host, port=self.moto_port, verbose=False)
        self._moto.start()
        _wait_until_up(f"http://{self.host}:{self.moto_port}/moto-api/")
        return self

    def stop(self) -> None:
        if self._moto is not None:
            self._moto.stop()
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
