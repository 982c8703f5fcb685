"""Where the objects a session writes can be found, as its records name them.

Objects are always named by their S3 layout key (`consumer.formats.s3_layout`); where that key
lives depends on the writer behind the session:

- `S3Locations`: a bucket. Records say {"Bucket", "Key"}; event media (`shared`) also carry a
  presigned GET URL and when it expires (events.url_expiry_seconds), so a reader of the data
  stream needs no S3 permissions of its own to look.
- `FolderLocations`: a folder that mirrors the bucket's layout (batch mode without a bucket).
  Records say {"Path": key}, relative to that folder; there is nothing to presign.

Both read back an object written before (`fetch`: the pose window a restarted session merges
its frames into), or None when there is none.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol


class Locations(Protocol):
    def object(self, key: str) -> dict: ...  # as a frame record names it
    def shared(self, key: str) -> dict: ...  # as an event record names it (a URL where one is)
    def fetch(self, key: str) -> bytes | None: ...  # an object written before, or None


class S3Locations:
    def __init__(self, client, bucket: str, url_expiry_seconds: int):
        self.client = client
        self.bucket = bucket
        self.url_expiry_seconds = url_expiry_seconds

    def object(self, key: str) -> dict:
        return {"Bucket": self.bucket, "Key": key}

    def shared(self, key: str) -> dict:
        expiry = self.url_expiry_seconds
        url = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expiry)
        return {"Bucket": self.bucket, "Key": key, "Url": url,
                "UrlExpiresAt": round(time.time() + expiry, 3)}

    def fetch(self, key: str) -> bytes | None:
        client = self.client
        try:
            response = client.get_object(Bucket=self.bucket, Key=key)
        except client.exceptions.NoSuchKey:
            return None
        return response["Body"].read()


class FolderLocations:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def object(self, key: str) -> dict:
        return {"Path": key}

    shared = object  # a local file is looked at directly: no URL to presign

    def fetch(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
