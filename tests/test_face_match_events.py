"""face_match events end to end, with the real models on the real capture (the setup of
tests/test_face_search_records.py): the speaker's face is indexed from one frame into a `staff`
collection in the local stack (DynamoDB and S3 in moto); batch mode runs the capture and the
astronaut's still video with a face_match rule for ExternalImageId "speaker" and outputs.s3 in
the stack's bucket, then runs the capture again with privacy.blur_faces. Then:

- each track seen with the speaker's face raises exactly one face_match event, at the first
  frame whose FaceSearchResponse names him on that track, with that match in its Details and
  that person's TrackId (the frame records are the reference);
- its highlight JPEG is in the bucket (and the output folder), of the event's frame;
- with privacy on, the same events are raised and their highlights are pixelated over the face
  and unchanged elsewhere;
- the astronaut's face, detected but matching no one, raises nothing.
"""

from __future__ import annotations

import io
import json

import jsonschema
import numpy as np
import pytest
from PIL import Image

from consumer.formats.event_records import SCHEMA_PATH
from infra.local.resources import create_resources
from infra.local.stack import LocalStack
from kvs_analytics import BatchPipeline, batch_config
from tests.batch_helpers import write_config
from tests.conftest import CAPTURES
from tests.face_helpers import BUCKET, THRESHOLD, astronaut_video, frame_at, index_speaker

RULE = {"type": "face_match", "name": "speaker-seen", "external_image_id": "speaker"}
FPS = 30000 / 1001  # the capture's frame rate


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory) -> dict[str, dict]:
    """Per run ("plain", "private"): its frame records and event records per video id, and the
    bytes of each event's highlight as read back from the bucket, by key."""
    tmp = tmp_path_factory.mktemp("face-match")
    astronaut_video(tmp / "astronaut.mp4")
    out: dict[str, dict] = {}
    with LocalStack() as stack:
        create_resources(stack, BUCKET, BUCKET, [])
        index_speaker(stack, BUCKET, models)
        s3 = stack.client("s3")
        for name, blur, videos in (
                ("plain", False, [CAPTURES / "vogels_330.mkv", tmp / "astronaut.mp4"]),
                ("private", True, [CAPTURES / "vogels_330.mkv"])):
            folder = tmp / name
            config_file = write_config(
                tmp / f"{name}.yaml",
                aws={"region": stack.region, "endpoints": {
                    "s3": stack.endpoints["s3"], "dynamodb": stack.endpoints["dynamodb"]}},
                processing={"pose": {"models_dir": str(models), "download": False,
                                     "model": "full"},
                            "faces": {"enabled": True,
                                      "search": {"collections": ["staff"],
                                                 "match_threshold": THRESHOLD}}},
                events={"cameras": {"*": {"rules": [RULE]}}, "clips": False},
                privacy={"blur_faces": blur})
            # a prefix of its own: the bucket's manifest would skip a video done before
            config = batch_config(config_file, max_frames=900, s3_bucket=BUCKET,
                                  s3_prefix=name, environ={})
            result = BatchPipeline(config, folder / "out").run(videos)
            assert result.ok, result
            run = {"frames": {}, "events": {}, "highlights": {}, "folder": folder / "out"}
            for path in (folder / "out").rglob("records.jsonl"):
                for line in path.read_text().splitlines():
                    record = json.loads(line)
                    kind = "events" if record["RecordType"] == "Event" else "frames"
                    video_id = record["InputInformation"]["File"]["VideoId"]
                    run[kind].setdefault(video_id, []).append(record)
            for events in run["events"].values():
                for event in events:
                    where = event["Highlight"]
                    body = s3.get_object(Bucket=where["Bucket"], Key=where["Key"])["Body"]
                    run["highlights"][where["Key"]] = body.read()
            out[name] = run
    return out


def video(records: dict[str, list[dict]], stem: str) -> list[dict]:
    return next((records[key] for key in records if key.startswith(stem)), [])


def offset(record: dict) -> float:
    return record["InputInformation"]["File"]["OffsetInFileSeconds"]


