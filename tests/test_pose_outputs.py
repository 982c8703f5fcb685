"""The pose-derived outputs: JPEG (raw and annotated) and Parquet pose sequences."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from consumer.annotate import POINT_COLOUR, annotated_jpeg, draw_persons, encode_jpeg
from consumer.config import Pose
from consumer.pose_sequence import UNIT_SCALE, XYZ_SCALE, pose_sequence_parquet, read_pose_sequence
from processors.base import FrameResult, Landmark, Person
from processors.pose import PoseProcessor
from tests.conftest import _require
from tests.pose_helpers import (
    CLOSE_UP,
    FRAGMENT,
    ON_STAGE,
    POSE_MODEL,
    decode_frames,
    source,
    video_frame,
)


@pytest.fixture(scope="module")
def analysed(models, captures):
    """(frame, result) for the close-up, the wide shot and a blank frame, from the real model."""
    model = _require(models / POSE_MODEL, f"model {POSE_MODEL}")
    images = decode_frames(_require(captures / "vogels_330.mkv", "capture vogels_330.mkv"),
                           [ON_STAGE, CLOSE_UP])
    frames = [video_frame(images[CLOSE_UP], index=0), video_frame(images[ON_STAGE], index=1),
              video_frame(np.zeros((330, 640, 3), np.uint8), index=2)]
    with PoseProcessor(Pose(models_dir=model.parent)) as pose:
        results = pose.process(frames)
    assert [len(r.persons) for r in results] == [1, 1, 0]
    return list(zip(frames, results))


def decode(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return np.asarray(image.convert("RGB"), np.int16)


def synthetic_person(track_id: int | None = None, visible: float = 1.0) -> Person:
    marks = tuple(Landmark(0.3 + 0.01 * i, 0.2 + 0.02 * i, -0.1 + 0.005 * i, visible, 0.9)
                  for i in range(33))
    return Person((0.3, 0.2, 0.62, 0.84), 0.9, marks, track_id)


# --- JPEG ----------------------------------------------------------------------------------------

def test_raw_jpeg_decodes_to_the_frame(analysed):
    frame = analysed[0][0]
    pixels = decode(encode_jpeg(frame.image, 90))
    assert pixels.shape == frame.image.shape
    assert np.abs(pixels - frame.image).mean() < 4
    assert len(encode_jpeg(frame.image, 30)) < len(encode_jpeg(frame.image, 90))


def test_annotated_jpeg_differs_where_the_skeleton_is(analysed):
    frame, result = analysed[0]
    before = frame.image.copy()
    raw = decode(encode_jpeg(frame.image))
    drawn = decode(annotated_jpeg(frame.image, result.persons))
    assert np.array_equal(frame.image, before)  # the frame itself is untouched
    assert drawn.shape == raw.shape == frame.image.shape
    diff = np.abs(drawn - raw).max(axis=2)
    height, width = diff.shape
    left, top, right, bottom = (round(v * n) for v, n in
                                zip(result.persons[0].bbox, (width, height, width, height)))
    inside = diff[top:bottom + 1, left:right + 1]
    outside = diff.copy()
    margin = 12  # joint radius and JPEG ringing (8x8 blocks)
    outside[max(0, top - margin):bottom + margin + 1, max(0, left - margin):right + margin + 1] = 0
    assert (inside > 60).sum() > 500  # bones, joints and the box
    assert (outside > 60).sum() == 0  # nothing drawn away from the person


def test_draw_marks_visible_landmarks_only():
    image = np.zeros((200, 400, 3), np.uint8)
    seen = draw_persons(image, [synthetic_person()])
    mark = synthetic_person().landmarks[16]
    assert tuple(seen[round(mark.y * 200), round(mark.x * 400)]) == POINT_COLOUR
    hidden = draw_persons(image, [synthetic_person(visible=0.1)])
    assert tuple(hidden[round(mark.y * 200), round(mark.x * 400)]) == (0, 0, 0)
    assert hidden.any()  # the box is still drawn
    assert not image.any()


def test_jpeg_rejects_a_non_rgb_array():
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        encode_jpeg(np.zeros((10, 10), np.uint8))


# --- Parquet pose sequences ----------------------------------------------------------------------

def test_round_trip_of_real_poses_is_within_the_step(analysed):
    items = [(frame.source, result) for frame, result in analysed]
    data = pose_sequence_parquet(items, metadata={"model": POSE_MODEL})
    assert data[:4] == b"PAR1" == data[-4:]
    back = read_pose_sequence(data)
    assert back.table.num_rows == 3
    for row, (_, result) in enumerate(items[:2]):
        truth = np.array([(m.x, m.y, m.z, m.visibility, m.presence)
                          for m in result.persons[0].landmarks])
        error = np.abs(back.landmarks[row] - truth)
        assert error[:, :3].max() <= 0.5 / XYZ_SCALE + 1e-6
        assert error[:, 3:].max() <= 0.5 / UNIT_SCALE + 1e-6
        assert np.abs(back.bbox[row] - result.persons[0].bbox).max() <= 0.5 / XYZ_SCALE + 1e-6
    assert back.metadata["kvsa.pose.xyz_scale"] == str(XYZ_SCALE)
    assert back.metadata["kvsa.pose.unit_scale"] == str(UNIT_SCALE)
    assert back.metadata["model"] == POSE_MODEL


def test_provenance_columns_and_the_no_person_frame(analysed):
    items = [(frame.source, result) for frame, result in analysed]
    rows = read_pose_sequence(pose_sequence_parquet(items)).table.to_pylist()
    assert [r["frame_index"] for r in rows] == [0, 1, 2]
    assert [r["person_index"] for r in rows] == [0, 0, -1]
    assert all(r["fragment_number"] == str(FRAGMENT) for r in rows)
    assert int(rows[0]["fragment_number"]) == FRAGMENT and len(rows[0]["fragment_number"]) == 47
    first = items[1][0]
    assert rows[1]["stream_arn"] == first.stream_arn
    assert rows[1]["frame_offset"] == first.frame_offset
    assert rows[1]["producer_time"].timestamp() == pytest.approx(first.producer_time, abs=5e-4)
    assert rows[1]["server_timestamp"].timestamp() == first.server_timestamp
    empty = rows[2]
    assert [empty[k] for k in ("track_id", "confidence", "bbox", "x", "visibility")] == [None] * 5
    back = read_pose_sequence(pose_sequence_parquet(items))
    assert np.isnan(back.landmarks[2]).all() and np.isnan(back.bbox[2]).all()


def test_several_persons_keep_their_order_and_tracks():
    items = [(source(index=0), FrameResult((synthetic_person(7), synthetic_person(None)))),
             (source(index=1), FrameResult())]
    table = read_pose_sequence(pose_sequence_parquet(items)).table
    assert table.column("person_index").to_pylist() == [0, 1, -1]
    assert table.column("track_id").to_pylist() == [7, None, None]
    assert table.column("x").to_pylist()[0][:2] == [round(0.30 * XYZ_SCALE),
                                                  round(0.31 * XYZ_SCALE)]


def test_coordinates_outside_the_range_saturate():
    far = Person((0, 0, 1, 1), 0.5, tuple(Landmark(5.0, -5.0, 0.0, 1.0, 1.0) for _ in range(33)))
    back = read_pose_sequence(pose_sequence_parquet([(source(), FrameResult((far,)))]))
    assert back.landmarks[0, 0, 0] == pytest.approx(32767 / XYZ_SCALE)
    assert back.landmarks[0, 0, 1] == pytest.approx(-4.0)


def test_an_empty_sequence_is_a_valid_file():
    back = read_pose_sequence(pose_sequence_parquet([]))
    assert back.table.num_rows == 0 and back.landmarks.shape == (0, 33, 5)


def test_wrong_landmark_count_is_refused():
    person = Person((0, 0, 1, 1), 0.5, synthetic_person().landmarks[:17])
    with pytest.raises(ValueError, match="17 landmarks"):
        pose_sequence_parquet([(source(), FrameResult((person,)))])


def test_plain_parquet_readers_see_sql_friendly_types(analysed):
    items = [(frame.source, result) for frame, result in analysed]
    schema = pq.read_schema(io.BytesIO(pose_sequence_parquet(items)))
    assert str(schema.field("fragment_number").type) == "string"
    assert str(schema.field("x").type) == "list<element: int16>"
    assert str(schema.field("producer_time").type) == "timestamp[ms, tz=UTC]"


def test_duckdb_reads_the_file_directly(analysed, tmp_path):
    duckdb = pytest.importorskip("duckdb", reason="optional check: pip install duckdb")
    items = [(frame.source, result) for frame, result in analysed]
    path = tmp_path / "poses.parquet"
    path.write_bytes(pose_sequence_parquet(items))
    rows = duckdb.sql(
        f"SELECT frame_index, person_index, fragment_number, x[1] / {XYZ_SCALE}.0 AS nose_x, "
        f"visibility[1] / {UNIT_SCALE}.0 AS nose_visibility FROM '{path}' ORDER BY frame_index"
    ).fetchall()
    nose = analysed[0][1].persons[0].landmarks[0]
    assert [r[:3] for r in rows] == [(0, 0, str(FRAGMENT)), (1, 0, str(FRAGMENT)),
                                     (2, -1, str(FRAGMENT))]
    assert rows[0][3] == pytest.approx(nose.x, abs=0.5 / XYZ_SCALE)
    assert rows[0][4] == pytest.approx(nose.visibility, abs=0.5 / UNIT_SCALE)
    assert rows[2][3] is None
