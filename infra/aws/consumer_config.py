"""A consumer configuration for a deployed stack, from the stack's outputs.

The same values the launch template's user data writes on each instance (the stack's data
stream, bucket and prefix, lease table, camera prefix and processor), so a consumer started by
hand (a laptop, a one-off instance) joins the fleet: `python -m infra.aws config --stack NAME >
consumer.yaml`. Everything else keeps its default; any key can be overridden with a KVSA_
variable (e.g. KVSA_AWS__ENDPOINTS for the local stack) or by editing the file.
"""

from __future__ import annotations

from typing import Any

import yaml

# stack output -> where it goes in the consumer config
REQUIRED_OUTPUTS = ("Region", "CameraStreamPrefix", "Processor", "DataStreamName", "BucketName",
                    "LeaseTableName")


def consumer_config(outputs: dict[str, str]) -> dict[str, Any]:
    """The consumer config (a mapping for consumer.config.load_config) of a stack's outputs."""
    missing = [key for key in REQUIRED_OUTPUTS if not outputs.get(key)]
    if missing:
        raise ValueError(f"the stack has no output {', '.join(missing)}: is it a kvs-analytics "
                         "stack, and finished deploying?")
    s3: dict[str, Any] = {"bucket": outputs["BucketName"]}
    prefix = outputs.get("OutputPrefix", "-")
    if prefix not in ("", "-"):
        s3["prefix"] = prefix.strip("/")
    return {
        "aws": {"region": outputs["Region"]},
        "streams": {"prefix": outputs["CameraStreamPrefix"]},
        "processing": {"processor": outputs["Processor"]},
        "outputs": {"kinesis": {"stream": outputs["DataStreamName"]}, "s3": s3},
        "checkpoint": {"table": outputs["LeaseTableName"]},
    }


def consumer_config_yaml(stack_name: str, outputs: dict[str, str]) -> str:
    header = (f"# consumer configuration for the CloudFormation stack {stack_name}\n"
              "# (python -m infra.aws config); every key: infra/examples/consumer.yaml\n")
    return header + yaml.safe_dump(consumer_config(outputs), sort_keys=False)
