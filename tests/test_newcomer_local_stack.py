"""`python -m infra.local` for a newcomer: a port in use is one line naming it and the option
that changes it, at once (not a hang, not a traceback); SIGTERM stops it; `--create-resources`
and `--write-config` give a stack that `python -m consumer run --config FILE` accepts."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import boto3
import pytest
import yaml

from consumer.config import load_config
from infra.local.stack import LOCAL_CREDENTIALS

from .conftest import REPO


def occupied_port() -> socket.socket:
    """A listening socket on a free loopback port (nobody answers on it)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def start_stack(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "infra.local", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("option", ["--moto-port", "--kvs-port"])
def test_a_port_in_use_is_one_line_naming_it_and_the_option_and_exit_1_at_once(option):
    with occupied_port() as taken:
        port = taken.getsockname()[1]
        started = time.monotonic()
        process = start_stack(option, str(port))
        try:
            out, err = process.communicate(timeout=20)
        finally:
            process.kill()
        elapsed = time.monotonic() - started
    assert process.returncode == 1, err
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert out == ""  # no endpoint line
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert f"port {port}" in lines[0] and "in use" in lines[0]
    assert f"{option} PORT" in lines[0] and f"{option} 0" in lines[0]
    assert "Traceback" not in err


def test_ready_stack_creates_resources_writes_a_config_and_stops_on_sigterm(tmp_path):
    config_file = tmp_path / "consumer.yaml"
    process = start_stack("--create-resources", "--stream", "cam-a", "--stream", "cam-b",
                          "--data-stream", "records", "--bucket", "frames",
                          "--write-config", str(config_file), "--models-dir", str(tmp_path))
    try:
        endpoints = json.loads(process.stdout.readline())
        # the config is written before the JSON line says the stack is ready
        written = yaml.safe_load(config_file.read_text())
        config = load_config(config_file, environ={})
        assert config.aws.region == endpoints["region"]
        assert config.aws.endpoints == {k: v for k, v in endpoints.items() if k != "region"}
        assert config.streams.names == ["cam-a", "cam-b"]
        assert config.streams.start.value == "EARLIEST"
        assert config.outputs.kinesis.stream == "records"
        assert config.outputs.s3.bucket == "frames"
        assert written["processing"]["pose"]["models_dir"] == str(tmp_path)

        def client(name):
            return boto3.client(name, endpoint_url=endpoints[name],
                                region_name=endpoints["region"], **LOCAL_CREDENTIALS)
        summary = client("kinesis").describe_stream_summary(StreamName="records")
        assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
        client("s3").head_bucket(Bucket="frames")
        names = {s["StreamName"] for s in client("kinesisvideo").list_streams()["StreamInfoList"]}
        assert names == {"cam-a", "cam-b"}
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert time.monotonic() - started < 5
    finally:
        process.kill()


def test_without_streams_the_written_config_reads_every_stream_on_the_stack(tmp_path):
    config_file = tmp_path / "consumer.yaml"
    process = start_stack("--write-config", str(config_file))
    try:
        json.loads(process.stdout.readline())
        config = load_config(config_file, environ={})
        assert config.streams.names == [] and config.streams.prefix == ""
        assert config.outputs.kinesis.stream == "video-analytics"
        assert "processing" not in yaml.safe_load(config_file.read_text())
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0


def test_region_has_a_help_text():
    result = subprocess.run([sys.executable, "-m", "infra.local", "--help"], check=False,
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--region REGION the region the services report" in text
    assert "(default us-east-1)" in text
