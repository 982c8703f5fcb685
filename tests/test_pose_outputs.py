"""The pose-derived outputs: JPEG (raw and annotated) and Parquet pose sequences."""

from __future__ import annotations

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from consumer.config import Pose
from consumer.formats.annotate import (
    BONE_COLOUR,
    COCO_CONNECTIONS,
    POINT_COLOUR,
    annotated_jpeg,
    draw_persons,
    encode_jpeg,
)
from consumer.formats.pose_sequence import (
    LANDMARK_SET,
    UNIT_SCALE,
    XYZ_SCALE,
    landmark_set_of,
    merge_pose_tables,
    pose_sequence_parquet,
    pose_sequence_table,
    read_pose_sequence,
    write_pose_table,
)
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


def synthetic_person(track_id: int | None = None, visible: float = 1.0,
                     count: int = 33) -> Person:
    marks = tuple(Landmark(0.3 + 0.01 * i, 0.2 + 0.02 * i, -0.1 + 0.005 * i, visible, 0.9)
                  for i in range(count))
    return Person((0.3, 0.2, 0.62, 0.84), 0.9, marks, track_id)


def coco_person_on_a_circle() -> Person:
    """17 landmarks spread on a circle (no three in line), the box out of the way."""
    angles = np.linspace(0, 2 * np.pi, 17, endpoint=False) + 0.1
    marks = tuple(Landmark(0.5 + 0.4 * np.cos(a), 0.5 + 0.4 * np.sin(a), 0.0, 0.9, 0.9)
                  for a in angles)
    return Person((0.0, 0.0, 0.01, 0.01), 0.8, marks)


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


def test_a_17_landmark_person_gets_the_coco_skeleton():
    image = np.zeros((400, 400, 3), np.uint8)
    person = coco_person_on_a_circle()
    drawn = draw_persons(image, [person])

    def bone(start: int, end: int) -> bool:
        """A bone-coloured pixel within a pixel of the middle of start-end."""
        a, b = person.landmarks[start], person.landmarks[end]
        y, x = round((a.y + b.y) / 2 * 400), round((a.x + b.x) / 2 * 400)
        return bool((drawn[y - 1:y + 2, x - 1:x + 2] == BONE_COLOUR).all(axis=2).any())
    assert all(bone(*pair) for pair in COCO_CONNECTIONS)
    # MediaPipe's bones between the same indices are not COCO's: (0, 4) inner eye, (9, 10) mouth
    assert not bone(0, 4) and not bone(9, 10)
    assert all(tuple(drawn[round(m.y * 400), round(m.x * 400)]) == POINT_COLOUR
               for m in person.landmarks)


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


def test_coco_17_sequences_round_trip_with_their_set_in_the_metadata():
    persons = (synthetic_person(3, count=17), synthetic_person(None, count=17))
    items = [(source(index=0), FrameResult(persons)), (source(index=1), FrameResult())]
    data = pose_sequence_parquet(items, metadata={"model": "yolov8n-pose.pt"},
                                 landmark_set="coco-17")
    back = read_pose_sequence(data)
    assert back.metadata["kvsa.pose.landmarks"] == "coco-17"
    assert back.metadata["model"] == "yolov8n-pose.pt"
    assert back.landmarks.shape == (3, 17, 5)
    truth = np.array([(m.x, m.y, m.z, m.visibility, m.presence) for m in persons[0].landmarks])
    assert np.abs(back.landmarks[0, :, :3] - truth[:, :3]).max() <= 0.5 / XYZ_SCALE + 1e-6
    assert np.abs(back.landmarks[0, :, 3:] - truth[:, 3:]).max() <= 0.5 / UNIT_SCALE + 1e-6
    assert np.isnan(back.landmarks[2]).all()
    assert [len(v) for v in back.table.column("x").to_pylist()[:2]] == [17, 17]
    # a table of coco-17 rows says so when written without naming its set, and merges as such
    table = pose_sequence_table(items, "coco-17")
    again = read_pose_sequence(write_pose_table(table))
    assert again.metadata["kvsa.pose.landmarks"] == "coco-17"
    later = pose_sequence_table([(source(index=2, fragment=7), FrameResult(persons[:1]))],
                                "coco-17")
    merged = merge_pose_tables(data, later, replaced={"7"})
    assert merged.num_rows == 4 and merged.schema.field("x").type.list_size == 17


def test_the_default_set_is_mediapipe_and_processors_name_theirs():
    back = read_pose_sequence(pose_sequence_parquet([(source(), FrameResult())]))
    assert back.metadata["kvsa.pose.landmarks"] == LANDMARK_SET == "mediapipe-pose-33"
    assert landmark_set_of(PoseProcessor) == "mediapipe-pose-33"
    assert landmark_set_of(object()) == "mediapipe-pose-33"  # a processor predating the field


def test_a_processor_without_landmarks_has_no_pose_sequence():
    with pytest.raises(ValueError, match="no landmarks"):
        pose_sequence_parquet([(source(), FrameResult())], landmark_set="")
    with pytest.raises(ValueError, match="unknown landmark set 'hands-21'"):
        pose_sequence_parquet([(source(), FrameResult())], landmark_set="hands-21")
    with pytest.raises(ValueError, match="33 landmarks, expected 17"):
        pose_sequence_parquet([(source(), FrameResult((synthetic_person(),)))],
                              landmark_set="coco-17")


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
