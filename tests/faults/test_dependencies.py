"""AWS-shaped dependency faults against a real consumer process, through an HTTP fault proxy
(`http_proxy.HttpFaultProxy`) in front of moto's server or the local KVS service: DynamoDB down,
Kinesis throttling and partial PutRecords failures, Kinesis Video down, GetMedia reset part-way
through a fragment. A camera streams in real time; after each fault the stream's checkpoint must
reach the camera's last fragment (the time that took is printed), and the whole data stream and
bucket are read back: no record twice, every frame of every fragment up to the checkpoint
delivered, checkpoints monotonic."""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker

from consumer.config import load_config
from consumer.fleet.lease_table import LeaseTable
from consumer.streams.supervisor import Clients

from .harness import TABLE, Run, wait_for
from .http_proxy import (
    Cut,
    Delay,
    Fail,
    Fault,
    HttpFaultProxy,
    PartialPutRecords,
    ResetBody,
    Throttle,
)

pytestmark = pytest.mark.slow
LEASE_SECONDS = 6  # the harness's checkpoint.lease_seconds
STATUS_SECONDS = 2  # the harness's logging.status_seconds


def proxied_run(stack, tmp_path, service: str, camera_seconds: int,
                **kwargs) -> tuple[Run, HttpFaultProxy]:
    """A `Run` whose consumer reaches `service` (kinesisvideo, kinesis, dynamodb) through an
    HTTP fault proxy; the camera and the test's own reads go to the services directly."""
    port = stack.kvs.port if service == "kinesisvideo" else stack.moto_port
    proxy = HttpFaultProxy(port).start()
    try:
        run = Run(stack, tmp_path, camera_seconds=camera_seconds, proxied=(),
                  config={"aws": {"endpoints": {service: proxy.endpoint}}}, **kwargs)
    except BaseException:
        proxy.close()
        raise
    return run, proxy


@dataclass
class Recovery:
    held: int  # the checkpoint when the fault ended
    moved: float  # seconds from the fault's end until the checkpoint moved past `held`
    at_last: float  # seconds from the fault's end until it was at the camera's last fragment
    after_camera: float  # of which after the camera had stopped

    def describe(self) -> str:
        return (f"checkpoint held at ...{str(self.held)[-6:]}, moving again {self.moved:.1f} s "
                f"after the fault ended, at the last fragment {self.at_last:.1f} s after it "
                f"({self.after_camera:.1f} s after the camera stopped)")


def start(run: Run) -> None:
    run.start_consumer()
    wait_for(lambda: run.checkpoint_or_none() is not None, 60, "a first checkpoint")


def watch(run: Run, seconds: float) -> None:
    """Observe the checkpoint (the harness remembers each value) for `seconds`."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        run.checkpoint_or_none()
        time.sleep(0.5)


def recover(run: Run, proxy: HttpFaultProxy, fault: Fault, camera_seconds: int) -> Recovery:
    """Switch `fault` off; wait for the checkpoint to move, then to reach the last fragment."""
    held = run.checkpoint_or_none()
    proxy.remove(fault)
    ended = time.monotonic()
    moved = wait_for(lambda: (run.checkpoint_or_none() or 0) > held, 60,
                     "the checkpoint moving again")
    run.camera.wait(camera_seconds + 30)
    camera_stopped = time.monotonic()
    final = run.last_fragment()
    wait_for(lambda: run.checkpoint_or_none() == final, 90,
             "the checkpoint at the camera's last fragment")
    assert run.consumer.poll() is None, "the consumer exited"
    return Recovery(held, moved, time.monotonic() - ended, time.monotonic() - camera_stopped)


def frame_order(records: list[dict]) -> list[tuple[int, int]]:
    """(fragment number, frame index) of each frame record, in the data stream's order."""
    return [(int(v["FragmentNumber"]), v["FrameIndex"])
            for v in (r["InputInformation"]["KinesisVideo"] for r in records
                      if r.get("RecordType") != "Event")]


