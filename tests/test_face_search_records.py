"""Faces and hands in the records, with the real models on the real capture: the speaker's face
is indexed from one frame into a collection in the local stack (DynamoDB and S3 in moto); then
batch mode runs the capture (his close-ups from about 20 s) and a still photograph of another
person (scikit-image's astronaut, made into a short H.264 video) with processing.faces searching
that collection and processing.hands on. The records, valid against the frame record's schema:

- name him (ExternalImageId "speaker", similarity at or above the threshold) in close-up frames
  where his face is found, each match on the face held by a person;
- never match the astronaut's face to anyone, though it is detected;
- carry no embedding;
- carry hands with 21 landmarks and a handedness in the close-ups.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from consumer.formats.records import load_schema
from infra.local.resources import create_resources
from infra.local.stack import LocalStack
from kvs_analytics import BatchPipeline, batch_config
from processors.faces import FaceAnalyzer
from tests.batch_helpers import write_config
from tests.conftest import CAPTURES
from tests.face_helpers import BUCKET, THRESHOLD, astronaut_video, frame_at, index_speaker


@pytest.fixture(scope="module")
def records(models, tmp_path_factory) -> dict[str, list[dict]]:
    """Frame records per video id: the capture's and the astronaut's."""
    tmp = tmp_path_factory.mktemp("faces")
    astronaut_video(tmp / "astronaut.mp4")
    with LocalStack() as stack:
        create_resources(stack, BUCKET, BUCKET, [])
        index_speaker(stack, BUCKET, models)
        config_file = write_config(
            tmp / "batch.yaml",
            aws={"region": stack.region, "endpoints": {"s3": stack.endpoints["s3"],
                                                       "dynamodb": stack.endpoints["dynamodb"]}},
            processing={"pose": {"models_dir": str(models), "download": False, "model": "full"},
                        "faces": {"enabled": True,
                                  "search": {"collections": ["staff"],
                                             "match_threshold": THRESHOLD}},
                        "hands": {"enabled": True}})
        config = batch_config(config_file, max_frames=900, s3_bucket=BUCKET, environ={})
        result = BatchPipeline(config, tmp / "out").run(
            [CAPTURES / "vogels_330.mkv", tmp / "astronaut.mp4"])
        assert result.ok, result
    out: dict[str, list[dict]] = {}
    for path in (tmp / "out" / "records").rglob("records.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record["RecordType"] == "Frame":
                out.setdefault(record["InputInformation"]["File"]["VideoId"], []).append(record)
    return out


def video(records: dict[str, list[dict]], stem: str) -> list[dict]:
    [key] = [key for key in records if key.startswith(stem)]
    return records[key]


def test_records_are_valid_and_carry_no_embedding(records):
    schema = load_schema()
    for frames in records.values():
        for record in frames:
            jsonschema.validate(record, schema)
            assert "FaceSearchResponse" in record
            assert "mbedding" not in json.dumps(record)


def test_the_speaker_is_named_in_his_close_ups(records):
    frames = video(records, "vogels_330")
    close_ups = [r for r in frames if r["InputInformation"]["File"]["OffsetInFileSeconds"] >= 20.5]
    faces = [face for r in close_ups for face in r["FaceSearchResponse"]]
    assert len(faces) >= 3, "his face should be found in several close-up frames"
    named = [face for face in faces if face["MatchedFaces"]]
    assert len(named) >= len(faces) // 2, faces
    for face in named:
        [match] = face["MatchedFaces"]
        assert match["Face"]["ExternalImageId"] == "speaker"
        assert match["Face"]["Collection"] == "staff"
        assert THRESHOLD <= match["Similarity"] <= 100
        assert face["PersonIndex"] is not None
    for record in close_ups:
        for face in record["FaceSearchResponse"]:
            detected = face["DetectedFace"]
            assert 0 < detected["BoundingBox"]["Width"] < 0.5 and len(detected["Landmarks"]) == 6
            assert 0 <= detected["Quality"]["Sharpness"] <= 100


def test_another_persons_face_matches_no_one(records):
    frames = video(records, "astronaut")
    faces = [face for r in frames for face in r["FaceSearchResponse"]]
    assert faces, "the astronaut's face should be detected"
    assert all(face["MatchedFaces"] == [] for face in faces), faces


def test_hands_are_in_the_close_ups(records):
    frames = video(records, "vogels_330")
    hands = [hand for r in frames for hand in r.get("Hands", [])]
    assert hands, "the speaker's hands should be found in his close-ups"
    for hand in hands:
        assert hand["Handedness"] in ("Left", "Right") and len(hand["Landmarks"]) == 21
        assert hand["Landmarks"][0]["Type"] == "wrist"


def test_privacy_blurs_faces_in_stored_jpegs(models, tmp_path):
    config_file = write_config(
        tmp_path / "batch.yaml",
        processing={"pose": {"models_dir": str(models), "download": False, "model": "full"}},
        streams={"defaults": {"annotate": False}},  # the stored pixels are the frame's
        privacy={"blur_faces": True})
    config = batch_config(config_file, max_frames=700, environ={})
    result = BatchPipeline(config, tmp_path / "out").run([CAPTURES / "vogels_330.mkv"])
    assert result.ok, result
    [path] = (tmp_path / "out" / "records").rglob("records.jsonl")
    frames = [json.loads(line) for line in path.read_text().splitlines()]
    close_ups = [r for r in frames if r["RecordType"] == "Frame" and r.get("Frames")
                 and r["InputInformation"]["File"]["OffsetInFileSeconds"] >= 20.5]
    assert close_ups and all("FaceSearchResponse" not in r for r in close_ups)
    checked = 0
    with FaceAnalyzer(models, embed=False) as analyzer:
        for record in close_ups:
            raw = frame_at(round(record["InputInformation"]["File"]["OffsetInFileSeconds"]
                                 * 30000 / 1001))
            found = analyzer.faces(raw)
            if not found:
                continue
            stored = np.asarray(_jpeg(tmp_path / "out" / record["Frames"][0]["Path"]),
                                dtype=np.float32)
            left, top, width, height = found[0].box
            h, w = raw.shape[:2]
            face = (slice(int(top * h), int((top + height) * h)),
                    slice(int(left * w), int((left + width) * w)))
            corner = (slice(0, h // 6), slice(0, w // 6))  # far from the speaker
            inside = np.abs(stored[face] - raw[face]).mean()
            outside = np.abs(stored[corner] - raw[corner]).mean()
            # unblurred, both differ by JPEG's loss only (about 1); pixelated, the face by 20+
            assert inside > 8 and outside < 2, (inside, outside)
            checked += 1
    assert checked >= 2


def _jpeg(path):
    from PIL import Image
    with Image.open(path) as image:
        return image.convert("RGB")
