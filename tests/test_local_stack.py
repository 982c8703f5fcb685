"""`python -m infra.local`: one command gives every AWS endpoint the consumer needs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import boto3

from infra.local.stack import LOCAL_CREDENTIALS


def test_python_m_infra_local_prints_working_endpoints_and_stops_on_sigint():
    process = subprocess.Popen([sys.executable, "-m", "infra.local"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        endpoints = json.loads(process.stdout.readline())
        assert set(endpoints) == {"region", "kinesisvideo", "s3", "kinesis", "dynamodb"}

        def client(name, key=None):
            return boto3.client(name, endpoint_url=endpoints[key or name],
                                region_name=endpoints["region"], **LOCAL_CREDENTIALS)

        client("kinesisvideo").create_stream(StreamName="cam")
        assert [s["StreamName"] for s in client("kinesisvideo").list_streams()["StreamInfoList"]] \
            == ["cam"]
        client("s3").create_bucket(Bucket="frames")
        client("s3").put_object(Bucket="frames", Key="k", Body=b"jpeg")
        assert client("s3").get_object(Bucket="frames", Key="k")["Body"].read() == b"jpeg"
        client("kinesis").create_stream(StreamName="records", ShardCount=1)
        assert client("kinesis").list_streams()["StreamNames"] == ["records"]
        client("dynamodb").create_table(
            TableName="checkpoints", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}])
        assert client("dynamodb").list_tables()["TableNames"] == ["checkpoints"]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(15) == 0


def test_bad_arguments_are_named():
    result = subprocess.run([sys.executable, "-m", "infra.local", "--retention", "-1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--retention" in result.stderr