def expected_events(frames: list[dict]) -> list[tuple]:
    """From the frame records: per track, the first frame whose faces name the speaker on it
    (offset, track, face id, similarity, the face's box)."""
    first: dict[int, tuple] = {}
    for record in sorted(frames, key=offset):
        for face in record.get("FaceSearchResponse", []):
            if face["PersonIndex"] is None or face["TrackId"] is None:
                continue
            assert record["Persons"][face["PersonIndex"]]["TrackId"] == face["TrackId"]
            for match in face["MatchedFaces"]:
                if match["Face"]["ExternalImageId"] == "speaker" \
                        and face["TrackId"] not in first:
                    first[face["TrackId"]] = (offset(record), face["TrackId"],
                                              match["Face"]["FaceId"], match["Similarity"],
                                              face["DetectedFace"]["BoundingBox"])
    return sorted(first.values(), key=lambda event: event[0])


def test_each_track_seen_with_the_speaker_raises_one_event(runs):
    run = runs["plain"]
    expected = expected_events(video(run["frames"], "vogels_330"))
    assert expected, "the speaker should be matched on some track in his close-ups"
    events = video(run["events"], "vogels_330")
    schema = json.loads(SCHEMA_PATH.read_text())
    for event in events:
        jsonschema.validate(event, schema)
        assert event["EventType"] == "face_match" and event["Status"] == "instant"
        assert event["Rule"] == "speaker-seen"
        assert event["Details"]["collection"] == "staff"
        assert event["Details"]["external_image_id"] == "speaker"
        assert THRESHOLD <= event["Details"]["similarity"] <= 100
        assert event["Confidence"] == pytest.approx(event["Details"]["similarity"], abs=0.01)
    got = sorted((offset(e), e["TrackId"], e["Details"]["face_id"], e["Details"]["similarity"])
                 for e in events)
    assert got == [event[:4] for event in expected]


def test_the_highlight_is_in_the_bucket_and_shows_the_event_frame(runs):
    run = runs["plain"]
    for event in video(run["events"], "vogels_330"):
        where = event["Highlight"]
        assert where["Bucket"] == BUCKET and where["Key"].endswith("/highlight.jpg")
        body = run["highlights"][where["Key"]]
        assert body == (run["folder"] / where["Key"]).read_bytes()
        assert _image(body).shape == frame_at(0).shape  # the frame's size


def test_privacy_pixelates_the_face_in_the_highlight(runs):
    plain, private = runs["plain"], runs["private"]
    expected = {round(e[0], 3): e for e in expected_events(video(plain["frames"], "vogels_330"))}
    events = video(private["events"], "vogels_330")
    plain_events = {e["EventId"]: e for e in video(plain["events"], "vogels_330")}
    assert events and {e["EventId"] for e in events} == set(plain_events)  # the same events
    for event in events:
        blurred = _image(private["highlights"][event["Highlight"]["Key"]])
        clear = _image(plain["highlights"][plain_events[event["EventId"]]["Highlight"]["Key"]])
        raw = frame_at(round(offset(event) * FPS)).astype(np.float32)
        box = expected[round(offset(event), 3)][4]
        h, w = raw.shape[:2]
        face = (slice(int(box["Top"] * h), int((box["Top"] + box["Height"]) * h)),
                slice(int(box["Left"] * w), int((box["Left"] + box["Width"]) * w)))
        # the corner farthest from the face, away from the caption bar
        centre_x = box["Left"] + box["Width"] / 2
        rows = slice(h - h // 6, h)
        corner = (rows, slice(0, w // 6) if centre_x > 0.5 else slice(w - w // 6, w))
        # the same annotations on both: they differ over the face only, by the pixelation
        # (measured: 16-20 over the face, 0 in the corner)
        assert np.abs(blurred[face] - clear[face]).mean() > 8
        assert np.abs(blurred[corner] - clear[corner]).mean() < 1
        # against the video's own frame, the pixelated face is much further off than the
        # annotations drawn over it make the clear one (measured: 23-27 against 10-11)
        assert np.abs(blurred[face] - raw[face]).mean() \
            > np.abs(clear[face] - raw[face]).mean() + 8


def test_a_face_that_matches_no_one_raises_nothing(runs):
    run = runs["plain"]
    faces = [face for r in video(run["frames"], "astronaut")
             for face in r.get("FaceSearchResponse", [])]
    assert faces, "the astronaut's face should be detected"
    assert video(run["events"], "astronaut") == []


def _image(body: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(body)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32)
