"""Shared by the simulator's end-to-end tests: run `python -m producer_sim` against a local
service with local credentials only, and boto3 clients for that service."""

from __future__ import annotations

import os
import subprocess
import sys

import boto3

from infra.local.stack import LOCAL_CREDENTIALS

from .conftest import REPO


def simulator(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(REPO), AWS_ACCESS_KEY_ID="local", AWS_SECRET_ACCESS_KEY="local",
               AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    return subprocess.run([sys.executable, "-m", "producer_sim", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def client(kvs, name="kinesisvideo", api=None, stream=None):
    url = kvs.endpoint_url
    if api:
        control = client(kvs)
        url = control.get_data_endpoint(StreamName=stream, APIName=api)["DataEndpoint"]
    return boto3.client(name, endpoint_url=url, region_name=kvs.region, **LOCAL_CREDENTIALS)
