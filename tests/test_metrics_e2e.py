"""`/metrics` scraped during a real run: a camera streaming in real time into the local KVS
service, the real consumer process (`python -m consumer run`, JSON logs, EMF lines), and the
counters compared with what the run did as the user reads it back: fragments in the stream,
records in the data stream, objects in the bucket."""

from __future__ import annotations

import pytest

from consumer.fleet.lease_table import LeaseTable
from infra.local.limits import Limits
from infra.local.stack import LocalStack

from .faults.harness import TABLE, Run, wait_for
from .health_helpers import free_port, get_json, log_lines, scrape, value

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack():
    with LocalStack(limits=Limits(getmedia_idle_seconds=1.0)) as local:
        LeaseTable(local.client("dynamodb"), TABLE, "observer").ensure_table()
        yield local


def test_metrics_match_what_the_run_delivered(stack, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run = Run(stack, tmp_path, camera_seconds=10, proxied=(), config={
        "health": {"port": port, "host": "127.0.0.1", "emf": True, "emf_seconds": 1,
                   "fleet": "test-fleet"},
        "logging": {"format": "json"}})
    try:
        run.start_consumer()
        wait_for(lambda: get_json(base + "/readyz")[0] == 200, 30, "/readyz 200")
        assert get_json(base + "/healthz") == (200, {"alive": True, "state": "running",
                                                     "worker_id": get_json(
                                                         base + "/healthz")[1]["worker_id"]})
        run.camera.wait(40)
        final = run.last_fragment()
        wait_for(lambda: run.checkpoint_or_none() == final, 30, "the last checkpoint")
        records = run.records()
        fragments = len(stack.client("kinesis-video-archived-media").list_fragments(
            StreamName=run.name)["Fragments"])
        objects = stack.client("s3").list_objects_v2(Bucket=run.bucket).get("KeyCount", 0)
        # what was delivered is checkpointed; the scrape comes after, while the process runs
        samples = scrape(base)
    finally:
        run.stop()
    stream = {"stream": run.name}
    assert records and fragments > 5
    assert value(samples, "kvsa_stream_fragments_read_total", **stream) == fragments
    analysed = value(samples, "kvsa_stream_frames_analysed_total", **stream)
    assert analysed == len(records)
    assert value(samples, "kvsa_stream_frames_decoded_total", **stream) >= analysed
    assert value(samples, "kvsa_stream_frames_skipped_total", **stream) == 0
    assert value(samples, "kvsa_stream_decode_errors_total", **stream) == 0
    assert value(samples, "kvsa_stream_lag_seconds_count", **stream) == analysed
    assert value(samples, "kvsa_stream_lag_seconds_bucket", le="+Inf", **stream) == analysed
    assert 0 < value(samples, "kvsa_stream_lag_seconds_sum", **stream) < 60 * analysed
    assert value(samples, "kvsa_stream_millis_behind_now", **stream) is not None
    assert value(samples, "kvsa_stream_checkpoint_age_seconds", **stream) >= 0
    assert value(samples, "kvsa_stream_held", **stream) == 1
    assert value(samples, "kvsa_stream_stuck", **stream) == 0
    assert value(samples, "kvsa_sink_written_total", sink="kinesis") == len(records)
    assert value(samples, "kvsa_sink_written_total", sink="s3") == objects == len(records)
    assert value(samples, "kvsa_sink_failures_total", sink="kinesis") == 0
    assert value(samples, "kvsa_sink_failures_total", sink="s3") == 0
    assert value(samples, "kvsa_sink_put_seconds_count", sink="s3") == objects
    assert value(samples, "kvsa_sink_put_seconds_count", sink="kinesis") >= len(records)
    assert value(samples, "kvsa_leases_held") == 1
    assert value(samples, "kvsa_leases_taken_total") == 1
    assert value(samples, "kvsa_leases_lost_total") == 0
    assert value(samples, "kvsa_checkpoint_writes_total") >= 1
    assert value(samples, "kvsa_analysis_frames_total") == analysed
    assert value(samples, "kvsa_analysis_batch_size_sum") == analysed
    assert value(samples, "kvsa_analysis_batch_size_count") == \
        value(samples, "kvsa_analysis_batches_total") > 0
    assert value(samples, "kvsa_analysis_inference_seconds_count") == analysed
    assert value(samples, "kvsa_stage_seconds_count", stage="decode") == fragments

    logs, emf, other = log_lines(run.log)
    assert not other, other[:5]  # logging.format json: every line is JSON
    assert {"time", "level", "logger", "message"} <= set(logs[0])
    mine = [line for line in logs if line.get("stream") == run.name]
    assert any("lease won" in line["message"] for line in mine)
    assert emf, "no EMF line"
    for line in emf:
        (metrics,) = line["_aws"]["CloudWatchMetrics"]
        assert metrics["Namespace"] == "KvsAnalytics" and metrics["Dimensions"] == [["Fleet"]]
        assert line["Fleet"] == "test-fleet" and line["Errors"] == 0
        names = {m["Name"] for m in metrics["Metrics"]}
        assert names <= {"LagSeconds", "Errors"} and set(line) >= names
    lags = [line["LagSeconds"] for line in emf if "LagSeconds" in line]
    assert lags and all(0 < lag < 60 for lag in lags)
