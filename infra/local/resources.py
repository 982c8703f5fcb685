"""What a consumer needs on the local stack: its data stream, bucket and camera streams
(`python -m infra.local --create-resources`), and a consumer configuration pointing at the
stack's endpoints (`--write-config FILE`), ready for `python -m consumer run --config FILE`.

Creating is idempotent: what exists already (a restart with --data-dir) is left as it is. The
lease table is not made here: the consumer creates it at start.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from botocore.exceptions import ClientError

DATA_STREAM = "video-analytics"
BUCKET = "video-analytics"


def create_resources(stack, data_stream: str, bucket: str, cameras: list[str]) -> None:
    """The Kinesis data stream (1 shard, ACTIVE on return), the bucket and the camera streams."""
    kinesis = stack.client("kinesis")
    _exists_ok(lambda: kinesis.create_stream(StreamName=data_stream, ShardCount=1),
               "ResourceInUseException")
    s3 = stack.client("s3")
    where = ({} if stack.region == "us-east-1"
             else {"CreateBucketConfiguration": {"LocationConstraint": stack.region}})
    _exists_ok(lambda: s3.create_bucket(Bucket=bucket, **where),
               "BucketAlreadyOwnedByYou", "BucketAlreadyExists")
    kvs = stack.client("kinesisvideo")
    for camera in cameras:
        _exists_ok(lambda name=camera: kvs.create_stream(StreamName=name),
                   "ResourceInUseException")
    deadline = time.monotonic() + 30
    while kinesis.describe_stream_summary(StreamName=data_stream)[
            "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise RuntimeError(f"data stream {data_stream} did not become ACTIVE within 30 s")
        time.sleep(0.1)


def _exists_ok(create, *codes: str) -> None:
    try:
        create()
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in codes:
            raise


def consumer_config(endpoints: dict[str, str], data_stream: str, bucket: str,
                    cameras: list[str], models_dir: str | None = None) -> dict:
    """A consumer configuration for the stack's endpoints: the cameras named (every stream on
    the stack when none is), read from the earliest fragment kept."""
    streams: dict = {"names": list(cameras)} if cameras else {"prefix": ""}
    streams.update({"start": "EARLIEST", "relist_seconds": 5})
    config: dict = {
        "aws": {"region": endpoints["region"],
                "endpoints": {k: v for k, v in endpoints.items() if k != "region"}},
        "streams": streams,
        "outputs": {"kinesis": {"stream": data_stream}, "s3": {"bucket": bucket}},
    }
    if models_dir:
        config["processing"] = {"pose": {"models_dir": str(Path(models_dir).resolve())}}
    return config


HEADER = """\
# Written by `python -m infra.local --write-config` for the local stack it started
# (the endpoints change with its ports). Run: python -m consumer run --config {path}
# Every key and its default: the README's configuration reference.
"""


def write_consumer_config(path: str | Path, config: dict) -> None:
    """Validate `config` as the consumer will (consumer.config.ConfigError), then write it."""
    from consumer.config import load_config
    load_config(data=config, environ={})
    path = Path(path)
    path.write_text(HEADER.format(path=path) + yaml.safe_dump(config, sort_keys=False))
