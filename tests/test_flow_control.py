"""Flow control per stream: lossless backpressure vs real-time skipping of stale frames, and a
GetMedia connection renewed (as before AWS's 45-minute limit) without losing a fragment."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from consumer.cloud.aws import AwsContext
from consumer.cloud.media_source import MediaSource
from consumer.config import LagPolicy, Sampling, SamplingMode, StreamSettings
from consumer.streams.ledger import FragmentLedger
from consumer.streams.session import StreamWorker
from consumer.wire import read_fragments
from infra.local.kvs_service import LocalKvsService
from infra.local.limits import Limits

from .kvs_wire_helpers import producer_mkv, put_media


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


def run_worker(fragments, settings, work):
    completed = []
    tracker = FragmentLedger(lambda arn, number: completed.append(number))
    worker = StreamWorker("cam", "arn:cam", ListSource(fragments), settings, tracker, work)
    worker.start()
    return worker, completed


def test_realtime_policy_skips_stale_frames_and_still_completes_fragments_in_order(fragments):
    settings = StreamSettings(sampling=Sampling(mode=SamplingMode.FPS, fps=2),
                              policy=LagPolicy.REALTIME, max_lag_seconds=5)
    work: queue.Queue = queue.Queue(maxsize=4)
    worker, completed = run_worker(fragments, settings, work)
    assert worker.join(30)
    assert work.empty()
    assert worker.stats.frames_skipped == worker.stats.frames_queued == 20
    assert completed == [f.fragment_number for f in fragments]


def test_lossless_policy_blocks_the_reader_when_analysis_falls_behind(fragments):
    settings = StreamSettings(sampling=Sampling(mode=SamplingMode.FPS, fps=2),
                              policy=LagPolicy.LOSSLESS)
    work: queue.Queue = queue.Queue(maxsize=4)
    worker, completed = run_worker(fragments, settings, work)
    time.sleep(1.0)
    assert work.full() and worker.stats.fragments <= 2  # backpressure: reading stopped
    taken = []
    while len(taken) < 20:
        item = work.get(timeout=10)
        taken.append(item)
        item.ticket.frame_skipped()
    assert worker.join(10)
    assert worker.stats.frames_skipped == 0 and len(taken) == 20
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
