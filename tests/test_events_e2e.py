"""End to end with events: simulator -> local KVS -> consumer (real pose model, tracking, a zone
rule) -> event record on Kinesis, highlight JPEG and MP4 clip in S3 under the event's prefix,
presigned URLs that fetch them. Assertions are on what a user reads back."""

from __future__ import annotations

import io
import json
import threading
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

import av
import jsonschema
import pytest
from PIL import Image

from consumer.config import load_config
from consumer.demo import read_all_records
from consumer.formats.event_records import SCHEMA_PATH
from consumer.formats.records import load_schema
from consumer.run import build_processor
from consumer.streams.supervisor import StreamSupervisor
from processors.base import FrameResult, Person

from .test_consumer_e2e import (
    checkpoint,
    config_data,
    last_fragment,
    make_outputs,
    objects,
    push,
    stack,  # noqa: F401 (stack is a fixture)
    wait_for,
)

# The slowest tests here are marked slow (left out of a plain `python -m pytest`; .ci/run runs them)
STAGE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.1], [0.0, 1.1]]  # the whole picture (feet may touch 1.0)


def run_until_checkpointed(stack, config, stream: str, processor=None) -> StreamSupervisor:
    processor = processor or build_processor(config)
    service = StreamSupervisor(config, processor).start()
    stop = threading.Event()
    runner = threading.Thread(target=service.run, args=(stop,))
    runner.start()
    try:
        final = last_fragment(stack, stream)
        wait_for(lambda: checkpoint(stack, stream) == final, 120, "the last checkpoint")
    finally:
        stop.set()
        runner.join(10)
        assert service.shutdown()
        processor.close()
    return service


def test_zone_event_with_highlight_clip_and_urls(stack):
    push(stack, "zone-cam")
    make_outputs(stack, "zone-records", "zone-bucket")
    events = {"cameras": {"zone-*": {"rules": [{"type": "zone", "name": "stage",
                                                 "polygon": STAGE}]}},
              "pre_roll_seconds": 2, "post_roll_seconds": 2, "url_expiry_seconds": 600}
    config = load_config(data=config_data(stack, ["zone-cam"], "zone-records", "zone-bucket",
                                          events=events), environ={})
    run_until_checkpointed(stack, config, "zone-cam")

    records = read_all_records(stack.client("kinesis"), "zone-records")
    frames = [r for r in records if r["RecordType"] == "Frame"]
    found = [r for r in records if r["RecordType"] == "Event"]
    frame_schema, event_schema = load_schema(), json.loads(SCHEMA_PATH.read_text())
    for record in frames:
        jsonschema.validate(record, frame_schema)
    for record in found:
        jsonschema.validate(record, event_schema)
    entries = [r for r in found if r["EventType"] == "zone_entry" and r["Rule"] == "stage"]
    assert entries, [(r["EventType"], r["Rule"]) for r in found]
    entry = entries[0]
    assert entry["TrackId"] is not None and entry["Status"] == "instant"
    video = entry["InputInformation"]["KinesisVideo"]
    assert video["StreamName"] == "zone-cam"

    # the event's track is a person the frame records show
    assert entry["TrackId"] in {p["TrackId"] for r in frames for p in r["Persons"]}

    # a track the model misses is not an exit until it has been unseen for longer than the
    # tracker's lost_track_seconds; then the exit (reason "lost") is of the frame that decided it
    def at(record):
        video = record["InputInformation"]["KinesisVideo"]
        return video["ProducerTimestamp"] + video["FrameOffsetInSeconds"]

    exits = [r for r in found if r["EventType"] == "zone_exit"]
    assert exits and all(r["Details"]["reason"] == "lost" for r in exits)  # nobody walks off
    for lost in exits:
        decided = at(lost)
        assert decided - lost["StartTimestamp"] > config.processing.tracking.lost_track_seconds
        assert lost["Details"]["unseen_seconds"] == pytest.approx(
            decided - lost["StartTimestamp"], abs=1e-3)
        # (times are rounded to the millisecond in records: the last sighting's own frame may
        # read up to 1 ms after StartTimestamp)
        assert not [r for r in frames if lost["StartTimestamp"] + 0.002 < at(r) <= decided
                    and lost["TrackId"] in {p["TrackId"] for p in r["Persons"]}]
        assert len(lost["Details"]["last_box"]) == 4

    keys = objects(stack, "zone-bucket")
    prefix = "events/stream=zone-cam/"
    highlight, clip = entry["Highlight"], entry["Clip"]
    assert highlight["Key"].startswith(prefix) and highlight["Key"] in keys
    assert clip["Key"].startswith(prefix) and clip["Key"] in keys
    assert highlight["Key"].rsplit("/", 1)[0] == clip["Key"].rsplit("/", 1)[0]  # one prefix
    assert entry["EventId"] in highlight["Key"]

    s3 = stack.client("s3")
    jpeg = s3.get_object(Bucket="zone-bucket", Key=highlight["Key"])["Body"].read()
    assert Image.open(io.BytesIO(jpeg)).size == (640, 330)
    with urllib.request.urlopen(highlight["Url"], timeout=10) as response:  # presigned GET
        assert response.read() == jpeg
    mp4 = s3.get_object(Bucket="zone-bucket", Key=clip["Key"])["Body"].read()
    with urllib.request.urlopen(clip["Url"], timeout=10) as response:
        assert response.read() == mp4
    with av.open(io.BytesIO(mp4)) as container:
        decoded = list(container.decode(video=0))
        duration = float(container.streams.video[0].duration
                         * container.streams.video[0].time_base)
    assert decoded and decoded[0].key_frame
    assert (decoded[0].width, decoded[0].height) == (640, 330)
    assert duration >= 2.0  # at least the post-roll; the pre-roll reaches back to a keyframe


