"""Which streams this consumer reads: names or ARNs from config, or discovery by prefix or tags.

`discover()` is called at start and every `relist_seconds`; the service starts workers for new
streams and lets go of deleted ones. A configured stream that does not exist (yet) is reported
and looked up again at the next listing.
"""

from __future__ import annotations

import logging

from botocore.exceptions import ClientError

from consumer.config import STREAM_ARN, STREAM_NAME, Streams

log = logging.getLogger(__name__)


def discover(client, streams: Streams) -> dict[str, str]:
    """Stream name -> ARN for every stream the config selects that exists now."""
    found: dict[str, str] = {}
    for name_or_arn in streams.names:
        key = "StreamARN" if STREAM_ARN.fullmatch(name_or_arn) else "StreamName"
        try:
            info = client.describe_stream(**{key: name_or_arn})["StreamInfo"]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            log.warning("stream %s does not exist (yet); will look again", name_or_arn)
            continue
        if info.get("Status") == "ACTIVE":
            found[info["StreamName"]] = info["StreamARN"]
    if streams.prefix is not None or streams.tags:
        for info in _list(client, streams.prefix):
            if info.get("Status") != "ACTIVE" or info["StreamName"] in found:
                continue
            if streams.tags and not _has_tags(client, info["StreamARN"], streams.tags):
                continue
            found[info["StreamName"]] = info["StreamARN"]
    for name in [n for n in found if not STREAM_NAME.fullmatch(n)]:
        # KVS allows no such name; refused here, once per listing, never per frame
        log.error("stream %r: not a Kinesis Video stream name (1-256 of a-z A-Z 0-9 _ . -); "
                  "not reading it", name)
        del found[name]
    return found


def _list(client, prefix: str | None):
    kwargs: dict = {}
    if prefix:
        kwargs["StreamNameCondition"] = {"ComparisonOperator": "BEGINS_WITH",
                                         "ComparisonValue": prefix}
    while True:
        page = client.list_streams(**kwargs)
        yield from page.get("StreamInfoList", [])
        if not page.get("NextToken"):
            return
        kwargs["NextToken"] = page["NextToken"]


def _has_tags(client, arn: str, wanted: dict[str, str]) -> bool:
    try:
        tags = client.list_tags_for_stream(StreamARN=arn).get("Tags", {})
    except ClientError:
        return False
    return all(tags.get(key) == value for key, value in wanted.items())
