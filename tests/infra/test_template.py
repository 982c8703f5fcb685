"""The CloudFormation template: cfn-lint passes, and every IAM statement is scoped.

IAM rules checked on every policy in the template (roles' inline policies, managed policies,
the bucket policy):
- an Allow never has `*` in an action;
- an Allow's resources are the stack's own (an ARN built from its resources or parameters),
  never `*`, except the APIs in RESOURCE_STAR below, which have no resource to scope to;
- the only Deny is the bucket's deny of non-TLS requests, which is `s3:*` for everyone on purpose.
And the consumer's role allows exactly what the consumer's code calls (read from the sources).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import botocore.session
import pytest

from ..conftest import REPO

TEMPLATE = REPO / "infra" / "cloudformation" / "kvs-analytics.yaml"

# (resource, Sid) -> (actions, why the resource must be "*")
RESOURCE_STAR = {
    ("ConsumerRole", "DiscoverStreams"): (
        {"kinesisvideo:ListStreams"},
        "ListStreams takes no resource: IAM supports only '*' for it (streams.prefix needs it)"),
    ("ConsumerRole", "PullImageToken"): (
        {"ecr:GetAuthorizationToken"},
        "GetAuthorizationToken is account-wide: IAM supports only '*' for it"),
}
# (resource, Sid): why a Deny may use a wildcard action
DENY_WILDCARD = {
    ("BucketPolicy", "DenyInsecureTransport"): "deny every S3 action over plain HTTP",
}
# actions the consumer's role leaves out although the code can call them, and why
NOT_GRANTED = {
    "dynamodb:CreateTable": "the stack creates the lease table; ensure_table only describes it",
    # writing face collections is `kvs-analytics faces`, run with an operator's credentials;
    # consumers only search them (the role's ReadFaceCollections)
    "dynamodb:TransactWriteItems": "kvs-analytics faces index/delete",
    "dynamodb:BatchWriteItem": "kvs-analytics faces delete-collection",
    "s3:DeleteObjects": "kvs-analytics faces delete-collection",
}
# operations IAM authorises under another action's name
# IAM has no action of these operations' own: the consumer's start check of the bucket, and
# batch mode's look for a video's summary
AUTHORISED_AS = {"s3:HeadBucket": "s3:ListBucket", "s3:HeadObject": "s3:GetObject"}
# services whose calls the consumer makes, as named in IAM
SERVICES = {"kinesisvideo": "kinesisvideo", "kinesis-video-media": "kinesisvideo",
            "kinesis": "kinesis", "s3": "s3", "dynamodb": "dynamodb"}


def load_template() -> dict:
    decode = pytest.importorskip("cfnlint.decode")
    template, problems = decode.decode_str(TEMPLATE.read_text())
    assert not problems, problems
    return template


def policies(template: dict):
    """(resource name, policy document) of every policy in the template."""
    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            for policy in props.get("Policies", []):
                yield name, policy["PolicyDocument"]
        elif kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy", "AWS::S3::BucketPolicy"):
            yield name, props["PolicyDocument"]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def resource_texts(resource) -> list[str]:
    """The ARN (pattern) strings of a Resource entry, with intrinsic functions unwrapped."""
    if isinstance(resource, str):
        return [resource]
    if isinstance(resource, dict):
        (function, argument), = resource.items()
        if function == "Fn::GetAtt":
            return [f"${{{'.'.join(as_list(argument))}}}"]
        if function == "Fn::Sub":
            return [argument if isinstance(argument, str) else argument[0]]
        if function == "Fn::If":
            return [t for branch in argument[1:] for t in resource_texts(branch)]
        if function == "Ref":
            return [] if argument == "AWS::NoValue" else [f"${{{argument}}}"]
    if isinstance(resource, list):
        return [t for item in resource for t in resource_texts(item)]
    raise AssertionError(f"unexpected resource form {resource!r}")


def test_cfn_lint_passes():
    cfn_lint = shutil.which("cfn-lint")
    if cfn_lint is None:
        message = "cfn-lint not installed (pip install cfn-lint, in the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    result = subprocess.run([cfn_lint, str(TEMPLATE)], check=False, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_iam_statement_is_scoped():
    template = load_template()
    checked = 0
    for name, document in policies(template):
        for statement in document["Statement"]:
            sid = statement.get("Sid", "")
            actions = set(as_list(statement["Action"]))
            where = f"{name}/{sid or '(no Sid)'}"
            if statement["Effect"] == "Deny":
                assert (name, sid) in DENY_WILDCARD, f"{where}: unexpected Deny"
                continue
            assert "NotAction" not in statement and "NotResource" not in statement, where
            for action in actions:
                assert "*" not in action, f"{where}: wildcard action {action}"
                assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z]+", action), f"{where}: {action}"
            texts = resource_texts(statement["Resource"])
            if texts == ["*"]:
                assert (name, sid) in RESOURCE_STAR, f"{where}: Resource '*' for {actions}"
                allowed, _why = RESOURCE_STAR[(name, sid)]
                assert actions == allowed, f"{where}: only {allowed} may use '*'"
            else:
                for text in texts:
                    assert text != "*", f"{where}: '*' among its resources"
                    # built from the stack's own resources or parameters
                    assert "${" in text, f"{where}: resource {text!r} is not the stack's"
            checked += 1
    assert checked >= 15  # the consumer's, Firehose's and the cameras' statements


def _role_actions(template: dict, role: str) -> set[str]:
    actions = set()
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions.update(as_list(statement["Action"]))
    return actions


def _consumer_calls() -> set[str]:
    """IAM actions of the AWS operations the consumer's code calls (method names grepped from
    consumer/, the local demo left out: it creates the local stack's resources)."""
    session = botocore.session.get_session()
    operations: dict[str, set[str]] = {}  # snake_case method -> {iam action}
    for service, prefix in SERVICES.items():
        model = session.get_service_model(service)
        for operation in model.operation_names:
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
            operations.setdefault(snake, set()).add(f"{prefix}:{operation}")
    sources = [p for p in (REPO / "consumer").rglob("*.py") if p.name != "demo.py"]
    text = "\n".join(p.read_text() for p in sources)
    found = set()
    for method, actions in operations.items():
        # client.method(...), get_waiter("table_exists") -> DescribeTable, and the operation
        # named in generate_presigned_url("get_object", ...)
        if re.search(rf"\.{method}\(|generate_presigned_url\(\s*\"{method}\"", text):
            found |= actions
    if "get_waiter(\"table_exists\")" in text:
        found.add("dynamodb:DescribeTable")
    return {AUTHORISED_AS.get(action, action) for action in found}


