"""Create or update the kvs-analytics CloudFormation stack and follow it to the end.

Contract:
- `deploy()` creates the stack when it does not exist (or only a failed first attempt is left,
  ROLLBACK_COMPLETE, which CloudFormation cannot update: it is deleted first), else updates it,
  keeping the previous value of every parameter not given. "No updates are to be performed" is
  success. It prints each new stack event while it waits, oldest first, and returns the stack's
  outputs once the stack is CREATE_COMPLETE or UPDATE_COMPLETE.
- Anything else raises `DeployError` whose message names the stack's final status and the first
  resource that failed with CloudFormation's reason for it (the root cause; later failures are
  mostly cancellations and rollbacks caused by it).
- Parameters are checked against the template before any call: an unknown name, or a camera
  stream name outside `CameraStreamPrefix` (the consumer would never read it), is an error.
  `NamePrefix` defaults to the stack name in lower case, so two stacks in one account do not
  collide.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml
from botocore.exceptions import ClientError, WaiterError

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[1] / "cloudformation" / "kvs-analytics.yaml"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,29}$")
SUCCESS = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}


class DeployError(Exception):
    """The stack could not be created or updated; the message says which resource and why."""


class ParameterError(DeployError):
    """The template or its parameters are wrong: nothing was sent to CloudFormation."""


@dataclass
class StackClient:
    """A CloudFormation client and how to wait on it (poll period, overall timeout)."""

    client: Any
    poll_seconds: float = 5.0
    timeout_seconds: float = 3600.0
    out: TextIO = field(default_factory=lambda: sys.stderr)
    sleep: Callable[[float], None] = time.sleep


def template_parameters(template_body: str) -> dict[str, dict]:
    """The template's Parameters section (short-form tags such as !Ref are read as plain data)."""
    class Loader(yaml.SafeLoader):
        pass

    def any_tag(loader, _suffix, node):
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_mapping(node, deep=True)

    Loader.add_multi_constructor("!", any_tag)
    document = yaml.load(template_body, Loader=Loader)  # a SafeLoader subclass
    if not isinstance(document, dict) or "Resources" not in document:
        raise ParameterError("the template is not a CloudFormation template (no Resources)")
    return document.get("Parameters") or {}


