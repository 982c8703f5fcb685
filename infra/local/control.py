"""The kinesisvideo control plane: streams, tags, retention, and GetDataEndpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .errors import InvalidArgument, ResourceNotFound, TagsPerResourceExceeded, VersionMismatch
from .http import Request, Response
from .store import Stream, StreamStore

API_NAMES = frozenset({
    "PUT_MEDIA", "GET_MEDIA", "LIST_FRAGMENTS", "GET_MEDIA_FOR_FRAGMENT_LIST",
    "GET_HLS_STREAMING_SESSION_URL", "GET_DASH_STREAMING_SESSION_URL", "GET_CLIP", "GET_IMAGES"})
MAX_TAGS = 50


class ControlPlane:
    def __init__(self, store: StreamStore, data_endpoint: Callable[[], str]):
        self.store = store
        self.data_endpoint = data_endpoint

    def operations(self) -> dict[str, Callable[[dict], dict]]:
        return {
            "/createStream": self.create_stream, "/describeStream": self.describe_stream,
            "/listStreams": self.list_streams, "/deleteStream": self.delete_stream,
            "/tagStream": self.tag_stream, "/untagStream": self.untag_stream,
            "/listTagsForStream": self.list_tags_for_stream,
            "/getDataEndpoint": self.get_data_endpoint,
            "/updateDataRetention": self.update_data_retention,
        }

    def handler(self, operation: Callable[[dict], dict]) -> Callable[[Request, Response],
                                                                      Awaitable[None]]:
        async def handle(request: Request, response: Response) -> None:
            await response.send_json(operation(await request.json()))
        return handle

    def _stream(self, body: dict) -> Stream:
        return self.store.get(body.get("StreamName"), body.get("StreamARN"))

    def create_stream(self, body: dict) -> dict:
        tags = body.get("Tags") or {}
        _check_tags(tags)
        retention = body.get("DataRetentionInHours", 0)
        if not isinstance(retention, int) or retention < 0:
            raise InvalidArgument(f"DataRetentionInHours must be a whole number >= 0, "
                                  f"got {retention!r}")
        stream = self.store.create(
            body.get("StreamName"), media_type=body.get("MediaType", ""),
            device_name=body.get("DeviceName", ""), kms_key_id=body.get("KmsKeyId", ""),
            retention_hours=retention, tags=dict(tags))
        return {"StreamARN": stream.info.arn}

    def describe_stream(self, body: dict) -> dict:
        return {"StreamInfo": self._stream(body).info.describe()}

    def list_streams(self, body: dict) -> dict:
        limit = body.get("MaxResults", 10000)
        if not isinstance(limit, int) or not 1 <= limit <= 10000:
            raise InvalidArgument(f"MaxResults must be 1 to 10000, got {limit!r}")
        names = sorted(self.store.streams)
        condition = body.get("StreamNameCondition")
        if condition:
            if condition.get("ComparisonOperator", "BEGINS_WITH") != "BEGINS_WITH":
                raise InvalidArgument("ComparisonOperator must be BEGINS_WITH")
            prefix = condition.get("ComparisonValue", "")
            names = [n for n in names if n.startswith(prefix)]
        token = body.get("NextToken")
        if token:
            names = [n for n in names if n > token]
        page = names[:limit]
        result: dict = {"StreamInfoList": [self.store.streams[n].info.describe() for n in page]}
        if len(names) > limit:
            result["NextToken"] = page[-1]
        return result

    def delete_stream(self, body: dict) -> dict:
        if not body.get("StreamARN"):
            raise InvalidArgument("StreamARN is required")
        stream = self.store.get(arn=body["StreamARN"])
        version = body.get("CurrentVersion")
        if version and version != stream.info.version:
            raise VersionMismatch(f"Stream version is {stream.info.version}, not {version}.")
        self.store.delete(stream)
        return {}

    def tag_stream(self, body: dict) -> dict:
        stream = self._stream(body)
        tags = body.get("Tags") or {}
        _check_tags(tags)
        merged = {**stream.info.tags, **tags}
        if len(merged) > MAX_TAGS:
            raise TagsPerResourceExceeded(f"A stream can have at most {MAX_TAGS} tags.")
        stream.info.tags = merged
        self.store.save(stream)
        return {}

    def untag_stream(self, body: dict) -> dict:
        stream = self._stream(body)
        keys = body.get("TagKeyList")
        if not isinstance(keys, list):
            raise InvalidArgument("TagKeyList must be a list of tag keys")
        stream.info.tags = {k: v for k, v in stream.info.tags.items() if k not in keys}
        self.store.save(stream)
        return {}

    def list_tags_for_stream(self, body: dict) -> dict:
        return {"Tags": dict(self._stream(body).info.tags)}

    def get_data_endpoint(self, body: dict) -> dict:
        if body.get("APIName") not in API_NAMES:
            raise InvalidArgument(f"APIName must be one of {sorted(API_NAMES)}, "
                                  f"got {body.get('APIName')!r}")
        self._stream(body)
        return {"DataEndpoint": self.data_endpoint()}

    def update_data_retention(self, body: dict) -> dict:
        stream = self._stream(body)
        if body.get("CurrentVersion") != stream.info.version:
            raise VersionMismatch(f"Stream version is {stream.info.version}.")
        change = body.get("DataRetentionChangeInHours")
        operation = body.get("Operation")
        if not isinstance(change, int) or change < 1:
            raise InvalidArgument("DataRetentionChangeInHours must be a whole number >= 1")
        if operation == "INCREASE_DATA_RETENTION":
            stream.info.retention_hours += change
        elif operation == "DECREASE_DATA_RETENTION":
            if change > stream.info.retention_hours:
                raise InvalidArgument("cannot decrease retention below 0 hours")
            stream.info.retention_hours -= change
        else:
            raise InvalidArgument("Operation must be INCREASE_DATA_RETENTION or "
                                  "DECREASE_DATA_RETENTION")
        stream.info.version = str(int(stream.info.version) + 1)
        self.store.save(stream)
        return {}


def _check_tags(tags) -> None:
    if not isinstance(tags, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidArgument("Tags must be a map of string keys to string values")
    if len(tags) > MAX_TAGS:
        raise TagsPerResourceExceeded(f"A stream can have at most {MAX_TAGS} tags.")


__all__ = ["ControlPlane", "ResourceNotFound"]
