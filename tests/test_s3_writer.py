"""The S3 writer against moto's server: concurrent uploads, retries through outages (forever
by default, until close()), fast failure for what a retry cannot fix, backpressure, metadata."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from consumer.cloud.backoff import Backoff
from consumer.sinks.s3 import S3ObjectWriter
from infra.local.stack import LocalStack

from .sink_helpers import FAST, Acks


@pytest.fixture(scope="module")
def s3():
    with LocalStack() as local:
        yield local.client("s3")


def test_50_concurrent_uploads_are_readable_with_their_metadata(s3):
    bucket = f"frames-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    writer = S3ObjectWriter(s3, bucket, concurrency=8)
    acks = Acks()
    for i in range(50):
        writer.put(f"p/frames/{i:05d}.jpg", b"\xff\xd8jpeg" + bytes([i]) * 1000, "image/jpeg",
                   {"stream": "cam-1", "fragment-number": str(10 ** 46 + i)}, acks(i))
    assert writer.close(30)
    assert all(acks.results[i] == [True] for i in range(50))
    for i in (0, 17, 49):
        got = s3.get_object(Bucket=bucket, Key=f"p/frames/{i:05d}.jpg")
        assert got["Body"].read() == b"\xff\xd8jpeg" + bytes([i]) * 1000
        assert got["ContentType"] == "image/jpeg"
        assert got["Metadata"] == {"stream": "cam-1", "fragment-number": str(10 ** 46 + i)}
    stats = writer.stats()
    assert (stats.objects_written, stats.failures, stats.pending) == (50, 0, 0)
    assert stats.bytes_written == 50 * 1006


def test_a_missing_bucket_fails_fast_with_on_done_false(s3):
    writer = S3ObjectWriter(s3, "no-such-bucket-here", concurrency=2, extra_attempts=5,
                            backoff=Backoff(base=5, cap=5))
    acks = Acks()
    started = time.monotonic()
    for i in range(3):
        writer.put(f"k{i}", b"x", "image/jpeg", {}, acks(i))
    assert writer.flush(10)
    assert time.monotonic() - started < 5  # NoSuchBucket is not retried
    assert acks.results == {0: [False], 1: [False], 2: [False]}
    assert writer.stats().failures == 3
    writer.close(1)


class FlakyS3:
    """The real client; put_object fails with 503 SlowDown `failures` times, or waits on a gate."""

    def __init__(self, client, failures: int = 0, gate: threading.Event | None = None):
        self._client, self.failures, self.gate = client, failures, gate

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_object(self, **kwargs):
        if self.gate is not None:
            self.gate.wait(10)
        if self.failures > 0:
            self.failures -= 1
            raise ClientError({"Error": {"Code": "SlowDown", "Message": "Reduce your rate"},
                               "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject")
        return self._client.put_object(**kwargs)


def test_transient_errors_get_extra_attempts_with_backoff(s3):
    bucket = f"frames-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    writer = S3ObjectWriter(FlakyS3(s3, failures=2), bucket, concurrency=1, backoff=FAST)
    acks = Acks()
    writer.put("k", b"body", "image/jpeg", {}, acks("k"))
    assert writer.close(10)
    assert acks.results == {"k": [True]} and writer.stats().retries == 2
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"body"


def test_an_outage_longer_than_any_attempt_budget_is_waited_out_not_given_up(s3):
    bucket = f"frames-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    writer = S3ObjectWriter(FlakyS3(s3, failures=40), bucket, concurrency=1, backoff=FAST)
    acks = Acks()
    writer.put("k", b"body", "image/jpeg", {}, acks("k"))
    assert writer.close(30)
    assert acks.results == {"k": [True]} and writer.stats().retries == 40
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"body"


def test_close_stops_retrying_an_upload_that_never_succeeds(s3):
    writer = S3ObjectWriter(FlakyS3(s3, failures=10 ** 9), "any-bucket", concurrency=1,
                            backoff=FAST)
    acks = Acks()
    writer.put("k", b"body", "image/jpeg", {}, acks("k"))
    time.sleep(0.3)
    assert writer.stats().retries > 0 and writer.stats().pending == 1
    assert writer.close(0.5) is False
    wait = time.monotonic() + 5
    while not acks.results and time.monotonic() < wait:
        time.sleep(0.05)
    assert acks.results == {"k": [False]}  # its fragment is re-read after the restart


def test_a_full_upload_queue_blocks_put(s3):
    bucket = f"frames-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    gate = threading.Event()
    writer = S3ObjectWriter(FlakyS3(s3, gate=gate), bucket, concurrency=1, max_queued=1)
    acks = Acks()
    writer.put("a", b"1", "image/jpeg", {}, acks("a"))
    writer.put("b", b"2", "image/jpeg", {}, acks("b"))
    blocked = threading.Thread(target=writer.put, args=("c", b"3", "image/jpeg", {}, acks("c")))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()
    gate.set()
    blocked.join(5)
    assert writer.close(10)
    assert acks.results == {"a": [True], "b": [True], "c": [True]}


def test_metadata_must_be_ascii(s3):
    writer = S3ObjectWriter(s3, "any-bucket", concurrency=1)
    with pytest.raises(ValueError, match="ASCII"):
        writer.put("k", b"x", "image/jpeg", {"stream": "caméra"}, lambda ok: None)
    writer.close(1)
