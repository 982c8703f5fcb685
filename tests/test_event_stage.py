"""EventStage: a camera's rules on tracked frames -> event records, highlight and clip objects,
each registered on the raising frame's fragment ticket. The writers here are in-process
stand-ins that record what they are given (the real ones, against moto and the local KVS, are in
tests/test_events_e2e.py); presigned URLs come from a real boto3 S3 client (signing is local)."""

from __future__ import annotations

import io
import json

import boto3
import jsonschema
import numpy as np
from PIL import Image

from consumer.config import Events, S3Output
from consumer.formats.event_records import SCHEMA_PATH
from consumer.pipeline.event_stage import EventStage
from consumer.pipeline.ledger import FragmentLedger
from consumer.sinks.locations import S3Locations
from processors.base import FrameResult, Person
from processors.frames import FrameSource, VideoFrame

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-1/1700000000000"
T0 = 1_700_000_000.0


class Recorder:
    """Stand-in writer: keeps what it is given, acknowledges at once."""

    def __init__(self):
        self.items = []

    def put(self, *args):
        *payload, on_done = args
        self.items.append(payload)
        on_done(True)


def stage(**events) -> tuple[EventStage, Recorder, Recorder]:
    config = Events(cameras={"cam-*": {"rules": [
        {"type": "zone", "name": "door", "polygon": [[0.5, 0], [1, 0], [1, 1.1], [0.5, 1.1]]},
        {"type": "dwell", "name": "loiter", "zone": "door", "seconds": 2}]}},
        clips=False, url_expiry_seconds=120, **events)
    s3_client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                             aws_secret_access_key="secret")
    kinesis, s3 = Recorder(), Recorder()
    processor = {"Name": "pose", "Model": "m", "ModelVersion": "1"}
    args = (processor, kinesis, s3, S3Output(bucket="events-bucket", prefix="p"),
            S3Locations(s3_client, "events-bucket", 120))
    assert EventStage.for_stream("other", config, *args) is None  # no rules: no event state
    return EventStage.for_stream("cam-1", config, *args), kinesis, s3


def frame(i: int, x: float) -> tuple[VideoFrame, FrameResult]:
    source = FrameSource("cam-1", ARN, 100 + i // 4, T0 + i * 0.5, T0 + (i // 4) * 2.0,
                         (i % 4) * 0.5, i % 4)
    person = Person((x, 0.3, x + 0.1, 0.9), 0.9, track_id=7)
    return VideoFrame(source, np.zeros((90, 160, 3), np.uint8), i % 4 == 0), \
        FrameResult((person,))


def test_entry_dwell_and_exit_records_with_media_written_once():
    events, kinesis, s3 = stage()
    tracker = FragmentLedger("arn", lambda t: None)
    path = [0.2] * 2 + [0.7] * 10 + [0.2] * 4  # outside, inside for 5 s, outside again
    for i, x in enumerate(path):
        video, result = frame(i, x)
        ticket = tracker.begin(video.source.fragment_number)
        events.observe(video, result, ticket)
    records = [json.loads(data) for data, _key in kinesis.items]
    schema = json.loads(SCHEMA_PATH.read_text())
    for record in records:
        jsonschema.validate(record, schema)
    assert [(r["EventType"], r["Status"]) for r in records] == [
        ("zone_entry", "instant"), ("dwell", "started"), ("dwell", "ended"),
        ("zone_exit", "instant")]
    started, ended = records[1], records[2]
    assert started["EventId"] == ended["EventId"] and started["RecordId"] != ended["RecordId"]
    assert started["EndTimestamp"] is None and ended["EndTimestamp"] > ended["StartTimestamp"]
    assert ended["Highlight"]["Key"] == started["Highlight"]["Key"]
    assert all(r["TrackId"] == 7 for r in records)
    assert all(key == "cam-1" for _data, key in kinesis.items)  # partition key: the camera

    # a highlight per event, but none again when the dwell ends
    keys = [item[0] for item in s3.items]
    assert len(keys) == 3 and len(set(keys)) == 3
    assert all(k.startswith("p/events/stream=cam-1/date=2023-11-14/") and
               k.endswith("/highlight.jpg") for k in keys)
    assert {r["Highlight"]["Key"] for r in records} == set(keys)
    _key, body, content_type, metadata = s3.items[0]
    assert content_type == "image/jpeg" and Image.open(io.BytesIO(body)).size == (160, 90)
    assert metadata["event-id"] == records[0]["EventId"] and metadata["stream"] == "cam-1"
    url = records[0]["Highlight"]["Url"]
    assert "X-Amz-Expires=120" in url or "Expires=" in url
    assert records[0]["Highlight"]["UrlExpiresAt"] > T0


