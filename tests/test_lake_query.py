"""The lake end to end: a recorded video through batch mode (records to the local stack's data
stream, objects to its bucket), the local Firehose leg into the bucket, then `kvs-analytics
query` over s3:// (copied with boto3 from moto's S3) with the views and the named reports."""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest

from consumer import cli
from consumer.demo import STAGE_ZONE
from infra.local.firehose import FirehoseBridge
from infra.local.resources import create_resources
from infra.local.stack import LocalStack
from kvs_analytics import BatchPipeline, batch_config
from tests.batch_helpers import write_config
from tests.conftest import CAPTURES


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """(stack, the batch's manifest entry, the query's common arguments)."""
    tmp = tmp_path_factory.mktemp("lake")
    with LocalStack() as stack:
        create_resources(stack, "video-analytics", "video-analytics", [])
        config_file = write_config(
            tmp / "batch.yaml",
            aws={"region": stack.region, "endpoints": {"s3": stack.endpoints["s3"],
                                                       "kinesis": stack.endpoints["kinesis"]}},
            outputs={"kinesis": {"stream": "video-analytics", "linger_ms": 20}},
            events={"cameras": {"*": {"rules": [
                {"type": "zone", "name": "stage", "polygon": STAGE_ZONE}]}}})
        # the speaker walks into the demo's stage zone at 11.8 s and is lost at 13.3 s
        config = batch_config(config_file, max_frames=600, s3_bucket="video-analytics",
                              environ={})
        result = BatchPipeline(config, tmp / "out").run([CAPTURES / "vogels_330.mkv"])
        assert result.ok, result
        entry = result.videos[0].outcome
        kinesis, s3 = stack.client("kinesis"), stack.client("s3")
        bridge = FirehoseBridge(kinesis, s3, "video-analytics", "video-analytics",
                                buffer_seconds=0.2).start()
        expected = entry["frames_analysed"] + entry["events"]
        deadline = time.monotonic() + 30
        while bridge.records < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        bridge.stop()
        common = ["--lake", "s3://video-analytics/", "--endpoint-url", stack.endpoints["s3"],
                  "--region", stack.region, "--cache", str(tmp / "cache")]
        yield stack, entry, common


def query(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["query", *argv])
    return rc, out.getvalue(), err.getvalue()


def rows(*argv: str) -> list[dict]:
    rc, out, err = query(*argv, "--format", "json")
    assert rc == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_the_views_hold_what_the_batch_delivered(lake):
    _stack, entry, common = lake
    video = entry_video_id = entry["outputs"][0]["key"].split("stream=")[1].split("/")[0]
    [frames] = rows(*common, "SELECT count(*) AS n, sum(persons) AS persons, "
                             "count(DISTINCT stream) AS streams, min(stream) AS stream FROM frames")
    assert frames == {"n": entry["frames_analysed"], "persons": entry["persons"], "streams": 1,
                      "stream": entry_video_id}
    [persons] = rows(*common, "SELECT count(*) AS n, min(confidence) > 0 AS scored FROM persons")
    assert persons == {"n": entry["persons"], "scored": True}
    events = rows(*common, "SELECT event_type, rule, highlight_key FROM events")
    assert len(events) == entry["events"] >= 1
    assert {e["rule"] for e in events} == {"stage"}
    assert all(e["highlight_key"].startswith(f"events/stream={video}/") for e in events)
    [poses] = rows(*common, "SELECT count(*) FILTER (WHERE person_index >= 0) AS n FROM poses")
    assert poses["n"] == entry["persons"]


def test_named_reports(lake):
    _stack, entry, common = lake
    video = entry["outputs"][0]["key"].split("stream=")[1].split("/")[0]
    per_hour = rows(*common, "--report", "events-per-hour")
    assert sum(r["events"] for r in per_hour) >= 1 and {r["stream"] for r in per_hour} == {video}
    over_time = rows(*common, "--report", "persons-over-time")
    assert sum(r["frames"] for r in over_time) == entry["frames_analysed"]
    [track] = rows(*common, "SELECT min(track_id) AS t FROM persons WHERE track_id IS NOT NULL")
    sequence = rows(*common, "--report", "track-poses", "--stream", video,
                    "--track", str(track["t"]))
    assert sequence and all(r["confidence"] > 0 for r in sequence)
    times = [r["producer_time"] for r in sequence]
    assert times == sorted(times)
    rc, text, _ = query(*common, "--report", "dwell-per-zone")  # no dwell rule: no rows
    assert rc == 0 and text.strip().endswith("(0 rows)")


def test_a_second_query_fetches_nothing_new_and_errors_are_plain(lake):
    _stack, _entry, common = lake
    rc, _out, err = query(*common, "SELECT 1")
    assert rc == 0 and "0 objects fetched" in err
    rc, _out, err = query(*common, "SELECT nope FROM frames")
    assert rc == 1 and "nope" in err
    rc, _out, err = query("--lake", "/no/such/folder", "SELECT 1")
    assert rc == 2 and "is not a folder" in err
    rc, _out, err = query(*common, "--report", "track-poses")
    assert rc == 2 and "--stream and --track" in err