def assert_in_order(records: list[dict]) -> None:
    """One camera, one partition key: its records must land in frame order."""
    order = frame_order(records)
    backwards = [(a, b) for a, b in zip(order, order[1:]) if b <= a]
    assert not backwards, f"{len(backwards)} records landed before an earlier frame's: " \
                          f"{backwards[:3]}"


def inversions(order: list[tuple[int, int]]) -> int:
    """Pairs of records that landed in the opposite of their frame order."""
    return sum(a > b for i, a in enumerate(order) for b in order[i + 1:])


def worker_id(run: Run) -> str:
    return re.search(r"worker (\S+): lease table", run.log.read_text()).group(1)


def lease(run: Run):
    return next(lease for lease in LeaseTable(run.stack.client("dynamodb"), TABLE, "observer")
                .snapshot().leases if lease.stream_name == run.name)


# --- the proxy itself, against the real servers --------------------------------------------

def test_the_proxy_answers_each_protocol_as_botocore_expects(stack):
    """Throttling is recognised (and retried) as throttling by botocore, a partial PutRecords
    failure really leaves the failed entries unwritten, a 500 is a ClientError, a cut is a
    connection error, and GetDataEndpoint sends GetMedia back through the proxy."""
    moto, kvs = HttpFaultProxy(stack.moto_port).start(), HttpFaultProxy(stack.kvs.port).start()
    try:
        def client(service, endpoint):
            return boto3.client(service, endpoint_url=endpoint, region_name=stack.region,
                                aws_access_key_id="local", aws_secret_access_key="local",
                                config=Config(retries={"max_attempts": 2, "mode": "standard"}))
        kinesis, dynamodb = client("kinesis", moto.endpoint), client("dynamodb", moto.endpoint)
        stack.client("kinesis").create_stream(StreamName="proxy-check", ShardCount=1)
        throttle = moto.add(Throttle(operation="PutRecords"))
        with pytest.raises(ClientError) as err:
            kinesis.put_records(StreamName="proxy-check",
                                Records=[{"Data": b"t", "PartitionKey": "k"}])
        assert err.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        # botocore classifies it as throttling, and retried it (max_attempts counts retries)
        assert ThrottledRetryableChecker().is_retryable(
            RetryContext(1, parsed_response=err.value.response))
        assert err.value.response["ResponseMetadata"]["RetryAttempts"] == 2
        assert throttle.fired == 3
        moto.remove(throttle)
        moto.add(Throttle(operation="ListTables", times=1))
        assert "TableNames" in dynamodb.list_tables()  # retried once, then through
        s3 = client("s3", moto.endpoint)
        s3.create_bucket(Bucket="proxy-check")
        moto.add(Throttle(times=3))
        with pytest.raises(ClientError) as err:
            s3.put_object(Bucket="proxy-check", Key="k", Body=b"x")
        assert err.value.response["Error"]["Code"] == "SlowDown"
        assert ThrottledRetryableChecker().is_retryable(
            RetryContext(1, parsed_response=err.value.response))

        moto.add(PartialPutRecords(every=3))
        answer = kinesis.put_records(StreamName="proxy-check", Records=[
            {"Data": b"%d" % i, "PartitionKey": "k"} for i in range(7)])
        failed = [i for i, r in enumerate(answer["Records"]) if "ErrorCode" in r]
        assert failed == [2, 5] and answer["FailedRecordCount"] == 2
        moto.clear()
        shard = kinesis.list_shards(StreamName="proxy-check")["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(StreamName="proxy-check", ShardId=shard,
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        written = [r["Data"] for r in kinesis.get_records(ShardIterator=iterator)["Records"]]
        assert written == [b"0", b"1", b"3", b"4", b"6"]

        moto.add(Fail(operation="DescribeStream", times=3))
        with pytest.raises(ClientError) as err:
            kinesis.describe_stream(StreamName="proxy-check")
        assert err.value.response["Error"]["Code"] == "InternalFailure"
        cut = moto.add(Cut())
        with pytest.raises(ConnectionClosedError):
            kinesis.describe_stream(StreamName="proxy-check")
        moto.remove(cut)

        stack.client("kinesisvideo").create_stream(StreamName="proxy-check")
        video = client("kinesisvideo", kvs.endpoint)
        assert video.get_data_endpoint(StreamName="proxy-check", APIName="GET_MEDIA")[
            "DataEndpoint"] == kvs.endpoint
        kvs.add(Throttle(path="/describeStream", times=1))
        with pytest.raises(ClientError) as err:
            video.describe_stream(StreamName="proxy-check")
        assert err.value.response["Error"]["Code"] == "ClientLimitExceededException"
    finally:
        moto.close()
        kvs.close()


# --- DynamoDB -------------------------------------------------------------------------------

def test_a_lease_table_call_gives_up_within_the_lease_when_dynamodb_is_down(stack):
    """The keeper renews and the supervisor's lease loop runs on the lease's cadence: a call to
    an unreachable table must fail within `lease_seconds`, so the loop goes on (status lines,
    fencing, restarts) and the next attempt comes soon after the table is back. (botocore's
    default of 5 retries backs off for 9-27 s per call.)"""
    proxy = HttpFaultProxy(stack.moto_port).start()
    try:
        config = load_config(data={
            "aws": {"region": stack.region, "endpoints": {
                **{k: v for k, v in stack.endpoints.items() if k != "region"},
                "dynamodb": proxy.endpoint}},
            "streams": {"names": ["any"]}, "outputs": {"kinesis": {"stream": "any"}},
            "checkpoint": {"table": TABLE, "lease_seconds": LEASE_SECONDS}})
        table = LeaseTable(Clients.from_config(config).dynamodb, TABLE, "probe")
        cut = proxy.add(Cut())
        refused = [failing_call(table.snapshot, ConnectionClosedError) for _ in range(3)]
        proxy.remove(cut)
        proxy.add(Delay(seconds=3 * LEASE_SECONDS))  # a table that hangs
        hung = failing_call(table.snapshot, ReadTimeoutError)
    finally:
        proxy.close()
    print(f"a lease-table call failed {', '.join(f'{t:.1f}' for t in refused)} s after it "
          f"started when DynamoDB refused, {hung:.1f} s when it hung (lease {LEASE_SECONDS} s)")
    assert max(refused) < LEASE_SECONDS / 2
    assert hung < LEASE_SECONDS


def failing_call(call, error: type[Exception]) -> float:
    """Seconds `call()` took to raise `error`."""
    started = time.monotonic()
    with pytest.raises(error):
        call()
    return time.monotonic() - started


def test_dynamodb_down_fences_the_stream_then_takes_it_back(stack, tmp_path):
    """Checkpoint writes and lease renewals fail for 20 s. The consumer keeps emitting while
    it can still prove it holds the lease (lease_seconds after its last renewal), then stops
    emitting (the fence: another worker could have taken the stream) and says so; its status
    line keeps coming; when DynamoDB is back it takes its own lease back within two lease
    periods, reads back what it delivered past the written checkpoint, and goes on without
    sending anything twice. It never exits."""
    camera_seconds = 38
    run, proxy = proxied_run(stack, tmp_path, "dynamodb", camera_seconds)
    try:
        start(run)
        owner, before = worker_id(run), lease(run)
        at_cut = len(run.records())
        cut = proxy.add(Cut())
        cut_at, cut_wall = time.monotonic(), time.time()
        watch(run, LEASE_SECONDS + 3)  # the lease expires on the consumer's own clock
        fenced = len(run.records())
        watch(run, 20 - (time.monotonic() - cut_at))
        at_end, end_wall = len(run.records()), time.time()
        assert proxy.cut_requests > 0  # the consumer did try DynamoDB during the outage
        assert run.consumer.poll() is None, "the consumer exited during the outage"
        recovery = recover(run, proxy, cut, camera_seconds)
        after = lease(run)
        text = run.log.read_text()
        unrenewed = float(re.search(r"lease not renewed for ([\d.]+) s", text).group(1))
        gap = longest_status_gap(text, cut_wall, end_wall)
        print(f"DynamoDB down 20 s ({proxy.cut_requests} requests cut): "
              f"{fenced - at_cut} records sent in the first {LEASE_SECONDS + 3} s, none in the "
              f"last {20 - LEASE_SECONDS - 3} s; fenced after {unrenewed:.1f} s unrenewed, "
              f"status lines at most {gap:.1f} s apart; {recovery.describe()}")
        assert "lease lost; stopping it" in text
        assert "records already delivered" in text  # the take-back read back past the checkpoint
    finally:
        run.stop()
    assert fenced > at_cut, "the consumer stopped emitting while it still held the lease"
    assert at_end == fenced, "records were sent after the lease could no longer be proved held"
    assert unrenewed < LEASE_SECONDS + 2, "the loss was noticed late"
    assert gap < 3 * STATUS_SECONDS, "the supervisor's loop stood still"
    assert recovery.moved < 2 * LEASE_SECONDS
    assert after.owner == owner == before.owner  # taken back by the same worker
    assert after.counter > before.counter and after.owner_switches == 0
    run.check_everything_delivered_once()


def longest_status_gap(log: str, since: float, until: float) -> float:
    """Longest time between the status lines ("total: ...") logged in [since, until] (epoch
    seconds), the window's ends included."""
    times = [since, until]
    for line in log.splitlines():
        if " total: worker " in line:
            logged = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if since < logged < until:
                times.append(logged)
    times.sort()
    return max(b - a for a, b in zip(times, times[1:]))


# --- Kinesis Data Streams -------------------------------------------------------------------

def test_kinesis_throttling_slows_the_writer_and_keeps_order(stack, tmp_path):
    """Every PutRecords is throttled for 10 s: nothing lands, the checkpoint waits, and
    afterwards every record is delivered once, in frame order."""
    camera_seconds = 24
    run, proxy = proxied_run(stack, tmp_path, "kinesis", camera_seconds)
    try:
        start(run)
        throttle = proxy.add(Throttle(operation="PutRecords"))
        watch(run, 2)  # a call already in flight may still land
        landed, held = len(run.records()), run.checkpoint_or_none()
        watch(run, 8)
        assert len(run.records()) == landed and run.checkpoint_or_none() == held
        assert throttle.fired > 0
        recovery = recover(run, proxy, throttle, camera_seconds)
        print(f"Kinesis throttled 10 s ({throttle.fired} PutRecords requests throttled): "
              f"{recovery.describe()}")
        assert "could not be delivered" not in run.log.read_text()
    finally:
        run.stop()
    records = run.records()
    assert_in_order(records)
    run.check_everything_delivered_once()


@pytest.mark.parametrize("tail", [True, False], ids=["shard-budget", "every-third"])
def test_partial_putrecords_failures_deliver_every_record_once(stack, tmp_path, tail):
    """A third of the entries of PutRecords calls fail with ProvisionedThroughputExceeded for
    15 s (really not written: the proxy removes them before moto sees the call): the
    checkpoint keeps moving, and every record is delivered once. `shard-budget` fails the end of each call,
    the way a shard's per-second budget runs out part-way through: the records must land in
    frame order. `every-third` fails entries wherever they are (KDS documents that a failed
    entry does not stop later ones), so a later record of the camera may land before an earlier
    one that failed in the same call (the writer's contract, consumer/sinks/kinesis.py); no
    other reordering is allowed: the records landed out of order are at most the (failed,
    later written) pairs of the proxy's answers."""
    camera_seconds = 28
    run, proxy = proxied_run(stack, tmp_path, "kinesis", camera_seconds, sampling="all")
    try:
        start(run)
        partial = proxy.add(PartialPutRecords(every=3, tail=tail))
        before = run.checkpoint_or_none()
        watch(run, 15)
        assert partial.failed > 0
        assert run.checkpoint_or_none() > before, "the checkpoint stood still"
        recovery = recover(run, proxy, partial, camera_seconds)
        print(f"PutRecords partial failures for 15 s ({'tail' if tail else 'every third'}: "
              f"{partial.failed} of {partial.seen} entries failed in {partial.fired} calls): "
              f"{recovery.describe()}")
    finally:
        run.stop()
    records = run.records()
    reordered = inversions(frame_order(records))
    print(f"  {len(records)} records; {reordered} pairs landed out of frame order, "
          f"{partial.overtaken} possible from the answers")
    assert reordered <= partial.overtaken
    if tail:
        assert partial.overtaken == 0 and reordered == 0
    run.check_everything_delivered_once()


# --- Kinesis Video Streams ------------------------------------------------------------------

def test_kvs_down_resumes_reading_where_it_stopped(stack, tmp_path):
    """The control plane and GetMedia are cut for 20 s (open GetMedia responses dropped, new
    connections reset): the consumer reconnects with backoff and resumes after the last
    fragment it read, losing and repeating nothing."""
    camera_seconds = 38
    run, proxy = proxied_run(stack, tmp_path, "kinesisvideo", camera_seconds)
    try:
        start(run)
        wait_for(lambda: proxy.requests["getMedia"] > 0, 10, "GetMedia through the proxy")
        cut = proxy.add(Cut())
        watch(run, 2)
        held = run.checkpoint_or_none()
        watch(run, 18)
        assert run.checkpoint_or_none() == held  # nothing new was read
        assert proxy.cut_requests > 0
        recovery = recover(run, proxy, cut, camera_seconds)
        print(f"KVS down 20 s ({proxy.cut_requests} requests cut): {recovery.describe()}")
        assert "GetMedia connection failed" in run.log.read_text()
    finally:
        run.stop()
    run.check_everything_delivered_once()


def test_getmedia_reset_mid_fragment_loses_and_repeats_nothing(stack, tmp_path):
    """Three times, a GetMedia response is reset in the middle of its second fragment (after
    1.5 fragments' bytes): the consumer drops the partial fragment, reconnects, and resumes
    after the last whole one; the checkpoint then passes the first fragment that arrived after
    the reset (so the interrupted one was read again, whole)."""
    camera_seconds = 30
    run, proxy = proxied_run(stack, tmp_path, "kinesisvideo", camera_seconds)
    archive = stack.client("kinesis-video-archived-media")
    try:
        start(run)
        sizes = [f["FragmentSizeInBytes"] for f in archive.list_fragments(
            StreamName=run.name)["Fragments"]]
        after_bytes = int(1.5 * statistics.median(sizes))
        took = []
        for _ in range(3):
            reset = proxy.add(ResetBody(path="/getMedia", after_bytes=after_bytes, times=1))
            wait_for(lambda: reset.fired == 1, 30, "a GetMedia response reset")
            reset_at, reset_clock = datetime.now(UTC), time.monotonic()

            def past_the_reset() -> bool:
                later = [int(f["FragmentNumber"]) for f in archive.list_fragments(
                    StreamName=run.name)["Fragments"] if f["ServerTimestamp"] > reset_at]
                return bool(later) and (run.checkpoint_or_none() or 0) >= min(later)
            wait_for(past_the_reset, 30, "the checkpoint past the reset")
            took.append(time.monotonic() - reset_clock)
        run.camera.wait(camera_seconds + 30)
        final = run.last_fragment()
        last = wait_for(lambda: run.checkpoint_or_none() == final, 60,
                        "the checkpoint at the camera's last fragment")
        print(f"GetMedia reset 3 times after {after_bytes} bytes (fragments ~"
              f"{statistics.median(sizes):.0f} bytes): checkpoint at the first fragment "
              f"ingested after the reset {', '.join(f'{t:.1f}' for t in took)} s after each "
              f"reset; at the last fragment {last:.1f} s after the camera stopped")
        assert run.log.read_text().count("GetMedia connection failed") >= 3
    finally:
        run.stop()
    run.check_everything_delivered_once()