def test_the_consumer_role_allows_exactly_what_the_consumer_calls():
    template = load_template()
    granted = {a for a in _role_actions(template, "ConsumerRole")
               if a.split(":")[0] in set(SERVICES.values())}
    called = _consumer_calls()
    # an operation name shared by two services (describe_stream: Kinesis and Kinesis Video)
    # counts for the one the consumer grants; any other call must be granted
    missing = {a for a in called - granted
               if a not in NOT_GRANTED
               and not any(g.split(":")[1] == a.split(":")[1] for g in granted)}
    assert not missing, f"the consumer calls {sorted(missing)} but its role does not allow them"
    unused = {a for a in granted - called if a != "s3:ListBucket"}  # ListBucket: see the template
    assert not unused, f"the role allows {sorted(unused)}, which the consumer never calls"


def test_camera_producer_policy_names_only_the_created_streams():
    template = load_template()
    statement, = template["Resources"]["CameraProducerPolicy"]["Properties"][
        "PolicyDocument"]["Statement"]
    assert set(statement["Action"]) == {"kinesisvideo:PutMedia", "kinesisvideo:DescribeStream",
                                        "kinesisvideo:GetDataEndpoint"}
    texts = resource_texts(statement["Resource"])
    assert len(texts) == 8 and all(t.endswith(":stream/${Name}/*") for t in texts)


def test_example_iam_policy_matches_the_role():
    """infra/iam/consumer-policy.json (for hand-made roles) allows what the stack's role does,
    for the consumer's own calls (the stack adds ECR and logs for the container)."""
    import json
    template = load_template()
    granted = {a for a in _role_actions(template, "ConsumerRole")
               if a.split(":")[0] in set(SERVICES.values())}
    example = json.loads((REPO / "infra" / "iam" / "consumer-policy.json").read_text())
    listed = {a for s in example["Statement"] for a in as_list(s["Action"])}
    assert granted - listed <= {"s3:ListBucket"}, granted - listed
    assert listed - granted <= set(NOT_GRANTED), listed - granted


def test_template_path_is_what_the_deploy_command_uses():
    from infra.aws import DEFAULT_TEMPLATE
    assert Path(DEFAULT_TEMPLATE) == TEMPLATE
