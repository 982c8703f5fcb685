"""The Kinesis Data Streams record for one analysed frame, shaped like Rekognition Video's.

One JSON object per analysed frame, joinable to the video the way Rekognition Video
stream-processor records were: `InputInformation.KinesisVideo` names the stream, the fragment and
the frame's offset in it (batch mode: `InputInformation.File` names the recorded file, its
SHA-256 and the frame's offset in it instead). The schema is `consumer/formats/schema/frame_record.schema.json` (JSON
Schema 2020-12).

Conventions (stated once here and in the schema's descriptions):
- `RecordId` is `FrameSource.record_id`: the same frame gives the same id on every replay.
- `FragmentNumber` is a decimal string: ~47 digits exceed what JSON numbers keep exactly.
- Times are seconds since the epoch; KVS timestamps are milliseconds, so they carry 3 decimals.
- `BoundingBox` follows Rekognition: Left/Top/Width/Height as ratios of the image size.
- `Confidence` follows Rekognition too: a percentage, 0-100, 2 decimals.
- Landmark X/Y are ratios of the image (Z on the same scale, relative to the hips), 4 decimals:
  1e-4 of the width is under half a pixel even at 8K, and pose models (256x256 input) resolve
  far less. Visibility/Presence are MediaPipe's 0-1 scores, 3 decimals.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from consumer.config import STREAM_ARN, STREAM_NAME
from processors.base import FrameResult, Person
from processors.frames import FrameSource

SCHEMA_VERSION = "1.2"  # 1.1: RecordType, event records; 1.2: FaceSearchResponse, Hands
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "frame_record.schema.json"

# MediaPipe Pose Landmarker's 33 landmarks, in its output order.
POSE_LANDMARKS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_pinky",
    "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb", "left_hip",
    "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "left_heel",
    "right_heel", "left_foot_index", "right_foot_index",
)
# COCO's 17 keypoints (YOLO-pose and friends), in their order; every name is also MediaPipe's.
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
_NAMES_BY_COUNT = {len(POSE_LANDMARKS): POSE_LANDMARKS, len(COCO_KEYPOINTS): COCO_KEYPOINTS}

COORDINATE_DIGITS = 4
SCORE_DIGITS = 3
PERCENT_DIGITS = 2
TIME_DIGITS = 3


@lru_cache(maxsize=1)
def consumer_version() -> str:
    """The installed kvs-analytics version ("0+unknown" when run from a bare checkout)."""
    try:
        return metadata.version("kvs-analytics")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def frame_record(source: FrameSource, result: FrameResult, processor_name: str, model: str,
                 model_version: str, image_size: tuple[int, int], *,
                 frames: Sequence[Mapping[str, Any]] = (),
                 face_search: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The record for one analysed frame.

    `image_size` is (width, height) in pixels. `frames` lists the objects written for this
    frame, each {"Bucket", "Key"[, "Annotated": bool]} (or {"Path", ...} in a batch's folder);
    the record carries "Frames" only when there is one. `face_search`: the frame's
    FaceSearchResponse (consumer.pipeline.face_search), when faces are analysed; the result's
    hands become "Hands" when there are any. Raises ValueError for a stream name or ARN that is not one (so nothing but a
    validated name reaches downstream), a landmark count other than 33 (MediaPipe) or 17 (COCO),
    or a non-finite number.
    """
    width, height = (int(v) for v in image_size)
    record: dict[str, Any] = {
        "RecordType": "Frame",
        "RecordId": source.record_id,
        "SchemaVersion": SCHEMA_VERSION,
        "InputInformation": input_information(source),
        "Processor": {"Name": processor_name, "Model": model, "ModelVersion": model_version,
                      "ConsumerVersion": consumer_version()},
        "Frame": {"Width": width, "Height": height,
                  "ProducerTime": _num(source.producer_time, TIME_DIGITS, "ProducerTime")},
        "Persons": [_person(p) for p in result.persons],
    }
    if face_search is not None:
        record["FaceSearchResponse"] = list(face_search)
    if result.hands:
        record["Hands"] = [_hand(hand, result.persons) for hand in result.hands]
    if frames:
        record["Frames"] = [_location(f) for f in frames]
    if result.extra:
        record["Extra"] = result.extra
    return record


