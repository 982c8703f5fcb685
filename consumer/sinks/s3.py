"""Objects to S3: concurrent uploads from memory, bounded, each acknowledged once durable.

Contract of `S3ObjectWriter`:
- `put()` hands an in-memory body to a thread pool (no temporary files). At most `concurrency`
  uploads run and `max_queued` more wait; beyond that `put()` blocks: the backpressure that
  keeps memory bounded and reaches the pipeline.
- Every object's `on_done` is called exactly once, on a pool thread: True once S3 returned
  success for the PutObject (S3 is durable on success), False if it finally failed.
- Retries: the client's own (give it botocore's "standard" retry mode, as AwsContext does), then
  more with the shared capped Backoff for errors a retry can help (5xx, throttling, timeouts,
  connection errors): forever while the writer runs (`extra_attempts=None`, the default: an S3
  outage delays the checkpoint, it never freezes it; the full queue is the backpressure), or
  up to `extra_attempts`. Errors that a retry cannot fix (no such bucket, access denied) fail at
  once. `close()` stops the retrying.
- Stage times (`stage_times`): the duration of every PutObject call, failed ones included.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from consumer.cloud.backoff import Backoff
from consumer.formats.s3_layout import check_metadata
from consumer.pipeline.stage_times import S3_CALL, StageTimes

log = logging.getLogger(__name__)

_RETRIABLE_CODES = frozenset({"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException",
                              "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable"})


@dataclass
class UploadStats:
    objects_written: int = 0
    bytes_written: int = 0
    retries: int = 0  # extra attempts made here (botocore's own are not seen)
    failures: int = 0  # objects finally failed (on_done(False))
    pending: int = 0  # queued or uploading now
    retrying: int = 0  # uploads waiting for their next attempt now


def retriable(err: Exception) -> bool:
    """Whether another attempt may succeed."""
    if isinstance(err, ClientError):
        code = err.response.get("Error", {}).get("Code", "")
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _RETRIABLE_CODES or status >= 500 or status == 429
    return isinstance(err, BotoCoreError)  # connection errors, read timeouts


class S3ObjectWriter:
    """Concurrent PutObject of in-memory bodies into one bucket (see module doc)."""

    def __init__(self, client, bucket: str, concurrency: int = 8, *,
                 max_queued: int | None = None, extra_attempts: int | None = None,
                 backoff: Backoff | None = None, stage_times: StageTimes | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._client = client
        self.bucket = bucket
        self._extra_attempts = extra_attempts
        self._backoff = backoff or Backoff()
        queued = 2 * concurrency if max_queued is None else max(0, max_queued)
        self._slots = threading.BoundedSemaphore(concurrency + queued)
        self._pool = ThreadPoolExecutor(max_workers=concurrency,
                                        thread_name_prefix=f"s3-writer-{bucket}")
        self._cond = threading.Condition()
        self._pending = 0
        self._closed = False
        self._abort = threading.Event()  # set when close() gives up: stop retrying
        self._stats = UploadStats()
        self._times = stage_times if stage_times is not None else StageTimes()

    def put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str],
            on_done: Callable[[bool], None]) -> None:
        """Queue one upload; blocks while the queue is full.

        ValueError for a key or metadata S3 cannot take (empty or >1024-byte key, non-ASCII
        metadata); RuntimeError once closed.
        """
        if not key or len(key.encode("utf-8")) > 1024:
            raise ValueError(f"S3 key must be 1-1024 bytes: {key!r:.80}")
        check_metadata(dict(metadata))
        with self._cond:
            if self._closed:
                raise RuntimeError(f"S3 writer for {self.bucket} is closed")
        self._slots.acquire()
        with self._cond:
            if self._closed:
                self._slots.release()
                raise RuntimeError(f"S3 writer for {self.bucket} is closed")
            self._pending += 1
        self._pool.submit(self._upload, key, bytes(body), content_type, dict(metadata), on_done)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every upload queued so far has settled; False at the timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Drain and stop. Uploads not settled by the timeout end with on_done(False)."""
        with self._cond:
            self._closed = True
        drained = self.flush(timeout)
        if not drained:
            self._abort.set()
            log.error("S3 bucket %s: %d uploads unfinished when close timed out", self.bucket,
                      self.stats().pending)
        self._pool.shutdown(wait=drained)
        return drained

    @property
    def alive(self) -> bool:
        """Uploads are still taken (not closed; for the health endpoint)."""
        return not self._closed

    def stats(self) -> UploadStats:
        """A snapshot of the counters, for status logs."""
        with self._cond:
            return UploadStats(**{**vars(self._stats), "pending": self._pending})

    def _upload(self, key: str, body: bytes, content_type: str, metadata: dict[str, str],
                on_done: Callable[[bool], None]) -> None:
        ok = False
        try:
            ok = self._put_with_retries(key, body, content_type, metadata)
        except Exception:  # a bug must not leave the object unacknowledged
            log.exception("S3 bucket %s: unexpected error uploading %s", self.bucket, key)
        with self._cond:
            if ok:
                self._stats.objects_written += 1
                self._stats.bytes_written += len(body)
            else:
                self._stats.failures += 1
        try:
            on_done(ok)
        except Exception:  # one bad callback must not stop the writer
            log.exception("on_done callback raised")
        finally:
            self._slots.release()
            with self._cond:
                self._pending -= 1  # after on_done: a flush() that returns saw every callback
                self._cond.notify_all()

    def _put_with_retries(self, key: str, body: bytes, content_type: str,
                          metadata: dict[str, str]) -> bool:
        attempt = 0
        while not self._abort.is_set():
            try:
                self._timed_put(key, body, content_type, metadata)
                return True
            except (ClientError, BotoCoreError) as err:
                attempt += 1
                if not retriable(err) or (self._extra_attempts is not None
                                          and attempt > self._extra_attempts):
                    log.error("S3 bucket %s: upload of %s failed (attempt %d): %s",
                              self.bucket, key, attempt, err)
                    return False
                with self._cond:
                    self._stats.retries += 1
                    self._stats.retrying += 1
                # the first failure of an upload, then one line a minute or so per upload
                if attempt == 1 or attempt % 12 == 0:
                    log.warning("S3 bucket %s: upload of %s failed %d times, retrying: %s",
                                self.bucket, key, attempt, err)
                try:
                    self._abort.wait(self._backoff.delay(attempt))
                finally:
                    with self._cond:
                        self._stats.retrying -= 1
        return False

    def _timed_put(self, key: str, body: bytes, content_type: str,
                   metadata: dict[str, str]) -> None:
        began = time.perf_counter()
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body,
                                    ContentType=content_type, Metadata=metadata)
        finally:
            self._times.add(S3_CALL, time.perf_counter() - began)
