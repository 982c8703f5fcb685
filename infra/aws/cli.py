"""Command line: `python -m infra.aws deploy|outputs|config --stack NAME`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Deploy kvs-analytics to AWS with CloudFormation, and configure consumers for the stack.

The stack (infra/cloudformation/kvs-analytics.yaml) holds the camera streams (optional), the
records' Kinesis data stream, Firehose into the bucket, the bucket, the lease table, the ECR
repository, the fleet (launch template + Auto Scaling group of GPU instances running the image),
logs, alarms, and Glue/Athena over the output. README.md, "Deploy to AWS", walks through it all."""

EPILOG = """\
credentials and region: the usual AWS chain (AWS_PROFILE / --profile, AWS_REGION / --region,
~/.aws, an instance role); --endpoint-url sends the CloudFormation calls elsewhere (moto's
server, for tests).

examples:
  # first deploy: the VPC and subnets of the fleet are required
  python -m infra.aws deploy --stack kvsa-prod --parameters VpcId=vpc-0abc \\
      SubnetIds=subnet-0aaa,subnet-0bbb CameraStreamNames=cam-lobby,cam-door DesiredCapacity=2
  # later: only what changes (every other parameter keeps its value)
  python -m infra.aws deploy --stack kvsa-prod --parameters ImageTag=v2
  # what the stack made (bucket, data stream, repository URI, ...)
  python -m infra.aws outputs --stack kvsa-prod
  # a consumer config for the stack, e.g. to run one consumer by hand
  python -m infra.aws config --stack kvsa-prod > consumer.yaml
  python -m consumer run --config consumer.yaml

exit status: 0 done, 1 the stack failed (the message names the resource and the reason),
2 bad arguments or parameters, 3 AWS could not be reached or refused the call."""

DEPLOY_EPILOG = """\
parameters (NAME=VALUE; see the template's Parameters for all, with their defaults):
  VpcId, SubnetIds          where the consumer instances run (required on the first deploy)
  NamePrefix                prefix of every resource name (default: the stack name, lower case)
  CameraStreamPrefix        the consumers read every stream named so (default cam-)
  CameraStreamNames         up to 8 camera streams to create, comma separated
  Processor                 yolo (GPU, default), pose or none
  InstanceType, ImageId     default g5.xlarge and AWS's Deep Learning Base AMI (AL2023)
  DesiredCapacity, MinSize, MaxSize, ImageTag, OutputPrefix, DataStreamMode, ...
On an update, parameters not given keep their previous values.

Progress: one line per stack event while CloudFormation works (each resource's status and
reason). On failure the first resource that failed and CloudFormation's reason are printed, and
the exit status is 1; a first deploy that failed (ROLLBACK_COMPLETE) is deleted on the next try."""


def _client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", required=True, metavar="NAME", help="CloudFormation stack name")
    parser.add_argument("--region", help="AWS region (default: your AWS config)")
    parser.add_argument("--profile", help="AWS profile (default: AWS_PROFILE or 'default')")
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="CloudFormation endpoint (default: AWS), e.g. moto's server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m infra.aws", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    deploy = commands.add_parser(
        "deploy", help="create or update the stack, following its events",
        description="Create the stack, or update it when it exists, and wait until it is done, "
                    "printing CloudFormation's events as they come.",
        epilog=DEPLOY_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _client_args(deploy)
    deploy.add_argument("--parameters", nargs="*", default=[], metavar="NAME=VALUE",
                        help="template parameters, e.g. VpcId=vpc-0abc SubnetIds=subnet-1,subnet-2")
    deploy.add_argument("--template", type=Path, metavar="FILE",
                        help="template file (default: infra/cloudformation/kvs-analytics.yaml)")
    deploy.add_argument("--on-failure", choices=("ROLLBACK", "DELETE", "DO_NOTHING"),
                        default="ROLLBACK",
                        help="what CloudFormation does when a first create fails "
                             "(default %(default)s; DO_NOTHING keeps the resources to look at)")
    deploy.add_argument("--poll", type=float, default=5.0, metavar="SECONDS",
                        help="how often to look for new events (default %(default)s)")
    deploy.add_argument("--timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="give up waiting after this long (default %(default)s; the stack "
                             "goes on)")
    deploy.set_defaults(handler=_deploy)

    outputs = commands.add_parser(
        "outputs", help="print the stack's outputs",
        description="Print the stack's outputs, one 'NAME<TAB>VALUE' per line (or JSON).")
    _client_args(outputs)
    outputs.add_argument("--json", action="store_true", help="one JSON object instead")
    outputs.set_defaults(handler=_outputs)

    config = commands.add_parser(
        "config", help="print a consumer config (YAML) for the stack",
        description="Print a consumer configuration for the stack on stdout: its region, camera "
                    "prefix, processor, data stream, bucket and prefix, lease table, as each "
                    "instance of the fleet gets it. Every other key keeps its default "
                    "(infra/examples/consumer.yaml lists them); KVSA_* variables override.",
        epilog="example:\n  python -m infra.aws config --stack kvsa-prod > consumer.yaml\n"
               "  python -m consumer run --config consumer.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _client_args(config)
    config.set_defaults(handler=_config)
    return parser


def _cloudformation(args: argparse.Namespace):
    import boto3
    session = boto3.Session(profile_name=args.profile, region_name=args.region)
    return session.client("cloudformation", endpoint_url=args.endpoint_url)


def _parse_parameters(items: Sequence[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--parameters takes NAME=VALUE, got {item!r}")
        values[name.strip()] = value
    return values


def _deploy(args: argparse.Namespace) -> int:
    from .stack import DEFAULT_TEMPLATE, StackClient, deploy
    try:
        parameters = _parse_parameters(args.parameters)
    except ValueError as err:
        print(f"deploy: {err}", file=sys.stderr)
        return 2
    template = args.template or DEFAULT_TEMPLATE
    try:
        body = template.read_text()
    except OSError as err:
        print(f"deploy: cannot read the template {template}: {err.strerror or err}",
              file=sys.stderr)
        return 2
    stacks = StackClient(_cloudformation(args), poll_seconds=args.poll,
                         timeout_seconds=args.timeout)
    outputs = deploy(stacks, args.stack, body, parameters, on_failure=args.on_failure)
    for key in sorted(outputs):
        print(f"{key}\t{outputs[key]}")
    return 0


def _outputs(args: argparse.Namespace) -> int:
    from .stack import stack_outputs
    outputs = stack_outputs(_cloudformation(args), args.stack)
    if args.json:
        print(json.dumps(outputs, indent=2, sort_keys=True))
    else:
        for key in sorted(outputs):
            print(f"{key}\t{outputs[key]}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from .consumer_config import consumer_config_yaml
    from .stack import stack_outputs
    outputs = stack_outputs(_cloudformation(args), args.stack)
    try:
        text = consumer_config_yaml(args.stack, outputs)
    except ValueError as err:
        print(f"config: {err}", file=sys.stderr)
        return 1
    sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from .stack import DeployError, ParameterError
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except DeployError as err:
        print(f"{args.command}: {err}", file=sys.stderr)
        return 2 if isinstance(err, ParameterError) else 1
    except ClientError as err:
        print(f"{args.command}: AWS refused the call: {err}", file=sys.stderr)
        return 3
    except BotoCoreError as err:
        print(f"{args.command}: cannot reach AWS: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted (the stack operation goes on in CloudFormation)",
              file=sys.stderr)
        return 130
