"""Frame records (consumer.formats.records): their JSON Schema, deterministic ids, compact encoding."""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from consumer.formats.records import (
    COCO_KEYPOINTS,
    POSE_LANDMARKS,
    SCHEMA_VERSION,
    encode_record,
    frame_record,
    load_schema,
)
from processors.base import FrameResult, Landmark, Person
from processors.frames import FrameSource

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-1/1700000000000"
FRAGMENT = 91343852333181432392682062607743920146264772742  # 47 digits, as KVS gives them


def source(index: int = 3, fragment: int = FRAGMENT) -> FrameSource:
    return FrameSource(stream_name="cam-1", stream_arn=ARN, fragment_number=fragment,
                       server_timestamp=1714564800.123, producer_timestamp=1714564799.9,
                       frame_offset=index / 15, frame_index=index)


def person(seed: int, count: int = 33, track: int | None = 7) -> Person:
    landmarks = tuple(Landmark(x=0.1 + i / 100 + seed / 1000, y=0.123456789, z=-0.0123456,
                               visibility=0.98765, presence=0.5) for i in range(count))
    return Person(bbox=(0.1, 0.2, 0.45678912, 0.9), confidence=0.91234, landmarks=landmarks,
                  track_id=track)


@pytest.fixture(scope="module")
def validator():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def make(result: FrameResult, **kwargs) -> dict:
    return frame_record(source(), result, "pose", "pose_landmarker_full.task", "0.10.21",
                        (1280, 720), **kwargs)


def test_frame_without_persons_validates(validator):
    record = make(FrameResult())
    validator.validate(record)
    assert record["Persons"] == [] and "Frames" not in record and "Extra" not in record
    video = record["InputInformation"]["KinesisVideo"]
    assert video == {"StreamArn": ARN, "StreamName": "cam-1", "FragmentNumber": str(FRAGMENT),
                     "ServerTimestamp": 1714564800.123, "ProducerTimestamp": 1714564799.9,
                     "FrameOffsetInSeconds": 0.2, "FrameIndex": 3}
    assert record["SchemaVersion"] == SCHEMA_VERSION
    assert record["Frame"] == {"Width": 1280, "Height": 720, "ProducerTime": 1714564800.1}
    assert record["Processor"]["Name"] == "pose" and record["Processor"]["ConsumerVersion"]


def test_frame_with_two_persons_validates_in_rekognition_shape(validator):
    frames = [{"Bucket": "frames-bucket", "Key": "p/frames/x.jpg"},
              {"Bucket": "frames-bucket", "Key": "p/frames/x-annotated.jpg", "Annotated": True}]
    record = make(FrameResult(persons=(person(1), person(2, track=None)),
                              extra={"fps": 2.0}), frames=frames)
    validator.validate(record)
    first, second = record["Persons"]
    assert first["BoundingBox"] == {"Left": 0.1, "Top": 0.2, "Width": 0.3568, "Height": 0.7}
    assert first["Confidence"] == 91.23 and first["TrackId"] == 7 and second["TrackId"] is None
    assert [lm["Type"] for lm in first["Landmarks"]] == list(POSE_LANDMARKS)
    assert first["Landmarks"][0] == {"Type": "nose", "X": 0.101, "Y": 0.1235, "Z": -0.0123,
                                     "Visibility": 0.988, "Presence": 0.5}
    assert first["Landmarks"][11]["Type"] == "left_shoulder"
    assert record["Frames"] == frames and record["Extra"] == {"fps": 2.0}


def test_coco_keypoints_take_their_mediapipe_names(validator):
    record = make(FrameResult(persons=(person(1, count=17),)))
    validator.validate(record)
    assert [lm["Type"] for lm in record["Persons"][0]["Landmarks"]] == list(COCO_KEYPOINTS)


def test_record_ids_are_deterministic_per_frame():
    a = make(FrameResult())
    again = make(FrameResult(persons=(person(1),)))  # other results, same frame: same id
    assert a["RecordId"] == again["RecordId"] == source().record_id
    other = frame_record(source(index=4), FrameResult(), "pose", "m", "1", (1280, 720))
    assert other["RecordId"] != a["RecordId"]
    other_fragment = frame_record(source(fragment=FRAGMENT + 1), FrameResult(), "pose", "m", "1",
                                  (1280, 720))
    assert other_fragment["RecordId"] != a["RecordId"]


def test_encoding_is_compact_utf8_json_that_round_trips(validator):
    record = make(FrameResult(persons=(person(1),)))
    data = encode_record(record)
    assert b": " not in data and b", " not in data and b"\n" not in data
    assert json.loads(data) == record
    validator.validate(json.loads(data))
    assert len(data) < 5000  # 33 landmarks stay small: no float noise like 0.12345678901234


def test_invalid_inputs_are_refused_not_encoded():
    with pytest.raises(ValueError, match="stream name"):
        frame_record(FrameSource("../etc", ARN, 1, 1.0, 1.0, 0.0, 0), FrameResult(), "p", "m",
                     "1", (2, 2))
    with pytest.raises(ValueError, match="ARN"):
        frame_record(FrameSource("cam-1", "https://user:secret@host/stream", 1, 1.0, 1.0, 0.0,
                                 0), FrameResult(), "p", "m", "1", (2, 2))
    with pytest.raises(ValueError, match="landmarks"):
        make(FrameResult(persons=(person(1, count=5),)))
    bad = Person(bbox=(0.1, math.nan, 0.2, 0.3), confidence=0.5)
    with pytest.raises(ValueError, match="finite"):
        make(FrameResult(persons=(bad,)))


def test_schema_rejects_what_downstream_could_not_join(validator):
    record = make(FrameResult())
    record["InputInformation"]["KinesisVideo"]["FragmentNumber"] = FRAGMENT  # a number: rounded
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(record)
    record = make(FrameResult())
    del record["InputInformation"]["KinesisVideo"]["FrameOffsetInSeconds"]
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(record)
    record = make(FrameResult(persons=(person(1),)))
    record["Persons"][0]["Landmarks"][0]["Type"] = "tail"
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(record)


def test_a_trailing_newline_is_not_part_of_a_valid_name():
    with pytest.raises(ValueError, match="stream name"):
        frame_record(FrameSource("cam-1\n", ARN, 1, 1.0, 1.0, 0.0, 0), FrameResult(), "p", "m",
                     "1", (2, 2))
    with pytest.raises(ValueError, match="ARN"):
        frame_record(FrameSource("cam-1", ARN + "\n", 1, 1.0, 1.0, 0.0, 0), FrameResult(), "p",
                     "m", "1", (2, 2))