@dataclass
class Walker:
    """A processor that sees one person walking left to right across the picture at a steady
    pace (0.03 of the width per second, from x=0.05 at the first frame it is given): the real
    pipeline around it (KVS fragments, decoding, tracking, rules, outputs) does the rest."""
    name: str = "walker"
    model: str = "scripted"
    model_version: str = "1"
    max_batch: int = 8
    start: float | None = None

    def process(self, frames):
        out = []
        for frame in frames:
            t = frame.source.producer_time
            self.start = t if self.start is None else self.start
            x = 0.05 + 0.03 * (t - self.start)
            out.append(FrameResult((Person((x, 0.3, x + 0.1, 0.9), 0.9),)))
        return out

    def close(self):
        pass


@pytest.mark.slow
def test_a_track_keeps_its_id_across_fragments_and_crosses_a_line(stack):
    push(stack, "walk-cam")
    make_outputs(stack, "walk-records", "walk-bucket")
    events = {"cameras": {"walk-cam": {"rules": [
        {"type": "line", "name": "gate", "a": [0.5, 1.0], "b": [0.5, 0.0],
         "direction": "left_to_right"},
        {"type": "line", "name": "wrong-way", "a": [0.5, 1.0], "b": [0.5, 0.0],
         "direction": "right_to_left"}]}}, "clips": False}
    config = load_config(data=config_data(stack, ["walk-cam"], "walk-records", "walk-bucket",
                                          events=events), environ={})
    run_until_checkpointed(stack, config, "walk-cam", Walker())

    records = read_all_records(stack.client("kinesis"), "walk-records")
    frames = [r for r in records if r["RecordType"] == "Frame"]
    ids_by_fragment = defaultdict(set)
    for record in frames[1:]:  # the first sighting is tentative (no id yet)
        (person,) = record["Persons"]
        ids_by_fragment[record["InputInformation"]["KinesisVideo"]["FragmentNumber"]].add(
            person["TrackId"])
    assert len(ids_by_fragment) == 6  # the clip's six fragments
    assert set().union(*ids_by_fragment.values()) == {0}, dict(ids_by_fragment)
    crossings = [r for r in records if r["RecordType"] == "Event"]
    assert [(r["EventType"], r["Rule"], r["TrackId"]) for r in crossings] == [
        ("line_crossing", "gate", 0)]
    crossing = crossings[0]
    assert crossing["Details"] == {"direction": "left_to_right"}
    assert "Clip" not in crossing and "Highlight" in crossing
    walked = crossing["StartTimestamp"] - frames[0]["Frame"]["ProducerTime"]
    due = (0.5 - 0.05 - 0.05) / 0.03  # the box centre (x + 0.05) reaches the line at 0.5
    assert due <= walked <= due + 0.6  # at the first frame sampled after it (2 fps)
