"""Batch outputs to S3 while the analysis goes on: boto3's managed transfer from the output folder.

Each object is uploaded as soon as it is written (`submit`), by a pool of `concurrency` threads;
an object of `batch.upload_threshold_mb` or more goes up in parts of `batch.upload_part_size_mb`,
`concurrency` parts at once (s3transfer's multipart upload: a failed part is retried, not the
whole object). Every object carries the metadata the live consumer gives it plus
`source-sha256`, the content hash of the video it came from, by which a later batch, on this
machine or another, can tell the video was done (consumer.batch.manifest). `wait` returns the
errors of a set of uploads (empty: all durable in S3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from consumer.config import Batch

MB = 1024 * 1024


class Uploader:
    def __init__(self, client, bucket: str, settings: Batch, concurrency: int = 8):
        self.client = client
        self.bucket = bucket
        self.transfer = TransferConfig(multipart_threshold=settings.upload_threshold_mb * MB,
                                       multipart_chunksize=settings.upload_part_size_mb * MB,
                                       max_concurrency=concurrency, use_threads=True)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="upload")
        self._last: dict[str, Future] = {}  # per key, its latest upload
        self.uploaded = 0
        self.bytes = 0

    def submit(self, key: str, path: Path, content_type: str,
               metadata: Mapping[str, str]) -> Future:
        """Upload the file at `path` as `key`. A key written again (a pose window rewritten
        with more rows) is uploaded after its earlier upload ends, so the last write wins."""
        before = self._last.get(key)
        upload = self._pool.submit(self._upload, key, Path(path), content_type, dict(metadata),
                                   before)
        self._last[key] = upload
        return upload

    def _upload(self, key: str, path: Path, content_type: str, metadata: dict,
                before: Future | None) -> None:
        if before is not None:
            try:
                before.result()
            except (BotoCoreError, ClientError, OSError):
                pass  # this upload carries the newer bytes anyway
        self.client.upload_file(str(path), self.bucket, key, Config=self.transfer,
                                ExtraArgs={"ContentType": content_type, "Metadata": metadata})
        self.uploaded += 1
        self.bytes += path.stat().st_size

    def put_bytes(self, key: str, body: bytes, content_type: str,
                  metadata: Mapping[str, str]) -> None:
        """A small object (a summary, the manifest), at once."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                               Metadata=dict(metadata))

    def wait(self, uploads: Iterable[Future]) -> list[str]:
        errors = []
        for upload in uploads:
            try:
                upload.result()
            except (BotoCoreError, ClientError, OSError) as err:
                errors.append(str(err))
        self._last = {key: f for key, f in self._last.items() if not f.done()}
        return errors

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._last.clear()


def done_in_s3(client, bucket: str, key: str, sha256: str) -> bool:
    """Whether `key` (a video's summary, written last) is in the bucket with that content hash."""
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return head.get("Metadata", {}).get("source-sha256") == sha256
