"""The control plane: credentials, region, the stream (created if asked) and its PutMedia endpoint.

With an endpoint URL (a local service) boto3's `kinesisvideo` client talks to it; without one, to
real AWS with the default region and credential chain. Either way PutMedia goes where
GetDataEndpoint(APIName=PUT_MEDIA) says, as AWS requires.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from consumer.cloud.aws import AwsContext, AwsSetupError, is_loopback

__all__ = ["AwsContext", "AwsSetupError", "StreamSetupError", "StreamTarget", "is_loopback",
           "prepare_stream"]

log = logging.getLogger(__name__)

DEFAULT_RETENTION_HOURS = 24


class StreamSetupError(AwsSetupError):
    """The stream cannot be used: missing, not active, or its endpoint unreachable."""


@dataclass(frozen=True)
class StreamTarget:
    """Where and how one camera sends: the stream, its PutMedia endpoint, region and credentials."""

    stream_name: str
    data_endpoint: str
    region: str
    credentials: object
    # The ack that means "stored": PERSISTED, or RECEIVED for a stream without retention (AWS
    # sends PERSISTED only when the stream keeps data).
    done_event: str = "PERSISTED"
    stream_arn: str | None = None


def _error_code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _describe(client, name: str) -> dict | None:
    try:
        return client.describe_stream(StreamName=name)["StreamInfo"]
    except ClientError as err:
        if _error_code(err) == "ResourceNotFoundException":
            return None
        raise


def prepare_stream(name: str, aws: AwsContext, *, create: bool = False,
                   retention_hours: int = DEFAULT_RETENTION_HOURS,
                   wait_s: float = 60.0) -> StreamTarget:
    """Check (or create) the stream, wait for it to be ACTIVE, and find its PutMedia endpoint."""
    where = aws.endpoint_url or f"AWS {aws.region}"
    client = aws.client()
    try:
        info = _describe(client, name)
        if info is None:
            if not create:
                raise StreamSetupError(
                    f"stream {name!r} does not exist at {where} (pass --create-stream to create it)")
            log.info("creating stream %s (retention %d h)", name, retention_hours)
            try:
                client.create_stream(StreamName=name, DataRetentionInHours=retention_hours,
                                     MediaType="video/h264")
            except ClientError as err:
                if _error_code(err) != "ResourceInUseException":  # created meanwhile: fine
                    raise
            info = _describe(client, name) or {"Status": "CREATING"}
        deadline = time.monotonic() + wait_s
        while info.get("Status") != "ACTIVE":
            if info.get("Status") == "DELETING":
                raise StreamSetupError(f"stream {name!r} is being deleted")
            if time.monotonic() > deadline:
                raise StreamSetupError(
                    f"stream {name!r} is {info.get('Status')} after {wait_s:g} s, not ACTIVE")
            time.sleep(0.5)
            info = _describe(client, name) or {"Status": "CREATING"}
        endpoint = client.get_data_endpoint(StreamName=name, APIName="PUT_MEDIA")["DataEndpoint"]
    except ClientError as err:
        message = err.response.get("Error", {}).get("Message", "")
        raise StreamSetupError(f"stream {name!r} at {where}: {_error_code(err)}: {message}") \
            from None
    except EndpointConnectionError as err:
        raise StreamSetupError(f"cannot reach {where}: {err}") from None
    except BotoCoreError as err:
        raise StreamSetupError(f"stream {name!r} at {where}: {err}") from None
    retention = info.get("DataRetentionInHours")
    done_event = "RECEIVED" if retention == 0 else "PERSISTED"
    if done_event == "RECEIVED":
        log.info("stream %s keeps no data (retention 0): RECEIVED counts as done", name)
    return StreamTarget(stream_name=name, data_endpoint=endpoint, region=aws.region,
                        credentials=aws.credentials, done_event=done_event,
                        stream_arn=info.get("StreamARN"))
