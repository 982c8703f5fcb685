"""The durable outputs against moto's server: KDS writer, replay check, batch queue (the S3
writer: tests/test_s3_writer.py).

Real boto3 clients throughout. Where KDS behaviour moto does not produce (throttling, partial
failures) is needed, a thin proxy forwards to the real client and makes chosen records of chosen
calls fail the way KDS reports it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter

import pytest
from botocore.exceptions import ClientError

from consumer.cloud.backoff import Backoff
from consumer.formats.records import encode_record, frame_record
from consumer.sinks import replay
from consumer.sinks.batch_queue import BatchQueue, Entry
from consumer.sinks.kinesis import MAX_BATCH_BYTES, MAX_BATCH_RECORDS, KinesisRecordWriter
from consumer.sinks.replay import delivered_record_ids, shards_for_key
from infra.local.stack import LocalStack
from processors.base import FrameResult
from processors.frames import FrameSource

from .sink_helpers import FAST, Acks

THROTTLED = "ProvisionedThroughputExceededException"


@pytest.fixture(scope="module")
def stack():
    with LocalStack() as local:
        yield local


@pytest.fixture()
def kinesis(stack):
    return stack.client("kinesis")


def new_stream(kinesis, shards: int = 2) -> str:
    name = f"records-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    kinesis.get_waiter("stream_exists").wait(StreamName=name,
                                             WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return name


def read_stream(kinesis, name: str) -> list[tuple[str, dict]]:
    """(partition key, decoded JSON) of every record, shard by shard in stream order."""
    return [(r["PartitionKey"], json.loads(r["Data"]))
            for r in replay.read_all_records(kinesis, name)]


def indices_by_key(records: list[tuple[str, dict]]) -> dict[str, list[int]]:
    by_key: dict[str, list[int]] = {}
    for key, body in records:
        by_key.setdefault(key, []).append(body["i"])
    return by_key


def payload(key: str, i: int, pad: int = 40) -> bytes:
    return json.dumps({"key": key, "i": i, "pad": "x" * pad}).encode()


class FlakyKinesis:
    """The real client, whose PutRecords answers come from `plan(call_number, records)`.

    The plan returns one error code (or None) per record; records without one are forwarded to
    the real client in their order, the others are reported failed as KDS reports them. A plan
    may also raise, as a whole call failing would.
    """

    def __init__(self, client, plan):
        self._client = client
        self._plan = plan
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    def put_records(self, *, StreamName, Records):  # boto3's parameter names
        self.calls += 1
        codes = self._plan(self.calls, Records)
        passed = [r for r, code in zip(Records, codes) if code is None]
        real = iter(self._client.put_records(StreamName=StreamName, Records=passed)["Records"]
                    if passed else [])
        results = [next(real) if code is None else
                   {"ErrorCode": code, "ErrorMessage": f"{code} (simulated)"} for code in codes]
        return {"FailedRecordCount": sum(code is not None for code in codes),
                "Records": results}


def whole_call_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "Rate exceeded for stream"}},
                       "PutRecords")


# Kinesis Data Streams writer.

def test_1200_records_arrive_in_order_per_key_in_batches_within_limits(kinesis):
    name = new_stream(kinesis)
    batches: list[tuple[int, int]] = []

    def count(params, **_):
        batches.append((len(params["Records"]), sum(
            len(r["Data"]) + len(r["PartitionKey"].encode()) for r in params["Records"])))
    kinesis.meta.events.register("provide-client-params.kinesis.PutRecords", count)
    writer = KinesisRecordWriter(kinesis, name, linger_ms=50, max_retries=3, backoff=FAST)
    acks = Acks()

    def camera(key: str) -> None:  # one thread per camera, as the pipeline does
        for i in range(400):
            writer.put(payload(key, i, pad=50_000 if i % 5 == 0 else 40), key, acks((key, i)))
    threads = [threading.Thread(target=camera, args=(f"cam-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert writer.flush(60)
    assert writer.close(10)

    assert len(acks.results) == 1200 and all(v == [True] for v in acks.results.values())
    by_key = indices_by_key(read_stream(kinesis, name))
    assert by_key == {f"cam-{n}": list(range(400)) for n in range(3)}
    assert sum(n for n, _ in batches) == 1200
    assert max(n for n, _ in batches) <= MAX_BATCH_RECORDS
    assert max(size for _, size in batches) <= MAX_BATCH_BYTES
    assert len(batches) >= sum(size for _, size in batches) / MAX_BATCH_BYTES
    stats = writer.stats()
    assert (stats.records_sent, stats.failures, stats.pending, stats.calls) == \
        (1200, 0, 0, len(batches))
    assert stats.bytes_sent == sum(size for _, size in batches)


def test_throttled_records_are_retried_first_and_arrive_in_order(kinesis):
    name = new_stream(kinesis)

    def overloaded_shard(call: int, records) -> list:
        # Calls 2 and 4 are throttled whole; calls 1-6 accept 30 records per key, and the
        # rest come back throttled, as from a shard over its limit.
        if call in (2, 4):
            raise whole_call_error(THROTTLED)
        seen: Counter = Counter()
        codes = []
        for record in records:
            seen[record["PartitionKey"]] += 1
            codes.append(THROTTLED if call <= 6 and seen[record["PartitionKey"]] > 30 else None)
        return codes
    flaky = FlakyKinesis(kinesis, overloaded_shard)
    writer = KinesisRecordWriter(flaky, name, linger_ms=20, max_retries=1, backoff=FAST)
    acks = Acks()
    for i in range(300):
        for key in ("cam-a", "cam-b"):
            writer.put(payload(key, i), key, acks((key, i)))
    assert writer.close(60)

    assert len(acks.results) == 600 and all(v == [True] for v in acks.results.values())
    by_key = indices_by_key(read_stream(kinesis, name))
    assert by_key == {"cam-a": list(range(300)), "cam-b": list(range(300))}
    stats = writer.stats()
    # Throttling never used up max_retries=1, and nothing landed out of order.
    assert stats.throttles > 0 and stats.failures == 0 and stats.reordered == 0
    assert flaky.calls > 6


def test_scattered_partial_failures_deliver_everything_once(kinesis):
    name = new_stream(kinesis, shards=1)

    def scattered(call: int, records) -> list:
        return [("InternalFailure" if n % 3 == 1 else THROTTLED if n % 7 == 2 else None)
                if call <= 3 else None for n in range(len(records))]
    writer = KinesisRecordWriter(FlakyKinesis(kinesis, scattered), name, linger_ms=20,
                                 max_retries=5, backoff=FAST)
    acks = Acks()
    for i in range(200):
        writer.put(payload("cam", i), "cam", acks(i))
    assert writer.close(30)

    assert all(acks.results[i] == [True] for i in range(200))
    order = indices_by_key(read_stream(kinesis, name))["cam"]
    assert sorted(order) == list(range(200))  # all of them, none twice
    # KDS accepted some records after an earlier one of theirs failed in the same call: the
    # writer cannot undo that, but it counts each one.
    landed_early = sum(any(j < i for j in order[pos + 1:]) for pos, i in enumerate(order))
    assert writer.stats().reordered == landed_early > 0


def test_a_record_failing_past_max_retries_is_reported_not_dropped(kinesis):
    name = new_stream(kinesis)

    def poisoned(call: int, records) -> list:
        return ["InternalFailure" if b'"i": 13,' in r["Data"] else None for r in records]
    writer = KinesisRecordWriter(FlakyKinesis(kinesis, poisoned), name, linger_ms=10,
                                 max_retries=2, backoff=FAST)
    acks = Acks()
    for i in range(30):
        writer.put(payload("cam", i), "cam", acks(i))
    assert writer.close(30)
    assert acks.results[13] == [False]
    assert all(acks.results[i] == [True] for i in range(30) if i != 13)
    assert indices_by_key(read_stream(kinesis, name))["cam"] == [i for i in range(30) if i != 13]
    assert writer.stats().failures == 1


def test_records_whose_fence_closed_are_not_sent(kinesis):
    name = new_stream(kinesis)
    held = {"cam-a", "cam-b"}
    fences = {key: (lambda key=key: key in held) for key in held}  # one per stream session
    writer = KinesisRecordWriter(kinesis, name, linger_ms=50)
    acks = Acks()
    for i in range(20):
        writer.put(payload("cam-a", i), "cam-a", acks(i), admit=fences["cam-a"])
    assert writer.flush(10)
    held.discard("cam-a")  # its lease was lost: queued records must not go out
    for i in range(20, 40):
        key = "cam-a" if i % 2 else "cam-b"
        writer.put(payload(key, i), key, acks(i), admit=fences[key])
    writer.put(payload("cam-c", 40), "cam-c", acks(40))  # no fence: always sent
    assert writer.close(10)
    got = indices_by_key(read_stream(kinesis, name))
    assert got["cam-a"] == list(range(20)) and got["cam-b"] == list(range(20, 40, 2))
    assert got["cam-c"] == [40]
    assert all(acks.results[i] == [False] for i in range(21, 40, 2))
    assert writer.stats().fenced == 10 and writer.stats().failures == 0


def test_a_nudge_sends_what_is_queued_without_waiting_for_the_linger(kinesis):
    """A fragment's records are all put: the session nudges, and they go at once in one call,
    not after `linger_ms`; a record put after the nudge lingers again."""
    name = new_stream(kinesis)
    writer = KinesisRecordWriter(kinesis, name, linger_ms=60_000)
    acks = Acks()
    try:
        for i in range(4):
            writer.put(payload("cam-a", i), "cam-a", acks(i))
        nudged = time.monotonic()
        writer.nudge()
        acks.wait(4, timeout=10)
        assert time.monotonic() - nudged < 5
        assert writer.stats().calls == 1
        writer.put(payload("cam-a", 4), "cam-a", acks(4))
        time.sleep(0.5)
        assert 4 not in acks.results  # lingering: no nudge since it was queued
    finally:
        writer.close(10)
    assert indices_by_key(read_stream(kinesis, name))["cam-a"] == list(range(5))


def test_by_default_failing_records_are_retried_until_delivered(kinesis):
    name = new_stream(kinesis)

    def outage(call: int, records) -> list:  # every call of the first 25 fails for every record
        return ["InternalFailure" if call <= 25 else None for _ in records]
    writer = KinesisRecordWriter(FlakyKinesis(kinesis, outage), name, linger_ms=10,
                                 backoff=FAST)
    acks = Acks()
    for i in range(30):
        writer.put(payload("cam", i), "cam", acks(i))
    assert writer.close(30)
    assert all(acks.results[i] == [True] for i in range(30))
    assert indices_by_key(read_stream(kinesis, name))["cam"] == list(range(30))
    assert writer.stats().failures == 0 and writer.stats().retries >= 25


def test_records_over_1_mib_are_rejected_with_a_clear_error(kinesis, caplog):
    name = new_stream(kinesis)
    writer = KinesisRecordWriter(kinesis, name, linger_ms=10, backoff=FAST)
    acks = Acks()
    with caplog.at_level(logging.ERROR, logger="consumer.sinks.kinesis"):
        writer.put(b"x" * (1024 * 1024), "cam", acks("big"))  # + the key: over 1 MiB
        writer.put(payload("cam", 0), "", acks("no-key"))
        writer.put(payload("cam", 1), "cam", acks("ok"))
    assert writer.close(10)
    assert acks.results == {"big": [False], "no-key": [False], "ok": [True]}
    assert "over KDS's 1 MiB" in caplog.text and "partition key" in caplog.text
    assert writer.stats().rejected == 2
    assert indices_by_key(read_stream(kinesis, name)) == {"cam": [1]}


def test_whole_call_errors_fail_after_max_retries(kinesis):
    writer = KinesisRecordWriter(kinesis, "no-such-stream", linger_ms=0, max_retries=2,
                                 backoff=FAST)
    acks = Acks()
    for i in range(5):
        writer.put(payload("cam", i), "cam", acks(i))
    acks.wait(5)
    assert all(acks.results[i] == [False] for i in range(5))
    assert writer.stats().calls == 3 and writer.stats().failures == 5
    assert writer.close(5)
    with pytest.raises(RuntimeError, match="closed"):
        writer.put(b"x", "cam", acks("late"))


def test_endless_throttling_slows_down_and_close_reports_what_was_left(kinesis):
    def always(call, records):
        raise whole_call_error(THROTTLED)
    flaky = FlakyKinesis(kinesis, always)
    writer = KinesisRecordWriter(flaky, new_stream(kinesis), linger_ms=0, max_retries=0,
                                 backoff=Backoff(base=0.05, cap=0.2))
    acks = Acks()
    for i in range(10):
        writer.put(payload("cam", i), "cam", acks(i))
    time.sleep(1.0)
    assert acks.results == {}  # throttling is not failure: nothing given up yet
    assert flaky.calls < 30  # slowed down: without backoff this would be hundreds
    started = time.monotonic()
    assert writer.close(0.5) is False
    assert time.monotonic() - started < 2
    acks.wait(10, timeout=5)
    assert all(acks.results[i] == [False] for i in range(10))


def test_a_full_buffer_blocks_put_until_kinesis_catches_up(kinesis):
    gate = threading.Event()

    def slow(call, records):
        gate.wait(10)
        return [None] * len(records)
    name = new_stream(kinesis)
    writer = KinesisRecordWriter(FlakyKinesis(kinesis, slow), name, linger_ms=0,
                                 max_buffered_records=5, backoff=FAST)
    acks = Acks()
    writer.put(payload("cam", 0), "cam", acks(0))
    time.sleep(0.2)  # record 0 is now in flight, held at the gate
    for i in range(1, 6):
        writer.put(payload("cam", i), "cam", acks(i))
    blocked = threading.Thread(target=writer.put, args=(payload("cam", 6), "cam", acks(6)))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive()
    gate.set()
    blocked.join(5)
    assert not blocked.is_alive()
    assert writer.close(10)
    assert indices_by_key(read_stream(kinesis, name))["cam"] == list(range(7))


# Replay check on resume.

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/{}/1700000000000"


def frame_records(stream: str, fragment: int, count: int) -> list[tuple[str, bytes]]:
    out = []
    for index in range(count):
        src = FrameSource(stream, ARN.format(stream), fragment, 1.7e9, 1.7e9, index / 10, index)
        record = frame_record(src, FrameResult(), "pose", "m", "1", (640, 480))
        out.append((record["RecordId"], encode_record(record)))
    return out


def put_directly(kinesis, name: str, key: str, records: list[tuple[str, bytes]]) -> None:
    kinesis.put_records(StreamName=name, Records=[{"Data": data, "PartitionKey": key}
                                                  for _, data in records])


def test_delivered_record_ids_finds_the_keys_records_since_a_time(kinesis):
    name = new_stream(kinesis, shards=4)
    before = frame_records("cam-a", 10 ** 46, 5)
    put_directly(kinesis, name, "cam-a", before)
    time.sleep(1.1)
    since = time.time()
    after_a = frame_records("cam-a", 10 ** 46 + 1, 40)
    after_b = frame_records("cam-b", 10 ** 46 + 1, 40)
    put_directly(kinesis, name, "cam-a", after_a)
    put_directly(kinesis, name, "cam-b", after_b)
    kinesis.put_records(StreamName=name, Records=[{"Data": b"not json", "PartitionKey": "cam-a"}])

    found = delivered_record_ids(kinesis, name, "cam-a", since)
    assert found == {rid for rid, _ in after_a}
    assert delivered_record_ids(kinesis, name, "cam-b", since) == {rid for rid, _ in after_b}
    assert delivered_record_ids(kinesis, name, "cam-a", since - 60) == \
        {rid for rid, _ in before + after_a}
    assert delivered_record_ids(kinesis, name, "cam-c", since) == set()
    assert len(shards_for_key(kinesis, name, "cam-a")) == 1


def test_delivered_record_ids_gives_up_at_its_bound_and_says_so(kinesis, caplog):
    name = new_stream(kinesis, shards=1)
    put_directly(kinesis, name, "cam-a", frame_records("cam-a", 10 ** 46, 30))
    with caplog.at_level(logging.WARNING, logger="consumer.sinks.replay"):
        found = delivered_record_ids(kinesis, name, "cam-a", time.time() - 60, max_records=10)
    assert len(found) <= 30
    assert "gave up" in caplog.text and "duplicates possible" in caplog.text


# The batch queue on its own.

def test_batch_queue_cuts_within_limits_keeps_key_order_and_retries_first():
    queue = BatchQueue(careful_seconds=1.0)
    for i in range(6):
        queue.append(Entry(b"x" * 2_000_000, "big", lambda ok: None, 2_000_003, 0.0))
    assert [len(queue.take(0.0)) for _ in range(3)] == [2, 2, 2]  # 5 MiB: two 2 MB records
    for i in range(700):
        queue.append(Entry(b"%d" % i, "a" if i % 2 else "b", lambda ok: None, 5, 0.0))
    first = queue.take(0.0)
    assert len(first) == 500 and len(queue) == 200
    assert [int(e.data) for e in first[-3:]] == [497, 498, 499]  # keys a, b, a
    queue.requeue(first[-3:])  # back ahead of 500-699
    queue.mark_careful(["a"], now=0.0)
    second = queue.take(0.5)  # "a" is careful: only its oldest record; "b" is unrestricted
    assert [int(e.data) for e in second] == [497, 498] + list(range(500, 700, 2))
    third = queue.take(2.0)  # careful mode over: the rest of "a", in order
    assert [int(e.data) for e in third] == [499] + list(range(501, 700, 2))
    assert len(queue) == 0 and queue.bytes == 0
