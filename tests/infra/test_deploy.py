"""`python -m infra.aws` against moto's server: deploy the template, read every resource back.

moto's CloudFormation reports CREATE_COMPLETE for resource types it does not implement, so the
checks below look at the resources themselves. What moto cannot show (checked only by cfn-lint
and tests/infra/test_template.py, and named in the README, "Deploy to AWS"):
- not created at all by moto: AWS::KinesisVideo::Stream (the camera streams),
  AWS::KinesisFirehose::DeliveryStream, AWS::CloudWatch::Alarm, AWS::S3::BucketPolicy,
  AWS::Glue::Database, AWS::Glue::Table, AWS::Athena::WorkGroup, AWS::Logs::LogStream;
- created without these properties: the bucket's public access block, lifecycle rules and
  ownership controls (moto applies only its encryption and tags), the data stream's capacity
  mode and encryption, the table's point-in-time recovery and SSE.
Then the consumer runs end to end with the config `config --stack` wrote, on the local stack
(our Kinesis Video service + the same moto server), writing into the stack's resources.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from consumer.config import load_config
from consumer.demo import read_all_records
from consumer.fleet.lease_table import LeaseTable
from infra.aws import DeployError, StackClient, deploy
from infra.local.limits import Limits
from infra.local.stack import LOCAL_CREDENTIALS, LocalStack

from ..conftest import CAPTURES, REPO

pytestmark = pytest.mark.slow
STACK = "kvsa-test"
PREFIX = "kvsa-test"  # NamePrefix: the stack name in lower case
CAMERAS = ["cam-front", "cam-back"]
ENV = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
       "AWS_DEFAULT_REGION": "us-east-1", "PYTHONUNBUFFERED": "1"}


def cli(stack: LocalStack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "infra.aws", args[0], "--stack", STACK, "--endpoint-url",
               stack.endpoints["s3"], "--region", stack.region, *args[1:]]
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=ENV)


@pytest.fixture(scope="module")
def local():
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as stack:
        yield stack


@pytest.fixture(scope="module")
def deployed(local):
    """The stack deployed with the deploy command; its outputs."""
    ec2 = moto(local, "ec2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24")["Subnet"]["SubnetId"]
               for i in (1, 2)]
    ami = ec2.describe_images()["Images"][0]["ImageId"]
    result = cli(local, "deploy", "--poll", "0.2", "--parameters", f"VpcId={vpc}",
                 f"SubnetIds={','.join(subnets)}", f"ImageId={ami}",
                 f"CameraStreamNames={','.join(CAMERAS)}", "OutputPrefix=video/",
                 "Processor=none", "DesiredCapacity=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "CREATE_COMPLETE" in result.stderr  # the events as they came
    outputs = dict(line.split("\t", 1) for line in result.stdout.splitlines())
    return {"outputs": outputs, "vpc": vpc, "subnets": subnets, "log": result.stderr}


def moto(local: LocalStack, service: str):
    """A client of moto's server for a service the local stack has no endpoint entry for."""
    import boto3
    return boto3.client(service, endpoint_url=local.endpoints["s3"], region_name=local.region,
                        **LOCAL_CREDENTIALS)


def physical_ids(local) -> dict[str, str]:
    summaries = moto(local, "cloudformation").list_stack_resources(
        StackName=STACK)["StackResourceSummaries"]
    return {s["LogicalResourceId"]: s["PhysicalResourceId"] for s in summaries
            if s["LogicalResourceId"]}


def test_deploy_prints_events_and_outputs(deployed):
    outputs = deployed["outputs"]
    assert outputs["BucketName"] == f"{PREFIX}-123456789012-us-east-1"
    assert outputs["DataStreamName"] == f"{PREFIX}-records"
    assert outputs["LeaseTableName"] == f"{PREFIX}-leases"
    assert outputs["OutputPrefix"] == "video/"
    assert outputs["RepositoryUri"].endswith(f".amazonaws.com/{PREFIX}")
    # moto records only the stack's own events (AWS adds one per resource)
    assert re.search(r"CREATE_COMPLETE\s+kvsa-test\s+\(AWS::CloudFormation::Stack\)",
                     deployed["log"])


def test_bucket(local, deployed):
    s3 = local.client("s3")
    bucket = deployed["outputs"]["BucketName"]
    s3.head_bucket(Bucket=bucket)
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # public access block, lifecycle, ownership, bucket policy: not applied by moto (module doc)


