"""`python -m consumer run` for a newcomer: region, credentials, the data stream and the bucket
are checked at start, before any model loads, and what is wrong is one message (exit 2 for no
region, 3 for what is missing); AWS_REGION and --region are honoured; a config written by
`python -m infra.local --write-config` for a stack made with `--create-resources` just works.

Every config here points the pose model at a folder that does not exist (download off): a run
that reached model loading would exit 3 naming the model file. So a message about the region
or a missing output proves the check came first, and the model's message proves the checks
passed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import boto3
import pytest
import yaml

from consumer.cloud.aws import AwsContext, MissingRegion
from consumer.demo import read_all_records
from consumer.fleet.lease_table import LeaseTable
from infra.local.stack import LOCAL_CREDENTIALS, LocalStack

from .conftest import REPO
from .test_consumer_e2e import CLIP, last_fragment, push, wait_for

MODEL_MISSING = "pose_landmarker"  # the model file's name, in the model-not-found message
NO_AWS = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
          "AWS_EC2_METADATA_DISABLED": "true"}


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without AWS region, profile or KVSA_ overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KVSA_") and k not in {"AWS_REGION", "AWS_DEFAULT_REGION",
                                                      "AWS_PROFILE"}}
    return {**env, **NO_AWS, **extra}


def config_file(tmp_path, endpoints: dict | None = None, region: str | None = None,
                data_stream: str = "records", bucket: str = "frames") -> str:
    aws: dict = {}
    if endpoints:
        aws["endpoints"] = {k: v for k, v in endpoints.items() if k != "region"}
    if region:
        aws["region"] = region
    data = {"aws": aws, "streams": {"names": ["cam-1"]},
            "processing": {"pose": {"models_dir": str(tmp_path / "no-models"),
                                    "download": False}},
            "outputs": {"kinesis": {"stream": data_stream}, "s3": {"bucket": bucket}},
            "checkpoint": {"table": "start-checks"}}
    path = tmp_path / "consumer.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_consumer(config: str, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 60):
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "consumer", "run", "--config", config, *args],
                            check=False, cwd=REPO, capture_output=True, text=True,
                            timeout=timeout,
                            env=env or environment())
    return result, time.monotonic() - started


@pytest.fixture(scope="module")
def stack():
    with LocalStack() as local:
        yield local


@pytest.fixture(scope="module")
def eu_stack():
    """A stack whose resources live in eu-west-1 (moto keeps regions apart)."""
    with LocalStack(region="eu-west-1") as local:
        local.client("kinesis").create_stream(StreamName="records", ShardCount=1)
        local.client("s3").create_bucket(
            Bucket="frames", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield local


def test_no_region_is_exit_2_at_once_before_models_load(tmp_path):
    result, elapsed = run_consumer(config_file(tmp_path))  # real AWS, no region anywhere
    assert result.returncode == 2, result.stderr
    assert "no AWS region" in result.stderr
    assert "--region" in result.stderr and "AWS_REGION" in result.stderr
    assert "aws.region" in result.stderr
    assert MODEL_MISSING not in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_no_credentials_is_exit_3_at_once_before_models_load(tmp_path):
    env = {k: v for k, v in environment(AWS_REGION="eu-west-1").items()
           if k not in {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}}
    result, elapsed = run_consumer(config_file(tmp_path), env=env)
    assert result.returncode == 3, result.stderr
    assert "no AWS credentials" in result.stderr
    assert MODEL_MISSING not in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"


def test_aws_region_is_honoured_and_comes_before_aws_default_region(monkeypatch):
    for name, value in NO_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    with pytest.raises(MissingRegion):
        AwsContext()
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert AwsContext().region == "ap-south-1"
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    assert AwsContext().region == "eu-west-1"
    assert AwsContext().client("kinesis").meta.region_name == "eu-west-1"
    assert AwsContext(region="us-west-2").region == "us-west-2"  # given beats both


def test_aws_region_and_region_option_reach_the_consumer(eu_stack, tmp_path):
    config = config_file(tmp_path, eu_stack.endpoints)  # loopback endpoints, no aws.region
    # without a region a loopback endpoint means us-east-1, where the data stream is not
    result, _ = run_consumer(config)
    assert result.returncode == 3, result.stderr
    assert "'records' (outputs.kinesis.stream) does not exist" in result.stderr
    # AWS_REGION, and --region, find it: the checks pass and the run goes on to the model
    for env, args in ((environment(AWS_REGION="eu-west-1"), ()),
                      (environment(), ("--region", "eu-west-1"))):
        result, _ = run_consumer(config, *args, env=env)
        assert result.returncode == 3, result.stderr
        assert MODEL_MISSING in result.stderr, result.stderr
        assert "does not exist" not in result.stderr


def test_fleet_takes_region_too(eu_stack, tmp_path):
    LeaseTable(eu_stack.client("dynamodb"), "start-checks", "reader").ensure_table()
    config = config_file(tmp_path, eu_stack.endpoints)
    command = [sys.executable, "-m", "consumer", "fleet", "--config", config]
    result = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True,
                            timeout=60, env=environment())
    assert result.returncode == 3 and "does not exist" in result.stderr  # us-east-1
    result = subprocess.run([*command, "--region", "eu-west-1"], check=False, cwd=REPO,
                            capture_output=True, text=True, timeout=60, env=environment())
    assert result.returncode == 0, result.stderr


def test_a_missing_bucket_or_data_stream_is_exit_3_at_once_naming_it(stack, tmp_path):
    stack.client("kinesis").create_stream(StreamName="present-records", ShardCount=1)
    stack.client("s3").create_bucket(Bucket="present-frames")
    cases = [("present-records", "missing-frames",
              ["S3 bucket 'missing-frames' (outputs.s3.bucket) does not exist"]),
             ("missing-records", "present-frames",
              ["Kinesis data stream 'missing-records' (outputs.kinesis.stream) does not exist"]),
             ("missing-records", "missing-frames", ["'missing-records'", "'missing-frames'"])]
    for data_stream, bucket, expected in cases:
        config = config_file(tmp_path, stack.endpoints, stack.region, data_stream, bucket)
        result, elapsed = run_consumer(config)
        assert result.returncode == 3, result.stderr
        for text in expected:
            assert text in result.stderr
        assert stack.endpoints["kinesis"] in result.stderr  # where it was looked for
        assert "--create-resources" in result.stderr
        assert MODEL_MISSING not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert elapsed < 10, f"took {elapsed:.1f} s"
    # with --processes the parent says it once and exits, rather than restart children forever
    result, elapsed = run_consumer(config, "--processes", "2")
    assert result.returncode == 3, result.stderr
    assert "'missing-records'" in result.stderr and MODEL_MISSING not in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s"


@pytest.mark.slow
def test_the_config_written_by_infra_local_runs_end_to_end(captures, tmp_path):
    """The README's recipe: the local stack with --create-resources --write-config, a camera,
    then `python -m consumer run --config FILE` reads it through to the last checkpoint."""
    assert CLIP.exists()
    config = tmp_path / "consumer.yaml"
    local = subprocess.Popen(
        [sys.executable, "-m", "infra.local", "--create-resources", "--stream", "cam-1",
         "--write-config", str(config), "--getmedia-idle", "1"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    consumer = None
    try:
        endpoints = json.loads(local.stdout.readline())
        region = endpoints["region"]

        def client(service):
            key = "kinesisvideo" if service.startswith("kinesis-video") else service
            return boto3.client(service, endpoint_url=endpoints[key], region_name=region,
                                **LOCAL_CREDENTIALS)
        stack = SimpleNamespace(endpoints=endpoints, client=client)
        push(stack, "cam-1")
        final = last_fragment(stack, "cam-1")
        arn = client("kinesisvideo").describe_stream(StreamName="cam-1")["StreamInfo"]["StreamARN"]
        # no model: the pipeline and outputs are what is tested here, quickly
        consumer = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config)], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "consumer.log").open("w"),
            env=environment(KVSA_PROCESSING__PROCESSOR="none", KVSA_LOGGING__STATUS_SECONDS="2",
                            KVSA_CHECKPOINT__MIN_INTERVAL_SECONDS="0.2"))

        def checkpoint():
            table = LeaseTable(client("dynamodb"), "kvs-analytics-checkpoints", "reader")
            try:
                lease = table.lease(arn)
            except client("dynamodb").exceptions.ResourceNotFoundException:
                return None
            return lease.checkpoint if lease else None
        wait_for(lambda: consumer.poll() is not None or checkpoint() == final, 90,
                 "the last checkpoint")
        assert consumer.poll() is None, (tmp_path / "consumer.log").read_text()
        consumer.send_signal(signal.SIGTERM)
        assert consumer.wait(15) == 0
        records = read_all_records(client("kinesis"), "video-analytics")
        assert records and {r["InputInformation"]["KinesisVideo"]["StreamName"]
                            for r in records} == {"cam-1"}
    finally:
        if consumer is not None:
            consumer.kill()
        local.send_signal(signal.SIGTERM)
        local.wait(15)
