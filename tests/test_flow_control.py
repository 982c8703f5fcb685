"""Flow control per stream: lossless backpressure vs real-time skipping of stale frames, and a
GetMedia connection renewed (as before AWS's 45-minute limit) without losing a fragment."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from consumer.cloud.aws import AwsContext
from consumer.cloud.media_source import MediaSource
from consumer.config import load_config
from consumer.pipeline.analysis import Analysed
from consumer.pipeline.outputs import ProcessorInfo
from consumer.streams.session import SharedStages, Start, StreamSession
from consumer.wire import read_fragments
from infra.local.kvs_service import LocalKvsService
from infra.local.limits import Limits
from processors.base import FrameResult

from .kvs_wire_helpers import producer_mkv, put_media

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam/1700000000000"


class ListSource:
    """An in-process stand-in for MediaSource: yields the given fragments, then ends."""

    state = "connected"

    def __init__(self, fragments):
        self._fragments = fragments

    def fragments(self):
        yield from self._fragments

    def stop(self):
        pass


@pytest.fixture(scope="module")
def fragments(capture):
    return read_fragments(capture("output_get_media.mkv"))  # recorded in 2017: very stale


class AckingWriter:
    """An in-process stand-in for the Kinesis writer: keeps what it is given, acknowledges."""

    def __init__(self):
        self.records = []

    def put(self, data, partition_key, on_done, admit=None):
        assert admit is None or admit()  # the session's fence is open while it owns the stream
        self.records.append(data)
        on_done(True)

    def nudge(self):
        pass  # it sends at once


def run_session(fragments, defaults: dict, work):
    completed = []
    config = load_config(data={"streams": {"names": ["cam"], "defaults": defaults},
                               "processing": {"processor": "none"},
                               "outputs": {"kinesis": {"stream": "records"}}}, environ={})
    stages = SharedStages(config, None, None, AckingWriter(), None, None,
                          ProcessorInfo("none", "none", "0", ""),
                          lambda arn, number, producer_time: completed.append(number),
                          holds=lambda arn: True)
    session = StreamSession(1, "cam", ARN, Start(None, False, None), stages, work,
                            source=ListSource(fragments))
    return session.start(), completed


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_realtime_policy_skips_stale_frames_and_still_completes_fragments_in_order(fragments):
    defaults = {"sampling": {"mode": "fps", "fps": 2}, "policy": "realtime",
                "max_lag_seconds": 5}
    work: queue.Queue = queue.Queue(maxsize=4)
    session, completed = run_session(fragments, defaults, work)
    assert wait_until(lambda: len(completed) == len(fragments) and session.reading_ended, 30)
    assert session.close(5)
    assert work.empty()
    assert session.stats.frames_skipped == session.stats.frames_queued == 20
    assert completed == [f.fragment_number for f in fragments]


def test_lossless_policy_blocks_the_reader_when_analysis_falls_behind(fragments):
    defaults = {"sampling": {"mode": "fps", "fps": 2}, "policy": "lossless"}
    work: queue.Queue = queue.Queue(maxsize=4)
    session, completed = run_session(fragments, defaults, work)
    time.sleep(1.0)
    assert work.full() and session.stats.fragments <= 2  # backpressure: reading stopped
    taken = []
    while len(taken) < 20:
        request = work.get(timeout=10)
        taken.append(request)
        session.post(Analysed(request.frame, FrameResult(), seq=request.seq))  # as analysis does
    assert wait_until(lambda: len(completed) == len(fragments), 10)
    assert session.close(5)
    assert session.stats.frames_skipped == 0 and session.stats.frames_analysed == 20
    assert completed == [f.fragment_number for f in fragments]


def test_results_that_come_back_out_of_order_are_handled_in_the_order_frames_were_read(
        fragments):
    # several analysis workers share one queue: a later frame may finish first
    defaults = {"sampling": {"mode": "fps", "fps": 2}, "policy": "lossless"}
    work: queue.Queue = queue.Queue(maxsize=64)
    session, completed = run_session(fragments, defaults, work)
    requests = [work.get(timeout=10) for _ in range(20)]
    assert [r.seq for r in requests] == list(range(20))
    for request in reversed(requests):
        session.post(Analysed(request.frame, FrameResult(), seq=request.seq))
    assert wait_until(lambda: len(completed) == len(fragments), 10)
    assert session.close(5)
    records = [json.loads(data)["InputInformation"]["KinesisVideo"]
               for data in session.stages.kinesis.records]
    read_order = [(r.frame.source.fragment_number, r.frame.source.frame_offset)
                  for r in requests]
    assert [(int(r["FragmentNumber"]), r["FrameOffsetInSeconds"]) for r in records] == [
        (number, pytest.approx(offset, abs=1e-3)) for number, offset in read_order]
    assert completed == [f.fragment_number for f in fragments]


def test_renewed_connections_resume_with_the_continuation_token(capture):
    source = read_fragments(capture("clusters.mkv"))
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=0.5)) as kvs:
        aws = AwsContext(kvs.endpoint_url)
        arn = aws.client().create_stream(StreamName="renew")["StreamARN"]
        put_media(kvs.endpoint_url, "renew", producer_mkv(source, int(time.time() * 1000)))
        media = MediaSource(aws, "renew", arn, start="EARLIEST", renew_after=0.0)
        got = []

        def read():
            for fragment in media.fragments():
                got.append(fragment.fragment_number)
                if len(got) == 8:
                    media.stop()

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(30)
    assert len(got) == 8 and got == sorted(set(got))
    assert media.connections >= 8  # a new connection after every fragment


def test_stop_interrupts_a_read_blocked_on_an_idle_stream_at_once():
    """SIGTERM's first step: a reader waiting for a camera that sends nothing must not wait for
    the service's idle timeout (20 s here, as with the default local service)."""
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=20)) as kvs:
        aws = AwsContext(kvs.endpoint_url)
        arn = aws.client().create_stream(StreamName="idle")["StreamARN"]
        media = MediaSource(aws, "idle", arn, start="NOW")
        reader = threading.Thread(target=lambda: list(media.fragments()))
        reader.start()
        deadline = time.monotonic() + 10
        while media.state != "connected" and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # now blocked in the read
        started = time.monotonic()
        media.stop()
        reader.join(5)
        assert not reader.is_alive()
        assert time.monotonic() - started < 1.0


def test_a_connection_dropped_mid_stream_resumes_from_the_continuation_token(capture):
    from consumer.cloud.media_source import _interrupt
    source = read_fragments(capture("clusters.mkv"))
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=20)) as kvs:
        aws = AwsContext(kvs.endpoint_url)
        arn = aws.client().create_stream(StreamName="flaky")["StreamARN"]
        put_media(kvs.endpoint_url, "flaky", producer_mkv(source[:3], int(time.time() * 1000)))
        media = MediaSource(aws, "flaky", arn, start="EARLIEST")
        got = []

        def read():
            for fragment in media.fragments():
                got.append(fragment.fragment_number)
                if len(got) == 3:
                    _interrupt(media._payload)  # the network drops the connection
                if len(got) == 5:
                    media.stop()

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        put_media(kvs.endpoint_url, "flaky", producer_mkv(source[3:5], int(time.time() * 1000)))
        reader.join(20)
    assert len(got) == 5 and got == sorted(set(got))
    assert media.connections >= 2