def input_information(source: FrameSource) -> dict[str, Any]:
    """Where the frame sits in Kinesis Video Streams, as Rekognition's records said it, or in a
    recorded file (batch mode: `File`, with the file's hash and the frame's offset in it).
    Raises ValueError for a stream name or ARN that is not one (so nothing but a validated name
    reaches downstream) or a negative fragment number."""
    if not STREAM_NAME.fullmatch(source.stream_name):
        raise ValueError(f"not a Kinesis Video stream name: {source.stream_name!r}")
    if source.fragment_number < 0:
        raise ValueError(f"negative fragment number {source.fragment_number}")
    if source.origin is not None:
        return {"File": _file_information(source)}
    if not STREAM_ARN.fullmatch(source.stream_arn):
        raise ValueError(f"not a Kinesis Video stream ARN: {source.stream_arn!r}")
    return {"KinesisVideo": {
        "StreamArn": source.stream_arn,
        "StreamName": source.stream_name,
        "FragmentNumber": str(source.fragment_number),
        "ServerTimestamp": _num(source.server_timestamp, TIME_DIGITS, "ServerTimestamp"),
        "ProducerTimestamp": _num(source.producer_timestamp, TIME_DIGITS, "ProducerTimestamp"),
        "FrameOffsetInSeconds": _num(source.frame_offset, TIME_DIGITS, "FrameOffsetInSeconds"),
        "FrameIndex": source.frame_index,
    }}


def _file_information(source: FrameSource) -> dict[str, Any]:
    origin = source.origin
    return {
        "Path": origin.path,
        "Sha256": origin.sha256,
        "VideoId": source.stream_name,
        "FragmentNumber": str(source.fragment_number),
        "ProducerTimestamp": _num(source.producer_timestamp, TIME_DIGITS, "ProducerTimestamp"),
        "FrameOffsetInSeconds": _num(source.frame_offset, TIME_DIGITS, "FrameOffsetInSeconds"),
        "FrameIndex": source.frame_index,
        "OffsetInFileSeconds": _num(max(0.0, source.producer_time - origin.start), TIME_DIGITS,
                                    "OffsetInFileSeconds"),
    }


def encode_record(record: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: no spaces, no NaN/Infinity (they are not JSON)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def load_schema() -> dict[str, Any]:
    """The record's JSON Schema (draft 2020-12)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _person(person: Person) -> dict[str, Any]:
    left, top, right, bottom = person.bbox
    out: dict[str, Any] = {
        "BoundingBox": {
            "Left": _num(left, COORDINATE_DIGITS, "BoundingBox"),
            "Top": _num(top, COORDINATE_DIGITS, "BoundingBox"),
            # A detector may return a degenerate box; Rekognition's widths are never negative.
            "Width": _num(max(0.0, right - left), COORDINATE_DIGITS, "BoundingBox"),
            "Height": _num(max(0.0, bottom - top), COORDINATE_DIGITS, "BoundingBox"),
        },
        "Confidence": _num(min(1.0, max(0.0, person.confidence)) * 100, PERCENT_DIGITS,
                           "Confidence"),
        "TrackId": person.track_id,
        "Landmarks": [],
    }
    if person.landmarks:
        names = _NAMES_BY_COUNT.get(len(person.landmarks))
        if names is None:
            raise ValueError(f"{len(person.landmarks)} landmarks: expected 33 (MediaPipe) "
                             "or 17 (COCO)")
        out["Landmarks"] = [
            {"Type": name,
             "X": _num(lm.x, COORDINATE_DIGITS, name), "Y": _num(lm.y, COORDINATE_DIGITS, name),
             "Z": _num(lm.z, COORDINATE_DIGITS, name),
             "Visibility": _num(lm.visibility, SCORE_DIGITS, name),
             "Presence": _num(lm.presence, SCORE_DIGITS, name)}
            for name, lm in zip(names, person.landmarks)]
    return out


def _hand(hand, persons: Sequence[Person]) -> dict[str, Any]:
    """A processors.hands.Hand."""
    from processors.hands import HAND_LANDMARK_NAMES
    return {
        "Handedness": hand.handedness,
        "Confidence": _num(min(1.0, max(0.0, hand.score)) * 100, PERCENT_DIGITS, "Confidence"),
        "PersonIndex": hand.person,
        "TrackId": persons[hand.person].track_id if hand.person is not None else None,
        "Landmarks": [{"Type": name, "X": _num(x, COORDINATE_DIGITS, name),
                       "Y": _num(y, COORDINATE_DIGITS, name),
                       "Z": _num(z, COORDINATE_DIGITS, name)}
                      for name, (x, y, z) in zip(HAND_LANDMARK_NAMES, hand.landmarks)],
    }


def _location(frame: Mapping[str, Any]) -> dict[str, Any]:
    """An S3 object {"Bucket", "Key"}, or a file in a batch's output folder {"Path"}."""
    out: dict[str, Any] = ({"Path": str(frame["Path"])} if "Path" in frame
                           else {"Bucket": str(frame["Bucket"]), "Key": str(frame["Key"])})
    if "Annotated" in frame:
        out["Annotated"] = bool(frame["Annotated"])
    return out


def _num(value: float, digits: int, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what}: {value} is not a finite number")
    return round(value, digits)
