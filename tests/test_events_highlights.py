"""Every event's record and highlight are of the frame that decided it (issue 13, item 5): the
track boxed in red where it is in that frame; for a zone exit decided because the track was lost,
its last box dashed and, inset, the frame it was last seen in. EventStage with in-process
stand-in writers, real JPEGs read back with Pillow."""

from __future__ import annotations

import io
import json

import boto3
import jsonschema
import numpy as np
import pytest
from PIL import Image

from consumer.config import Events, S3Output
from consumer.formats.event_records import SCHEMA_PATH
from consumer.formats.highlights import ALERT, highlight_jpeg
from consumer.pipeline.event_stage import EventStage
from consumer.pipeline.ledger import FragmentLedger
from consumer.sinks.locations import S3Locations
from processors.base import FrameResult, Person
from processors.events import Event, ZoneRule
from processors.frames import FrameSource, VideoFrame

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-1/1700000000000"
T0 = 1_700_000_000.0
W, H = 320, 180
BOX = (0.7, 0.3, 0.8, 0.9)  # inside the zone (x 0.5 .. 1)
SEEN_GREY, UNSEEN_GREY = 200, 30  # the frames with the person are light, the others dark


class Recorder:
    def __init__(self):
        self.items = []

    def put(self, *args):
        *payload, on_done = args
        self.items.append(payload)
        on_done(True)


def make_stage(**kwargs) -> tuple[EventStage, Recorder, Recorder]:
    config = Events(cameras={"cam-*": {"rules": [
        {"type": "zone", "name": "door", "polygon": [[0.5, 0], [1, 0], [1, 1.1], [0.5, 1.1]]}]}},
        clips=False, **kwargs.pop("events", {}))
    s3_client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                             aws_secret_access_key="secret")
    kinesis, s3 = Recorder(), Recorder()
    stage = EventStage.for_stream("cam-1", config, {"Name": "pose", "Model": "m",
                                                    "ModelVersion": "1"},
                                  kinesis, s3, S3Output(bucket="events-bucket", prefix="p"),
                                  S3Locations(s3_client, "events-bucket",
                                              config.url_expiry_seconds),
                                  **kwargs)
    return stage, kinesis, s3


def frame(i: int, seen: bool) -> tuple[VideoFrame, FrameResult]:
    source = FrameSource("cam-1", ARN, 100 + i // 4, T0 + i * 0.5, T0 + (i // 4) * 2.0,
                         (i % 4) * 0.5, i % 4)
    image = np.full((H, W, 3), SEEN_GREY if seen else UNSEEN_GREY, np.uint8)
    persons = (Person(BOX, 0.9, track_id=7),) if seen else ()
    return VideoFrame(source, image, i % 4 == 0), FrameResult(persons)


def run(stage: EventStage, pattern: list[bool]) -> None:
    ledger = FragmentLedger("arn", lambda t: None)
    for i, seen in enumerate(pattern):
        video, result = frame(i, seen)
        stage.observe(video, result, ledger.begin(video.source.fragment_number))


def red(pixel) -> bool:
    r, g, b = (int(v) for v in pixel)
    return r > 180 and g < 110 and b < 110


def decoded(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def test_a_lost_exit_is_decided_after_lost_track_seconds_and_shows_where_it_was_last_seen():
    stage, kinesis, s3 = make_stage()  # events 2.0 s, the tracker's default 3.0 s: 3.0 s
    assert stage.engine is None and stage.lost_track_seconds == 3.0
    run(stage, [True] * 6 + [False] * 10)  # seen until frame 5 (2.5 s), then never
    records = [json.loads(data) for data, _key in kinesis.items]
    schema = json.loads(SCHEMA_PATH.read_text())
    for record in records:
        jsonschema.validate(record, schema)
    assert [(r["EventType"], r["Details"].get("reason")) for r in records] == [
        ("zone_entry", None), ("zone_exit", "lost")]
    entry, lost = records
    # decided at frame 12 (3.5 s unseen: the first frame more than 3.0 s after frame 5)
    assert lost["InputInformation"]["KinesisVideo"]["ProducerTimestamp"] + \
        lost["InputInformation"]["KinesisVideo"]["FrameOffsetInSeconds"] == T0 + 12 * 0.5
    assert lost["StartTimestamp"] == lost["EndTimestamp"] == T0 + 5 * 0.5
    assert lost["Details"]["unseen_seconds"] == 3.5 and lost["Details"]["last_box"] == list(BOX)
    assert stage._last_seen == {}  # nothing kept once the track is given up

    bodies = {key: body for key, body, _type, _meta in s3.items}
    entry_jpeg = decoded(bodies[entry["Highlight"]["Key"]])
    lost_jpeg = decoded(bodies[lost["Highlight"]["Key"]])
    # the entry's frame (light) has the track boxed in red on its left edge
    left, top, bottom = round(BOX[0] * W), round(BOX[1] * H), round(BOX[3] * H)
    assert sum(red(entry_jpeg[y, left]) for y in range(top + 5, bottom - 5)) > 0.8 * (
        bottom - top - 10)
    # the exit's frame is the dark one that decided it, the last box dashed: red, not all along
    edge = [red(lost_jpeg[y, left]) for y in range(top + 5, bottom - 5)]
    assert 0.2 * len(edge) < sum(edge) < 0.9 * len(edge)
    assert lost_jpeg[H - 10, W // 2 - 30].mean() < 80  # the deciding frame, not the last-seen one
    # inset top left (the track was on the right, low): the light frame it was last seen in
    inset = lost_jpeg[40:40 + H // 3 - 10, 10:W // 3 - 10]
    assert np.median(inset) > 150


def test_the_track_is_boxed_in_the_frame_that_decided_the_event():
    stage, kinesis, s3 = make_stage()
    run(stage, [False, True, True, True])  # the entry is decided at frame 3 (third inside)
    (entry,) = [json.loads(data) for data, _key in kinesis.items]
    assert entry["InputInformation"]["KinesisVideo"]["FrameIndex"] == 3
    assert entry["StartTimestamp"] == T0 + 0.5  # the first frame inside
    jpeg = decoded(s3.items[0][1])
    assert red(jpeg[round(0.6 * H), round(BOX[0] * W)])


@pytest.mark.parametrize(("events", "lost_track_seconds", "timeout"),
                         [({}, 5.0, 5.0), ({"track_timeout_seconds": 6.0}, 5.0, 6.0),
                          ({"track_timeout_seconds": 1.0}, None, 3.0)])
def test_the_engine_waits_for_the_longer_of_the_two_timeouts(events, lost_track_seconds,
                                                              timeout):
    stage, _kinesis, _s3 = make_stage(events=events, lost_track_seconds=lost_track_seconds)
    run(stage, [True])
    assert stage.engine.track_timeout == timeout


def test_a_lost_highlight_without_the_last_frame_still_marks_the_last_box():
    zone = ZoneRule("door", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)))
    event = Event("zone_exit", "door", "cam-1", 7, T0, T0, 1, 1, 1.0,
                  {"zone": "door", "reason": "lost", "unseen_seconds": 3.5,
                   "last_box": list(BOX)})
    image = np.full((H, W, 3), UNSEEN_GREY, np.uint8)
    jpeg = decoded(highlight_jpeg(image, (), event, [zone]))
    left = round(BOX[0] * W)
    assert any(red(jpeg[y, left]) for y in range(round(BOX[1] * H), round(BOX[3] * H)))
    assert np.median(jpeg[40:40 + H // 3 - 10, 10:W // 3 - 10]) < 80  # no inset
    assert tuple(ALERT) == (255, 40, 40)
