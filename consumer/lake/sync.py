"""A lake in S3 copied to a local cache folder with boto3, so DuckDB reads it offline: the
objects under `{prefix}records/` and `{prefix}poses/`, each fetched once (an object already in
the cache with the same size is kept), laid out as in the bucket. Keys are checked before they
become paths: nothing outside the cache folder is ever written."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

KINDS = ("records/", "poses/")


def sync_lake(client, bucket: str, prefix: str, cache: Path) -> tuple[int, int]:
    """(objects fetched, objects already cached)."""
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    fetched = kept = 0
    for kind in KINDS:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                      Prefix=prefix + kind):
            for item in page.get("Contents", []):
                relative = PurePosixPath(item["Key"][len(prefix):])
                if relative.is_absolute() or ".." in relative.parts:
                    continue  # not a key this project writes: never a path outside the cache
                target = cache / relative
                if target.exists() and target.stat().st_size == item["Size"]:
                    kept += 1
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary = target.with_name(f".{target.name}.part")
                client.download_file(bucket, item["Key"], str(temporary))
                temporary.replace(target)
                fetched += 1
    return fetched, kept