def test_data_stream(local, deployed):
    summary = local.client("kinesis").describe_stream_summary(
        StreamName=deployed["outputs"]["DataStreamName"])["StreamDescriptionSummary"]
    assert summary["StreamStatus"] == "ACTIVE"
    assert summary["StreamARN"] == deployed["outputs"]["DataStreamArn"]
    assert summary["RetentionPeriodHours"] == 24


def test_lease_table(local, deployed):
    table = local.client("dynamodb").describe_table(
        TableName=deployed["outputs"]["LeaseTableName"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    # the consumer accepts it as its lease table
    LeaseTable(local.client("dynamodb"), table["TableName"], "probe").ensure_table(timeout=5)


def policy_document(response: dict) -> dict:
    """An inline policy as a dict: AWS returns URL-encoded JSON (boto3 decodes it); moto's
    CloudFormation stores the Python repr of the template's dict, which is decoded here."""
    document = response["PolicyDocument"]
    if isinstance(document, dict):
        return document
    text = urllib.parse.unquote(document)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return ast.literal_eval(text)


def test_consumer_role_and_instance_profile(local, deployed):
    iam = moto(local, "iam")
    ids = physical_ids(local)
    role = ids["ConsumerRole"]
    trust = iam.get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    document = policy_document(iam.get_role_policy(RoleName=role, PolicyName="consumer"))
    by_sid = {s["Sid"]: s for s in document["Statement"]}
    assert by_sid["WriteRecords"]["Resource"] == deployed["outputs"]["DataStreamArn"]
    assert "kinesis:PutRecords" in by_sid["WriteRecords"]["Action"]
    bucket_arn = f"arn:aws:s3:::{deployed['outputs']['BucketName']}"
    assert f"{bucket_arn}/video/frames/*" in by_sid["WriteObjects"]["Resource"]
    assert by_sid["ReadCameraStreams"]["Resource"] == \
        "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-*/*"
    assert by_sid["Leases"]["Resource"].endswith(f":table/{PREFIX}-leases")
    profiles = iam.list_instance_profiles_for_role(RoleName=role)["InstanceProfiles"]
    assert [p["InstanceProfileName"] for p in profiles] == [ids["ConsumerInstanceProfile"]]
    firehose = policy_document(iam.get_role_policy(RoleName=ids["FirehoseRole"],
                                                   PolicyName="records-to-s3"))
    assert {s["Sid"] for s in firehose["Statement"]} == {"ReadRecords", "Bucket", "WriteRecords",
                                                         "Logs"}


def test_camera_producer_policy(local, deployed):
    iam = moto(local, "iam")
    arn = deployed["outputs"]["CameraProducerPolicyArn"]
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    statement, = iam.get_policy_version(PolicyArn=arn, VersionId=version)[
        "PolicyVersion"]["Document"]["Statement"]
    # moto leaves AWS::NoValue in lists as null (CloudFormation drops it)
    resources = [r for r in statement["Resource"] if r]
    assert resources == [f"arn:aws:kinesisvideo:us-east-1:123456789012:stream/{c}/*"
                         for c in CAMERAS]


def test_repository(local, deployed):
    repo, = moto(local, "ecr").describe_repositories(repositoryNames=[PREFIX])["repositories"]
    assert repo["repositoryUri"] == deployed["outputs"]["RepositoryUri"]


def test_launch_template_user_data_writes_a_valid_config(local, deployed):
    ec2 = moto(local, "ec2")
    version, = ec2.describe_launch_template_versions(
        LaunchTemplateId=deployed["outputs"]["LaunchTemplateId"])["LaunchTemplateVersions"]
    data = version["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["IamInstanceProfile"]["Arn"].endswith(physical_ids(local)[
        "ConsumerInstanceProfile"])
    script = base64.b64decode(data["UserData"]).decode()
    config_text = script.split("<<'CONFIG'\n", 1)[1].split("\nCONFIG\n", 1)[0]
    config = load_config(data=yaml.safe_load(config_text), environ={})
    outputs = deployed["outputs"]
    assert config.outputs.kinesis.stream == outputs["DataStreamName"]
    assert config.outputs.s3.bucket == outputs["BucketName"]
    assert config.outputs.s3.prefix == "video"
    assert config.checkpoint.table == outputs["LeaseTableName"]
    assert config.streams.prefix == "cam-"
    assert config.health.emf and config.health.fleet == PREFIX  # the alarms' dimension Fleet
    assert "run --config /etc/kvs-analytics/consumer.yaml --processes auto" in script
    assert f"{outputs['RepositoryUri']}:latest" in script
    assert "--gpus all" not in script  # Processor=none: no GPU flag


def test_auto_scaling_group(local, deployed):
    group, = moto(local, "autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[deployed["outputs"]["AutoScalingGroupName"]])["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (1, 4, 2)
    assert group["LaunchTemplate"]["LaunchTemplateId"] == deployed["outputs"]["LaunchTemplateId"]
    assert set(group["VPCZoneIdentifier"].split(",")) == set(deployed["subnets"])


def test_log_groups_and_security_group(local, deployed):
    logs = moto(local, "logs")
    groups = {g["logGroupName"]: g for g in logs.describe_log_groups()["logGroups"]}
    assert groups[f"/kvs-analytics/{PREFIX}"]["retentionInDays"] == 30
    assert f"/aws/kinesisfirehose/{PREFIX}-records" in groups
    group, = moto(local, "ec2").describe_security_groups(
        GroupIds=[physical_ids(local)["ConsumerSecurityGroup"]])["SecurityGroups"]
    assert group["VpcId"] == deployed["vpc"]
    assert group["IpPermissions"] == []  # nothing comes in


def test_outputs_and_config_commands(local, deployed, tmp_path):
    result = cli(local, "outputs", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == deployed["outputs"]
    result = cli(local, "config")
    assert result.returncode == 0, result.stderr
    path = tmp_path / "consumer.yaml"
    path.write_text(result.stdout)
    config = load_config(path, environ={})
    assert config.outputs.kinesis.stream == deployed["outputs"]["DataStreamName"]
    assert config.outputs.s3.bucket == deployed["outputs"]["BucketName"]
    assert config.outputs.s3.prefix == "video"
    assert config.checkpoint.table == deployed["outputs"]["LeaseTableName"]
    assert config.processing.processor.value == "none"
    assert config.aws.region == "us-east-1" and not config.aws.endpoints


def test_bad_parameters_exit_2_before_any_call(local):
    result = cli(local, "deploy", "--parameters", "NoSuchParameter=1")
    assert result.returncode == 2 and "unknown parameter NoSuchParameter" in result.stderr
    result = cli(local, "deploy", "--parameters", "CameraStreamNames=lobby-1")
    assert result.returncode == 2 and "do not start with CameraStreamPrefix" in result.stderr
    result = cli(local, "outputs")
    assert result.returncode == 0  # the stack is untouched


def test_missing_stack_is_a_clear_error(local):
    result = subprocess.run(
        [sys.executable, "-m", "infra.aws", "outputs", "--stack", "nope", "--endpoint-url",
         local.endpoints["s3"], "--region", "us-east-1"],
        check=False, capture_output=True, text=True, timeout=60, cwd=REPO, env=ENV)
    assert result.returncode == 1 and "there is no stack 'nope'" in result.stderr


class FailingCloudFormation:
    """A CloudFormation whose create fails on one resource, the way AWS reports it (moto's
    never fails: it skips what it cannot create)."""

    def __init__(self):
        self.status = None
        self.calls = 0
        start = datetime(2026, 1, 1, tzinfo=UTC)
        self.script = [
            ("kvsa", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
            ("Bucket", "AWS::S3::Bucket", "CREATE_IN_PROGRESS", None),
            ("Bucket", "AWS::S3::Bucket", "CREATE_FAILED", "kvsa-1-us-east-1 already exists"),
            ("LeaseTable", "AWS::DynamoDB::Table", "CREATE_FAILED",
             "Resource creation cancelled"),
            ("kvsa", "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE", None),
        ]
        self.events = [{"EventId": str(i), "StackName": "kvsa", "LogicalResourceId": logical,
                        "ResourceType": kind, "ResourceStatus": status,
                        "ResourceStatusReason": reason, "Timestamp": start + timedelta(seconds=i)}
                       for i, (logical, kind, status, reason) in enumerate(self.script)]
        self.shown = 0

    def describe_stacks(self, StackName):
        from botocore.exceptions import ClientError
        if self.status is None:
            raise ClientError({"Error": {"Code": "ValidationError",
                                         "Message": f"Stack with id {StackName} does not exist"}},
                              "DescribeStacks")
        self.shown = min(len(self.events), self.shown + 2)  # events arrive while polling
        status = "ROLLBACK_COMPLETE" if self.shown == len(self.events) else "CREATE_IN_PROGRESS"
        return {"Stacks": [{"StackName": StackName, "StackStatus": status}]}

    def create_stack(self, **kwargs):
        self.status = "CREATE_IN_PROGRESS"
        self.calls += 1

    def get_paginator(self, name):
        assert name == "describe_stack_events"
        events = list(reversed(self.events[:self.shown]))  # newest first, as AWS
        return type("P", (), {"paginate": lambda _self, **kw: [{"StackEvents": events}]})()


def test_a_failed_resource_is_named_with_its_reason(capsys):
    import io
    out = io.StringIO()
    client = FailingCloudFormation()
    template = (REPO / "infra" / "cloudformation" / "kvs-analytics.yaml").read_text()
    with pytest.raises(DeployError) as failure:
        deploy(StackClient(client, poll_seconds=0, out=out, sleep=lambda s: None), "kvsa",
               template, {"VpcId": "vpc-1", "SubnetIds": "subnet-1"})
    message = str(failure.value)
    assert "ROLLBACK_COMPLETE" in message
    assert "Bucket (AWS::S3::Bucket), CREATE_FAILED: kvsa-1-us-east-1 already exists" in message
    lines = out.getvalue().splitlines()
    assert lines[0] == "kvsa: creating"
    assert [line.split()[1] for line in lines[1:]] == [s for _, _, s, _ in client.script]


def _push(local, stream: str) -> None:
    clip = CAPTURES / "vogels_330.mkv"
    if not clip.exists():
        message = f"capture {clip} not found (set KVS_SHARED_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run(
        [sys.executable, "-m", "producer_sim", "push", "--source", str(clip), "--stream", stream,
         "--endpoint-url", local.endpoints["kinesisvideo"], "--create-stream"],
        check=False, capture_output=True, text=True, timeout=120, cwd=REPO, env=ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_consumer_runs_with_the_generated_config(local, deployed, tmp_path):
    """End to end on the local stack with `config --stack`'s file; only the endpoints (and a
    faster pace for the test) come from KVSA_ variables."""
    _push(local, "cam-e2e")
    kvs = local.client("kinesisvideo")
    arn = kvs.describe_stream(StreamName="cam-e2e")["StreamInfo"]["StreamARN"]
    fragments = local.client("kinesis-video-archived-media").list_fragments(
        StreamName="cam-e2e")["Fragments"]
    final = max(int(f["FragmentNumber"]) for f in fragments)
    config = tmp_path / "consumer.yaml"
    result = cli(local, "config")
    assert result.returncode == 0, result.stderr
    config.write_text(result.stdout)
    endpoints = {k: v for k, v in local.endpoints.items() if k != "region"}
    env = {**ENV, "KVSA_AWS__ENDPOINTS": json.dumps(endpoints),
           "KVSA_STREAMS__START": "EARLIEST", "KVSA_STREAMS__RELIST_SECONDS": "1",
           "KVSA_STREAMS__DEFAULTS__FRAMES": "thumbnail",
           "KVSA_CHECKPOINT__LEASE_SECONDS": "3", "KVSA_LOGGING__STATUS_SECONDS": "2"}
    outputs = deployed["outputs"]
    table = LeaseTable(local.client("dynamodb"), outputs["LeaseTableName"], "reader")
    log = tmp_path / "consumer.log"
    process = subprocess.Popen([sys.executable, "-m", "consumer", "run", "--config", str(config)],
                               stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=REPO, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            lease = table.lease(arn)
            if lease is not None and lease.checkpoint == final:
                break
            assert process.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        else:
            raise AssertionError("no checkpoint at the last fragment in 120 s:\n"
                                 + log.read_text()[-3000:])
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()[-3000:]
    finally:
        process.kill()
    records = read_all_records(local.client("kinesis"), outputs["DataStreamName"])
    mine = [r for r in records if r["InputInformation"]["KinesisVideo"]["StreamName"] == "cam-e2e"]
    assert mine and len({r["RecordId"] for r in mine}) == len(mine)
    assert {int(r["InputInformation"]["KinesisVideo"]["FragmentNumber"]) for r in mine} \
        >= {final}
    keys = [o["Key"] for o in local.client("s3").list_objects_v2(
        Bucket=outputs["BucketName"], Prefix="video/frames/stream=cam-e2e/").get("Contents", [])]
    assert keys, "no thumbnail under the stack's OutputPrefix"