def check_parameters(stack_name: str, given: dict[str, str], declared: dict[str, dict],
                     previous: dict[str, str] | None = None) -> dict[str, str]:
    """`given` completed and checked: unknown names and unreadable camera names are errors."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ParameterError(f"unknown parameter {', '.join(unknown)}; the template has: "
                          f"{', '.join(sorted(declared))}")
    values = dict(given)
    if "NamePrefix" in declared and "NamePrefix" not in values and not previous:
        prefix = re.sub(r"[^a-z0-9-]", "-", stack_name.lower())[:30].strip("-")
        if not NAME_PREFIX.fullmatch(prefix):
            raise ParameterError(f"cannot derive NamePrefix from the stack name {stack_name!r}: "
                              "give --parameters NamePrefix=... (a-z, 0-9, -; 1-30, from a "
                              "letter)")
        values["NamePrefix"] = prefix
    cameras = [name.strip() for name in values.get("CameraStreamNames", "").split(",")
               if name.strip()]
    camera_prefix = values.get("CameraStreamPrefix") or (previous or {}).get(
        "CameraStreamPrefix") or str(declared.get("CameraStreamPrefix", {}).get("Default", ""))
    outside = [name for name in cameras if not name.startswith(camera_prefix)]
    if outside:
        raise ParameterError(f"camera streams {', '.join(outside)} do not start with "
                          f"CameraStreamPrefix {camera_prefix!r}: the consumer would not read them")
    if len(cameras) > 8:
        raise ParameterError(f"{len(cameras)} camera streams: the template creates at most 8 "
                          "(create more with the same prefix yourself)")
    return values


def describe(client, stack_name: str) -> dict | None:
    try:
        return client.describe_stacks(StackName=stack_name)["Stacks"][0]
    except ClientError as err:
        if "does not exist" in str(err):
            return None
        raise


def stack_outputs(client, stack_name: str) -> dict[str, str]:
    """OutputKey -> OutputValue of a stack; DeployError when there is no such stack."""
    stack = describe(client, stack_name)
    if stack is None:
        raise DeployError(f"there is no stack {stack_name!r} (in this region and account)")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def deploy(stacks: StackClient, stack_name: str, template_body: str,
           parameters: dict[str, str], *, on_failure: str = "ROLLBACK") -> dict[str, str]:
    """Create or update `stack_name`; print events while waiting; return its outputs."""
    client = stacks.client
    declared = template_parameters(template_body)
    existing = describe(client, stack_name)
    if existing is not None and existing["StackStatus"] == "ROLLBACK_COMPLETE":
        _say(stacks, f"{stack_name}: deleting the failed first attempt (ROLLBACK_COMPLETE)")
        client.delete_stack(StackName=stack_name)
        _wait_deleted(stacks, stack_name)
        existing = None
    if existing is not None and existing["StackStatus"].endswith("_IN_PROGRESS"):
        raise DeployError(f"stack {stack_name} is busy ({existing['StackStatus']}); wait for it "
                          "to finish, then deploy again")
    previous = ({p["ParameterKey"]: p.get("ParameterValue", "")
                 for p in existing.get("Parameters", [])} if existing else None)
    values = check_parameters(stack_name, parameters, declared, previous)
    seen = {e["EventId"] for e in _events(client, stack_name)} if existing else set()
    if existing is None:
        _say(stacks, f"{stack_name}: creating")
        client.create_stack(StackName=stack_name, TemplateBody=template_body,
                            Parameters=_given(values), Capabilities=CAPABILITIES,
                            OnFailure=on_failure, Tags=[{"Key": "kvs-analytics",
                                                         "Value": stack_name}])
    else:
        kept = [{"ParameterKey": key, "UsePreviousValue": True}
                for key in previous if key in declared and key not in values]
        _say(stacks, f"{stack_name}: updating ({existing['StackStatus']})")
        try:
            client.update_stack(StackName=stack_name, TemplateBody=template_body,
                                Parameters=_given(values) + kept, Capabilities=CAPABILITIES)
        except ClientError as err:
            if "No updates are to be performed" in str(err):
                _say(stacks, f"{stack_name}: no changes")
                return stack_outputs(client, stack_name)
            raise
    status = _follow(stacks, stack_name, seen)
    if status not in SUCCESS:
        raise DeployError(_failure(client, stack_name, status))
    _say(stacks, f"{stack_name}: {status}")
    return stack_outputs(client, stack_name)


def _given(values: dict[str, str]) -> list[dict]:
    return [{"ParameterKey": key, "ParameterValue": str(value)} for key, value in values.items()]


def _events(client, stack_name: str) -> list[dict]:
    """Every event of the stack, oldest first."""
    events = []
    for page in client.get_paginator("describe_stack_events").paginate(StackName=stack_name):
        events.extend(page.get("StackEvents", []))
    return sorted(events, key=lambda e: e["Timestamp"])


def _follow(stacks: StackClient, stack_name: str, seen: set[str]) -> str:
    """Print new events until the stack settles; return its final status."""
    deadline = time.monotonic() + stacks.timeout_seconds
    while True:
        _print_new_events(stacks, stack_name, seen)
        status = describe(stacks.client, stack_name)["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            _print_new_events(stacks, stack_name, seen)  # those that came with the end
            return status
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack_name} still {status} after "
                              f"{stacks.timeout_seconds:.0f} s; it goes on in CloudFormation")
        stacks.sleep(stacks.poll_seconds)


def _print_new_events(stacks: StackClient, stack_name: str, seen: set[str]) -> None:
    for event in _events(stacks.client, stack_name):
        if event["EventId"] not in seen:
            seen.add(event["EventId"])
            _say(stacks, _event_line(event))


def _event_line(event: dict) -> str:
    when = event["Timestamp"].strftime("%H:%M:%S")
    line = (f"{when}  {event.get('ResourceStatus', ''):<28} {event.get('LogicalResourceId', '')}"
            f"  ({event.get('ResourceType', '')})")
    reason = event.get("ResourceStatusReason")
    return f"{line}: {reason}" if reason else line


def _failure(client, stack_name: str, status: str) -> str:
    """'stack X is S: Resource (Type) failed: reason' for the first failed resource."""
    failed = [e for e in _events(client, stack_name)
              if e.get("ResourceStatus", "").endswith("_FAILED")
              and e.get("LogicalResourceId") != stack_name]
    if not failed:
        reason = describe(client, stack_name).get("StackStatusReason") or "no reason given"
        return f"stack {stack_name} ended {status}: {reason}"
    first = failed[0]
    return (f"stack {stack_name} ended {status}; the first resource to fail was "
            f"{first.get('LogicalResourceId')} ({first.get('ResourceType')}), "
            f"{first.get('ResourceStatus')}: "
            f"{first.get('ResourceStatusReason') or 'no reason given'}")


def _wait_deleted(stacks: StackClient, stack_name: str) -> None:
    try:
        stacks.client.get_waiter("stack_delete_complete").wait(
            StackName=stack_name, WaiterConfig={"Delay": max(1, int(stacks.poll_seconds)),
                                                "MaxAttempts": 720})
    except WaiterError as err:
        raise DeployError(f"could not delete the failed stack {stack_name}: {err}") from None


def _say(stacks: StackClient, line: str) -> None:
    print(line, file=stacks.out, flush=True)