def test_an_event_holds_its_fragment_until_its_outputs_are_acknowledged():
    events, kinesis, _s3 = stage()
    done = []
    tracker = FragmentLedger("arn", lambda t: done.append(t.fragment_number))
    held = []
    kinesis.put = lambda data, key, on_done: held.append(on_done)  # acknowledge later
    ticket = tracker.begin(100)
    for i, x in enumerate([0.7] * 4):  # fragment 100: zone entry at its third frame
        video, result = frame(i, x)
        ticket.frame_queued()
        events.observe(video, result, ticket)
        ticket.frame_analysed(video.source, result)
    ticket.seal()
    assert len(held) == 1 and done == []  # the event record is not acknowledged yet
    held[0](True)
    assert done == [100]


def test_face_match_records_from_the_frames_face_search():
    """The stage ties each face's matches to the person holding it (PersonIndex): the search
    here is the real FaceSearch over an in-memory collection index."""
    from consumer.faces.records import FaceRecord
    from consumer.faces.search import CollectionIndex
    from consumer.pipeline.face_search import FaceSearch
    from processors.faces import Face

    rng = np.random.default_rng(17)
    known = rng.normal(size=(2, 128)).astype(np.float32)
    index = CollectionIndex(known, [
        FaceRecord("staff", f"face-{name}", name, "img", (0.1, 0.1, 0.2, 0.2), 0.99,
                   "2026-01-01T00:00:00Z", f"k/{name}") for name in ("speaker", "alice")])
    search = FaceSearch(index, match_threshold=80.0)
    config = Events(cameras={"cam-*": {"rules": [
        {"type": "face_match", "name": "speaker-seen", "external_image_id": "speaker"}]}},
        clips=False)
    kinesis, s3 = Recorder(), Recorder()
    s3_client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="AKIDEXAMPLE",
                             aws_secret_access_key="secret")
    events = EventStage.for_stream(
        "cam-1", config, {"Name": "pose", "Model": "m", "ModelVersion": "1"}, kinesis, s3,
        S3Output(bucket="events-bucket"), S3Locations(s3_client, "events-bucket", 120))
    tracker = FragmentLedger("arn", lambda t: None)

    def face(embedding, person):
        return Face((0.3, 0.3, 0.1, 0.1), 0.9, ((0.33, 0.33),) * 6, embedding, person)

    persons = (Person((0.0, 0.2, 0.2, 0.9), 0.9, track_id=3),
               Person((0.5, 0.2, 0.7, 0.9), 0.9, track_id=8))
    for i in range(6):
        video, _ = frame(i, 0.2)
        # person 0 holds alice's face; person 1 the speaker's from frame 2; a stray speaker
        # face held by no one throughout
        faces = [face(known[1], 0), face(known[0] + 0.01, None)]
        if i >= 2:
            faces.append(face(known[0], 1))
        result = FrameResult(persons)
        events.observe(video, result, tracker.begin(video.source.fragment_number),
                       search.response(faces, persons))
    records = [json.loads(data) for data, _key in kinesis.items]
    schema = json.loads(SCHEMA_PATH.read_text())
    for record in records:
        jsonschema.validate(record, schema)
    [record] = records
    assert record["EventType"] == "face_match" and record["Status"] == "instant"
    assert record["TrackId"] == 8 and record["Rule"] == "speaker-seen"
    assert record["InputInformation"]["KinesisVideo"]["FrameIndex"] == 2
    assert record["Details"] == {"collection": "staff", "external_image_id": "speaker",
                                 "face_id": "face-speaker", "similarity": 100.0}
    assert record["Confidence"] == 100.0
    [(_key, body, _type, metadata)] = s3.items
    assert metadata["event-type"] == "face_match" and Image.open(io.BytesIO(body)).size == (160, 90)
