"""Command line and control plane: arguments, credentials, stream setup against the local service."""

from __future__ import annotations

import argparse

import pytest

from infra.local.kvs_service import LocalKvsService
from producer_sim import cli
from producer_sim.control import (
    AwsContext,
    AwsSetupError,
    StreamSetupError,
    is_loopback,
    prepare_stream,
)


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """An environment with nothing for the credential chain to find (and no metadata service)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                 "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def kvs():
    with LocalKvsService() as service:
        yield service


@pytest.mark.parametrize("text,seconds", [
    ("30", 30), ("2.5s", 2.5), ("500ms", 0.5), ("5m", 300), ("1h", 3600), (".5", 0.5)])
def test_durations(text, seconds):
    assert cli.duration(text) == seconds


@pytest.mark.parametrize("text,message", [
    ("soon", "bad duration 'soon'"), ("0", "must be more than zero"), ("-1", "bad duration")])
def test_bad_durations(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        cli.duration(text)


def test_fragment_duration_limits():
    assert cli.fragment_duration("10") == 10
    with pytest.raises(argparse.ArgumentTypeError, match="rejects fragments over 10 s"):
        cli.fragment_duration("11")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 0.1 s"):
        cli.fragment_duration("50ms")


def test_usage_errors_exit_2(capsys, captures):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["push", "--stream", "s"])
    assert exit_.value.code == 2
    assert "--source" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--source", "testpattern", "--cameras", "0"])
    assert exit_.value.code == 2 and "'0' must be at least 1" in capsys.readouterr().err
    code = cli.main(["run", "--source", "testpattern", "--cameras", "3", "--stream", "a",
                     "--stream", "b"])
    assert code == 2 and "3 cameras but only 2 --stream names" in capsys.readouterr().err
    code = cli.main(["run", "--source", "testpattern:huge"])
    assert code == 2 and "bad size/rate 'huge'" in capsys.readouterr().err


def test_help_lists_examples_and_exit_codes(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "exit codes:" in text and "push" in text and "run" in text
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    text = capsys.readouterr().out
    for needle in ("testpattern[:WxH@FPS]", "rtsp://", "webcam:", "--stream-prefix",
                   "python -m producer_sim run", "--duration"):
        assert needle in text


def test_help_lists_each_command_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    for command in ("push", "run"):
        assert len([line for line in lines if line.split()[:1] == [command]]) == 1, lines


def test_push_of_a_file_that_is_not_video(capsys, tmp_path):
    path = tmp_path / "hostname"
    path.write_text("my-host\n")
    code = cli.main(["push", "--source", str(path), "--stream", "s",
                     "--endpoint-url", "http://127.0.0.1:9"])
    error = capsys.readouterr().err
    assert code == 2
    assert f"not a video file PyAV can read: {path}" in error
    assert "Errno" not in error


def test_loopback_endpoints_need_no_credentials(no_aws_credentials):
    aws = AwsContext("http://127.0.0.1:4567")
    assert aws.region == "us-east-1"
    assert aws.credentials.get_frozen_credentials().access_key == "local"
    assert is_loopback("http://localhost:1") and not is_loopback("https://kvs.example.com")


def test_real_aws_needs_credentials_and_region(no_aws_credentials, monkeypatch):
    with pytest.raises(AwsSetupError, match="no AWS region"):
        AwsContext(None)
    with pytest.raises(AwsSetupError, match="no AWS credentials found"):
        AwsContext(None, region="eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "SECRET")
    aws = AwsContext(None, region="eu-west-1")
    assert aws.credentials.get_frozen_credentials().access_key == "AKID"


def test_prepare_stream(kvs, no_aws_credentials):
    aws = AwsContext(kvs.endpoint_url)
    with pytest.raises(StreamSetupError, match="'cam' does not exist .*--create-stream"):
        prepare_stream("cam", aws)
    target = prepare_stream("cam", aws, create=True, retention_hours=2)
    assert target.data_endpoint == kvs.endpoint_url
    assert (target.stream_name, target.region, target.done_event) == ("cam", "us-east-1",
                                                                      "PERSISTED")
    assert target.stream_arn.endswith("/cam/" + target.stream_arn.rsplit("/", 1)[1])
    assert prepare_stream("cam", aws, create=True).stream_arn == target.stream_arn  # exists: fine
    assert prepare_stream("ephemeral", aws, create=True, retention_hours=0).done_event == \
        "RECEIVED"


def test_unreachable_endpoint(no_aws_credentials):
    with pytest.raises(StreamSetupError, match="cannot reach http://127.0.0.1:1"):
        prepare_stream("cam", AwsContext("http://127.0.0.1:1", max_attempts=1))
