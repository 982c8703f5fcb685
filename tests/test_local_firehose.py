"""The local stack's Firehose leg (infra.local.firehose): records put on the data stream with
boto3 end up in the bucket as the stack's delivery stream lays them out in AWS, read back with
boto3 from moto's S3."""

from __future__ import annotations

import gzip
import json
import re
import time

import pytest

from infra.local.firehose import FirehoseBridge
from infra.local.resources import create_resources
from infra.local.stack import LocalStack

DAY = 1_714_564_800.0  # 2024-05-01T12:00:00Z
NAME = re.compile(r"kvs-analytics-records-1-\d{4}(-\d\d){5}-[0-9a-f-]{36}\.json\.gz")


@pytest.fixture(scope="module")
def stack():
    with LocalStack() as local:
        yield local


def frame(stream: str, at: float, index: int) -> dict:
    return {"RecordType": "Frame", "RecordId": f"{stream}-{index}",
            "InputInformation": {"KinesisVideo": {"StreamName": stream,
                                                  "ProducerTimestamp": at}}}


def lake(s3, bucket: str, prefix: str) -> dict[str, list[dict]]:
    """Folder -> the records in its objects (names checked as Firehose's)."""
    folders: dict[str, list[dict]] = {}
    for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        folder, _, name = item["Key"].rpartition("/")
        assert NAME.fullmatch(name), name
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
        lines = body.decode().splitlines()
        folders.setdefault(folder, []).extend(  # the error output holds them as they came
            lines if "/records-errors/" in f"/{folder}" else map(json.loads, lines))
    return folders


def put(kinesis, stream: str, records: list) -> None:
    for record in records:
        data = record if isinstance(record, bytes) else json.dumps(record).encode()
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey="k")


def test_records_land_partitioned_by_type_stream_and_day(stack):
    create_resources(stack, "records-a", "lake-a", [])
    kinesis, s3 = stack.client("kinesis"), stack.client("s3")
    records = [frame("cam-1", DAY, i) for i in range(3)] + [
        frame("cam-2", DAY + 86_400, 0),
        {"RecordType": "Event", "EventId": "e1",
         "InputInformation": {"KinesisVideo": {"StreamName": "cam-1", "ProducerTimestamp": DAY}}},
        {"RecordType": "Frame", "RecordId": "f1",
         "InputInformation": {"File": {"VideoId": "clip-0eda860102b1", "ProducerTimestamp": 9.8}}},
        b"not json", {"RecordType": "Frame", "InputInformation": {"KinesisVideo": {
            "StreamName": "../escape", "ProducerTimestamp": DAY}}}]
    put(kinesis, "records-a", records)
    bridge = FirehoseBridge(kinesis, s3, "records-a", "lake-a", prefix="out/",
                            buffer_seconds=0.3).start()
    deadline = time.monotonic() + 20
    while bridge.objects < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    bridge.stop()
    got = lake(s3, "lake-a", "out/")
    assert [r["RecordId"] for r in got["out/records/type=Frame/stream=cam-1/date=2024-05-01"]] \
        == ["cam-1-0", "cam-1-1", "cam-1-2"]  # in stream order
    assert len(got["out/records/type=Frame/stream=cam-2/date=2024-05-02"]) == 1
    assert [r["EventId"] for r in got["out/records/type=Event/stream=cam-1/date=2024-05-01"]] \
        == ["e1"]
    assert len(got["out/records/type=Frame/stream=clip-0eda860102b1/date=1970-01-01"]) == 1
    errors = [folder for folder in got if folder.startswith("out/records-errors/")]
    assert len(errors) == 1 and errors[0].startswith("out/records-errors/processing-failed/")
    assert got[errors[0]][0] == "not json" and "../escape" in got[errors[0]][1]
    assert bridge.errors == 2 and not any("escape" in folder for folder in got)
    assert bridge.records == len(records)


def test_buffers_are_written_by_size_by_age_and_at_stop(stack):
    create_resources(stack, "records-b", "lake-b", [])
    kinesis, s3 = stack.client("kinesis"), stack.client("s3")
    put(kinesis, "records-b", [frame("cam-1", DAY, i) for i in range(6)])
    # by size: a buffer is written once it holds 2 records' bytes; nothing waits for an age
    size = len(json.dumps(frame("cam-1", DAY, 0)).encode()) + 1
    bridge = FirehoseBridge(kinesis, s3, "records-b", "lake-b", prefix="size/",
                            buffer_seconds=3600, buffer_bytes=2 * size).start()
    deadline = time.monotonic() + 20
    while bridge.objects < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bridge.objects == 3
    bridge.stop()
    # at stop: a buffer younger than its interval is still written
    put(kinesis, "records-b", [frame("cam-9", DAY, 0)])
    late = FirehoseBridge(kinesis, s3, "records-b", "lake-b", prefix="stop/",
                          buffer_seconds=3600).start()
    time.sleep(1.0)
    assert late.objects == 0  # younger than an hour: still buffered
    late.stop()
    got = lake(s3, "lake-b", "stop/")
    assert sum(len(records) for records in got.values()) == 7  # read from the shard's start


def test_the_local_stack_runs_the_bridge():
    """`python -m infra.local --create-resources --firehose`: records put on its data stream
    are in its bucket, partitioned, within the buffer interval; SIGTERM stops it cleanly."""
    import signal
    import subprocess
    import sys

    import boto3

    from tests.conftest import REPO
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local", "--create-resources", "--firehose",
         "--firehose-buffer-seconds", "0.5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        endpoints = json.loads(process.stdout.readline())
        clients = {name: boto3.client(name, endpoint_url=endpoints[name],
                                      region_name=endpoints["region"],
                                      aws_access_key_id="local", aws_secret_access_key="local")
                   for name in ("kinesis", "s3")}
        put(clients["kinesis"], "video-analytics", [frame("cam-1", DAY, i) for i in range(4)])
        deadline = time.monotonic() + 20
        got: dict = {}
        while sum(map(len, got.values())) < 4 and time.monotonic() < deadline:
            time.sleep(0.2)
            got = lake(clients["s3"], "video-analytics", "records/")
        assert list(got) == ["records/type=Frame/stream=cam-1/date=2024-05-01"]
        [records] = got.values()
        assert [r["RecordId"] for r in records] == [f"cam-1-{i}" for i in range(4)]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
