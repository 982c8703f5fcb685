"""consumer.pipeline.stage_times: the recorder's figures, merging, thread safety, and the stages
the consumer's pipeline records (reader, analysis, handler, writers)."""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest

from consumer.config import load_config
from consumer.pipeline import stage_times as st
from consumer.pipeline.analysis import Analyzer
from consumer.pipeline.outputs import ProcessorInfo
from consumer.pipeline.stage_times import StageTimes, merge
from consumer.sinks.kinesis import KinesisRecordWriter
from consumer.sinks.s3 import S3ObjectWriter
from consumer.streams.session import SharedStages, Start, StreamSession
from consumer.wire import read_fragments
from processors.frames_only import FramesOnlyProcessor

from .test_flow_control import ARN, AckingWriter, ListSource, wait_until

RESOLUTION = 10 ** (1 / st.BUCKETS_PER_DECADE)  # a bucket's width, as a ratio


def close_to(value: float, expected: float) -> bool:
    return expected / RESOLUTION <= value <= expected * RESOLUTION


def test_percentiles_are_within_a_bucket_and_count_mean_max_exact():
    times = StageTimes()
    for ms in range(1, 1001):  # 1 ms .. 1 s, uniform
        times.add("stage", ms / 1000)
    figures = times.snapshot()["stage"]
    assert figures["count"] == 1000 and figures["max"] == 1.0
    assert figures["mean"] == pytest.approx(0.5005)
    assert close_to(figures["p50"], 0.5) and close_to(figures["p90"], 0.9)
    assert sum(n for _, n in figures["histogram"]) == 1000


def test_a_sample_with_a_count_weighs_as_that_many_samples():
    weighted, repeated = StageTimes(), StageTimes()
    weighted.add("inference", 0.040, count=8)
    weighted.add("inference", 0.002, count=2)
    for _ in range(8):
        repeated.add("inference", 0.040)
    for _ in range(2):
        repeated.add("inference", 0.002)
    assert weighted.snapshot() == repeated.snapshot()
    assert close_to(weighted.snapshot()["inference"]["p50"], 0.040)
    weighted.add("inference", 1.0, count=0)  # nothing
    assert weighted.snapshot()["inference"]["count"] == 10


def test_out_of_range_durations_are_clamped_but_the_max_stays_exact():
    times = StageTimes()
    times.add("arrival", -0.5)  # clocks of two hosts: counted as 0
    times.add("arrival", 3e8)  # a fragment from years ago (a replay of an old capture)
    figures = times.snapshot()["arrival"]
    assert figures["count"] == 2 and figures["max"] == 3e8
    assert figures["p50"] == pytest.approx(st.bucket_middle(0))
    assert [i for i, _ in figures["histogram"]] == [0, st.BUCKETS - 1]
    assert StageTimes().snapshot() == {}


def test_adds_from_many_threads_are_all_counted():
    times = StageTimes()

    def hammer():
        for i in range(5000):
            times.add("queue_wait", (i % 100) / 1000)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert times.snapshot()["queue_wait"]["count"] == 20_000


def test_merged_snapshots_equal_one_recorder_of_every_sample_and_survive_json():
    a, b, both = StageTimes(), StageTimes(), StageTimes()
    for i in range(1, 300):
        (a if i % 3 else b).add("decode", i / 10_000)
        both.add("decode", i / 10_000)
    b.add("kds_call", 0.02)
    both.add("kds_call", 0.02)
    merged = merge([json.loads(json.dumps(a.snapshot())), None, b.snapshot()])
    expected = both.snapshot()
    assert merged.keys() == expected.keys()
    for stage, figures in expected.items():
        for key in ("count", "p50", "p90", "max", "histogram"):
            assert merged[stage][key] == figures[key], (stage, key)
        assert merged[stage]["mean"] == pytest.approx(figures["mean"])
    assert merge([]) == {}


def test_every_path_stage_is_described():
    assert set(st.PATH) <= set(st.STAGES)


def test_the_pipeline_records_each_stage_once_per_frame(capture):
    """Reader, analysis worker and handler of a real session over a real capture."""
    fragments = read_fragments(capture("output_get_media.mkv"))
    config = load_config(data={"streams": {"names": ["cam"],
                                           "defaults": {"sampling": {"mode": "fps", "fps": 2}}},
                               "processing": {"processor": "none"},
                               "outputs": {"kinesis": {"stream": "records"}}}, environ={})
    times = StageTimes()
    completed: list[int] = []
    stages = SharedStages(config, None, None, AckingWriter(), None, None,
                          ProcessorInfo("none", "none", "0", ""),
                          lambda arn, number, producer_time: completed.append(number),
                          holds=lambda arn: True, stage_times=times)
    work: queue.Queue = queue.Queue(maxsize=8)
    sessions = {}
    analyzer = Analyzer(FramesOnlyProcessor(), work, lambda key, m: sessions[key].post(m),
                        batch_size=4, batch_wait_ms=5, stage_times=times).start()
    session = StreamSession(1, "cam", ARN, Start(None, False, None), stages, work,
                            source=ListSource(fragments))
    sessions[1] = session
    session.start()
    try:
        assert wait_until(lambda: len(completed) == len(fragments), 30)
    finally:
        session.close(5)
        analyzer.stop()
    figures = times.snapshot()
    frames = session.stats.frames_analysed
    assert frames == 20
    for stage in (st.QUEUE_WAIT, st.BATCH_WAIT, st.INFERENCE, st.HANDLER_WAIT,
                  st.RECORD_BUILD, st.ACK_WAIT):
        assert figures[stage]["count"] == frames, stage
    for stage in (st.ARRIVAL, st.DECODE, st.DECODE_FRAME):
        assert figures[stage]["count"] == len(fragments), stage
    assert figures[st.INFERENCE_FRAME]["count"] == analyzer.batches
    assert figures[st.ARRIVAL]["max"] > 3600 * 24 * 365  # recorded in 2017
    assert figures[st.ARRIVAL]["p50"] == pytest.approx(st.bucket_middle(st.BUCKETS - 1))
    assert 0 < figures[st.DECODE_FRAME]["p50"] < figures[st.DECODE]["p50"]


class SlowKinesis:
    """Accepts every record after `seconds`."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def put_records(self, *, StreamName, Records):  # boto3's parameter names
        time.sleep(self.seconds)
        return {"FailedRecordCount": 0, "Records": [{"SequenceNumber": "1"} for _ in Records]}


class SlowS3:
    def put_object(self, **_):
        time.sleep(0.01)


def test_the_writers_record_linger_and_call_per_record_and_object():
    times = StageTimes()
    writer = KinesisRecordWriter(SlowKinesis(0.05), "records", linger_ms=100, stage_times=times)
    done = threading.Semaphore(0)
    for i in range(3):
        writer.put(b"x", "cam", lambda ok: done.release())
    for _ in range(3):
        assert done.acquire(timeout=10)
    writer.close(5)
    uploads = S3ObjectWriter(SlowS3(), "bucket", stage_times=times)
    uploads.put("a.jpg", b"jpeg", "image/jpeg", {}, lambda ok: done.release())
    assert done.acquire(timeout=10)
    uploads.close(5)
    figures = times.snapshot()
    assert figures[st.KDS_LINGER]["count"] == figures[st.KDS_CALL]["count"] == 3
    assert 0.09 <= figures[st.KDS_LINGER]["max"] < 1.0  # the linger of 100 ms
    assert figures[st.KDS_CALL]["max"] >= 0.05
    assert figures[st.S3_CALL]["count"] == 1 and figures[st.S3_CALL]["max"] >= 0.01
