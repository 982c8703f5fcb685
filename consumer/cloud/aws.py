"""Region, credentials and boto3 clients for one AWS endpoint: real AWS, or the local stack.

Shared by the consumer and the camera simulator so both resolve settings the same way. Region:
the one given (--region, aws.region), else AWS_REGION (which botocore ignores, while the AWS CLI
and other SDKs read it first), else botocore's chain (AWS_DEFAULT_REGION, the profile); for a
loopback endpoint (the local stack), which checks no signature, us-east-1 and placeholder
credentials when none are configured. Both are checked when the context is made, before any
client (or model) is.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections import Counter
from urllib.parse import urlsplit

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import NoRegionError

LOCAL_REGION = "us-east-1"
NO_REGION = "no AWS region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION)"


class AwsSetupError(Exception):
    """No region or credentials for the endpoint asked for."""


class MissingRegion(AwsSetupError):
    """No region given, in AWS_REGION, AWS_DEFAULT_REGION or the profile."""

    def __init__(self, message: str = NO_REGION):
        super().__init__(message)


def resolve_region(region: str | None = None, environ=None, session=None) -> str | None:
    """`region`, else AWS_REGION, else botocore's chain (AWS_DEFAULT_REGION, the profile)."""
    environ = os.environ if environ is None else environ
    session = session or botocore.session.get_session()
    return region or environ.get("AWS_REGION") or session.get_config_variable("region") or None


def is_loopback(endpoint_url: str | None) -> bool:
    if not endpoint_url:
        return False
    host = urlsplit(endpoint_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiCalls:
    """Counts the AWS API calls made by clients it is attached to, per "service:Operation", so
    status lines and benchmarks can show the calls per camera-hour that drive cost (a call is
    counted once, whatever botocore's retries)."""

    def __init__(self):
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def attach(self, client) -> None:
        service = client.meta.service_model.service_name
        client.meta.events.register("before-call", lambda **kw: self._count(service, kw))

    def _count(self, service: str, event: dict) -> None:
        operation = event.get("model").name if event.get("model") is not None else "?"
        with self._lock:
            self._counts[f"{service}:{operation}"] += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class AwsContext:
    """Region, credentials and clients for one endpoint (None: real AWS)."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None,
                 max_attempts: int = 3, calls: ApiCalls | None = None):
        self.endpoint_url = endpoint_url
        self.calls = calls
        self.max_attempts = max_attempts  # botocore's, per call
        session = botocore.session.get_session()
        region = resolve_region(region, session=session)
        if not region:
            if not endpoint_url:
                raise MissingRegion()
            region = LOCAL_REGION
        self.region = region
        credentials = session.get_credentials()
        keys = {}
        if credentials is None:
            if not is_loopback(endpoint_url):
                raise AwsSetupError(
                    "no AWS credentials found: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                    "AWS_PROFILE, or configure ~/.aws/credentials")
            # A local service does not check who signs; any key will do.
            credentials = Credentials("local", "local")
            keys = {"aws_access_key_id": "local", "aws_secret_access_key": "local"}
        self.credentials = credentials
        self._session = boto3.session.Session(region_name=region, **keys)

    def client(self, service: str = "kinesisvideo", endpoint_url: str | None = None,
               read_timeout: float = 30, connect_timeout: float = 5):
        config = Config(retries={"max_attempts": self.max_attempts, "mode": "standard"},
                        connect_timeout=connect_timeout, read_timeout=read_timeout)
        try:
            client = self._session.client(service, endpoint_url=endpoint_url or self.endpoint_url,
                                          region_name=self.region, config=config)
        except NoRegionError:
            raise MissingRegion() from None
        if self.calls is not None:
            self.calls.attach(client)
        return client


def open_get_media(aws: AwsContext, start_selector: dict, stream_name: str | None = None,
                   stream_arn: str | None = None):
    """GetMedia as AWS requires it: GetDataEndpoint first, then the media client there.

    Returns the response's streaming Payload.
    """
    target = {"StreamName": stream_name} if stream_name else {"StreamARN": stream_arn}
    endpoint = aws.client("kinesisvideo").get_data_endpoint(APIName="GET_MEDIA", **target)
    media = aws.client("kinesis-video-media", endpoint_url=endpoint["DataEndpoint"],
                       read_timeout=120)
    return media.get_media(StartSelector=start_selector, **target)["Payload"]
