"""Hands in the outputs, with the real models on the real capture vogels_330.mkv: the pose
sequence's hand columns (left_hand_x/y/z/score, right_hand_...: each person's hands, int16 like
the body's landmarks, null where a hand was not found), a file without hands keeping format 1's
columns exactly, windows that gather rows with and without hands, the hands drawn on the
annotated JPEG, and batch mode with processing.hands on: the speaker's hands in his close-ups,
in the pose files as in the records' "Hands".
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from consumer.config import Pose
from consumer.formats import s3_layout
from consumer.formats.annotate import (
    HAND_BONE_COLOUR,
    HAND_POINT_COLOUR,
    annotated_jpeg,
    draw_persons,
    encode_jpeg,
)
from consumer.formats.pose_sequence import (
    HAND_COLUMNS,
    HAND_SET,
    UNIT_SCALE,
    XYZ_SCALE,
    merge_pose_tables,
    pose_sequence_parquet,
    pose_sequence_table,
    read_pose_sequence,
)
from consumer.lake.views import open_lake
from consumer.pipeline.ledger import FragmentLedger
from consumer.pipeline.pose_windows import PoseWindows
from consumer.sinks.s3 import S3ObjectWriter
from infra.local.stack import LocalStack
from kvs_analytics import BatchPipeline, batch_config
from processors.base import FrameResult, Landmark, Person
from processors.extras import WithFacesAndHands
from processors.frames import FrameSource
from processors.hands import HAND_CONNECTIONS, Hand, HandAnalyzer
from processors.pose import PoseProcessor
from tests.batch_helpers import write_config
from tests.conftest import _require
from tests.pose_helpers import ON_STAGE, POSE_MODEL, decode_frames, source, video_frame

TWO_HANDS = (615, 660)  # close-ups with both the speaker's hands in view (test_faces_hands)
STEP = 0.5 / XYZ_SCALE + 1e-6  # the int16 step's rounding error
SCORE_STEP = 0.5 / UNIT_SCALE + 1e-6
# format 1 (before hands): the columns and their types, as a plain Parquet reader sees them
FORMAT_1 = [
    ("stream_name", "string"), ("stream_arn", "string"), ("fragment_number", "string"),
    ("frame_index", "int32"), ("frame_offset", "double"),
    ("producer_time", "timestamp[ms, tz=UTC]"), ("server_timestamp", "timestamp[ms, tz=UTC]"),
    ("person_index", "int16"), ("track_id", "int64"), ("confidence", "float"),
    ("bbox", "struct<left: int16, top: int16, right: int16, bottom: int16>"),
    *((name, "list<element: int16>") for name in ("x", "y", "z", "visibility", "presence"))]
OLD = [name for name, _ in FORMAT_1]


@pytest.fixture(scope="module")
def analysed(models, captures):
    """(frame, result) from the real pose and hand models: two close-ups with both hands, the
    wide shot (the speaker small on the stage) and a blank frame."""
    _require(models / POSE_MODEL, f"model {POSE_MODEL}")
    images = decode_frames(_require(captures / "vogels_330.mkv", "capture vogels_330.mkv"),
                           [*TWO_HANDS, ON_STAGE])
    frames = [video_frame(images[index], index=n) for n, index in enumerate(TWO_HANDS)]
    frames += [video_frame(images[ON_STAGE], index=2),
               video_frame(np.zeros((330, 640, 3), np.uint8), index=3)]
    processor = WithFacesAndHands(PoseProcessor(Pose(models_dir=models)),
                                  hands=HandAnalyzer(models))
    try:
        results = processor.process(frames)
    finally:
        processor.close()
    for result in results[:2]:
        assert len(result.persons) == 1
        assert sorted((h.handedness, h.person) for h in result.hands) == [("Left", 0),
                                                                          ("Right", 0)]
    assert not results[3].persons and not results[3].hands
    return list(zip(frames, results))


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)


def hand(x: float, y: float, side: str = "Left", score: float = 0.9,
         person: int | None = 0) -> Hand:
    """A synthetic hand: 21 points on a small fan from (x, y)."""
    return Hand(tuple((x + 0.004 * i, y - 0.003 * i, -0.001 * i) for i in range(21)), side,
                score, person)


def person(track_id: int | None = None) -> Person:
    marks = tuple(Landmark(0.3 + 0.01 * i, 0.2 + 0.02 * i, 0.0, 1.0, 0.9) for i in range(33))
    return Person((0.3, 0.2, 0.62, 0.84), 0.9, marks, track_id)


# --- Parquet pose sequences ----------------------------------------------------------------------

def test_hands_round_trip_within_the_step_in_their_persons_rows(analysed):
    items = [(frame.source, result) for frame, result in analysed]
    data = pose_sequence_parquet(items)
    back = read_pose_sequence(data)
    assert back.metadata["kvsa.pose.format"] == "2"
    assert back.metadata["kvsa.pose.hands"] == HAND_SET == "mediapipe-hand-21"
    schema = pq.read_schema(io.BytesIO(data))
    assert [(f.name, str(f.type)) for f in schema][:len(FORMAT_1)] == FORMAT_1
    assert [(f.name, str(f.type)) for f in schema][len(FORMAT_1):] == [
        (name, "int16" if name.endswith("score") else "list<element: int16>")
        for name in HAND_COLUMNS]
    assert back.hands.shape == (4, 2, 21, 3) and back.hand_scores.shape == (4, 2)
    rows = back.table.to_pylist()
    for row, (_, result) in enumerate(items[:2]):  # one person a frame: row = frame
        for found in result.hands:
            side = ("Left", "Right").index(found.handedness)
            assert np.abs(back.hands[row, side] - np.array(found.landmarks)).max() <= STEP
            assert abs(back.hand_scores[row, side] - found.score) <= SCORE_STEP
            name = f"{found.handedness.lower()}_hand"
            assert len(rows[row][f"{name}_x"]) == 21
            assert rows[row][f"{name}_x"][0] == round(found.landmarks[0][0] * XYZ_SCALE)
    # the wide shot's speaker has no hand found; the blank frame's row has no person
    assert [rows[2]["person_index"], rows[3]["person_index"]] == [0, -1]
    assert not items[2][1].hands
    for row in (2, 3):
        assert all(rows[row][name] is None for name in HAND_COLUMNS)
        assert np.isnan(back.hands[row]).all() and np.isnan(back.hand_scores[row]).all()
    # the old columns are what a file without hands holds, value for value
    without = read_pose_sequence(pose_sequence_parquet(items, hands=False))
    assert back.table.select(OLD).equals(without.table)
    assert np.array_equal(back.landmarks, without.landmarks, equal_nan=True)


def test_a_file_without_hands_has_format_1s_columns_exactly(analysed):
    items = [(frame.source, result) for frame, result in analysed[2:]]  # no hand in these
    data = pose_sequence_parquet(items)
    schema = pq.read_schema(io.BytesIO(data))
    assert [(f.name, str(f.type)) for f in schema] == FORMAT_1
    back = read_pose_sequence(data)
    assert back.hands is None and back.hand_scores is None
    assert "kvsa.pose.hands" not in back.metadata
    # asked for, the columns are there, and null
    forced = read_pose_sequence(pose_sequence_parquet(items, hands=True))
    assert forced.table.column_names == OLD + list(HAND_COLUMNS)
    assert all(forced.table.column(name).null_count == 2 for name in HAND_COLUMNS)
    assert forced.table.select(OLD).equals(back.table)


def test_a_hand_held_by_no_one_has_no_row_and_the_better_of_two_alike_is_kept():
    left, better, worse = hand(0.4, 0.5), hand(0.5, 0.5, "Right", 0.95), hand(0.6, 0.5,
                                                                                  "Right", 0.6)
    loose = hand(0.9, 0.9, "Right", 0.99, person=None)
    second = hand(0.2, 0.3, "Left", 0.7, person=1)
    result = FrameResult((person(1), person(2)), hands=(worse, left, loose, better, second))
    back = read_pose_sequence(pose_sequence_parquet([(source(), result)]))
    assert back.table.column("person_index").to_pylist() == [0, 1]
    assert np.abs(back.hands[0, 0] - np.array(left.landmarks)).max() <= STEP
    assert np.abs(back.hands[0, 1] - np.array(better.landmarks)).max() <= STEP
    assert np.abs(back.hands[1, 0] - np.array(second.landmarks)).max() <= STEP
    assert np.isnan(back.hands[1, 1]).all()
    assert back.hand_scores[0, 1] == pytest.approx(0.95, abs=SCORE_STEP)
    # a frame whose only hand is held by no one: the columns (null), the hand in the record only
    alone = read_pose_sequence(pose_sequence_parquet(
        [(source(), FrameResult((person(),), hands=(loose,)))]))
    assert alone.hands is not None and np.isnan(alone.hands).all()


def test_a_hand_without_21_landmarks_is_refused():
    bad = Hand(((0.5, 0.5, 0.0),) * 5, "Left", 0.9, 0)
    with pytest.raises(ValueError, match="5 landmarks, expected 21"):
        pose_sequence_parquet([(source(), FrameResult((person(),), hands=(bad,)))])


def test_merging_files_with_and_without_hands_keeps_every_row(analysed):
    with_hands = [(frame.source, result) for frame, result in analysed[:2]]
    plain = [(source(index=5, fragment=7), FrameResult((person(3),)))]
    # an earlier file without hands, new rows with them: old rows get null hand columns
    merged = merge_pose_tables(pose_sequence_parquet(plain), pose_sequence_table(with_hands),
                               replaced={str(with_hands[0][0].fragment_number)})
    assert merged.num_rows == 3 and merged.column_names == OLD + list(HAND_COLUMNS)
    assert merged.column("left_hand_x").to_pylist()[0] is None
    assert len(merged.column("left_hand_x").to_pylist()[1]) == 21
    # an earlier file with hands, new rows without: the file keeps its hand columns
    merged = merge_pose_tables(pose_sequence_parquet(with_hands), pose_sequence_table(plain),
                               replaced={"7"})
    assert merged.num_rows == 3 and merged.column("right_hand_score").null_count == 1


@pytest.fixture(scope="module")
def s3():
    with LocalStack() as stack:
        client = stack.client("s3")
        client.create_bucket(Bucket="poses")
        yield client


def test_a_window_restarted_with_hands_merges_the_earlier_rows(s3, analysed):
    """A consumer wrote a window before hands were turned on; after a restart, rows with hands
    join it: one file, every fragment's rows, nulls where no hand was found."""
    arn = "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1"

    def fetch(key):
        try:
            return s3.get_object(Bucket="poses", Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None

    def run(fragment: int, results: list[FrameResult]) -> None:
        writer = S3ObjectWriter(s3, "poses", concurrency=2)
        windows = PoseWindows(10.0, "", writer, fetch, {"model": "test"})
        ledger = FragmentLedger(arn, lambda ticket: None, windows.add)
        ticket = ledger.begin(fragment)
        for index, result in enumerate(results):
            ticket.frame_queued()
            ticket.frame_analysed(FrameSource("cam", arn, fragment, 4000.0, 4000.0, index / 10,
                                              index), result)
        ticket.seal()
        windows.flush_all()
        assert writer.close(10)

    run(1, [FrameResult((person(1),))] * 2)
    run(2, [result for _, result in analysed[:2]])
    key = s3_layout.pose_window_key("", "cam", 4000.0, 10.0)
    back = read_pose_sequence(s3.get_object(Bucket="poses", Key=key)["Body"].read())
    assert back.table.column("fragment_number").to_pylist() == ["1", "1", "2", "2"]
    assert np.isnan(back.hands[:2]).all()
    assert not np.isnan(back.hands[2:]).any()  # both hands of the speaker in both close-ups


def test_the_lake_reads_files_with_and_without_hands_together(analysed, tmp_path):
    folder = tmp_path / "poses" / "stream=cam-a" / "date=2023-11-14"
    folder.mkdir(parents=True)
    items = [(frame.source, result) for frame, result in analysed]
    (folder / "1.parquet").write_bytes(pose_sequence_parquet(items[2:]))  # no hands
    (folder / "2.parquet").write_bytes(pose_sequence_parquet(items[:2]))
    con = open_lake(tmp_path)
    try:
        rows, with_left, with_right, wrist = con.execute(
            f"SELECT count(*), count(left_hand_x), count(right_hand_score), "
            f"max(left_hand_x[1]) / {XYZ_SCALE}.0 FROM poses").fetchone()
    finally:
        con.close()
    assert (rows, with_left, with_right) == (4, 2, 2)
    wrists = [h.landmarks[0][0] for _, r in items[:2] for h in r.hands if h.handedness == "Left"]
    assert wrist == pytest.approx(max(wrists), abs=STEP)


# --- annotated JPEGs -----------------------------------------------------------------------------

def test_the_annotated_jpeg_has_the_hands_drawn(analysed):
    frame, result = analysed[1]
    before = frame.image.copy()
    body = decode(annotated_jpeg(frame.image, result.persons))
    both = decode(annotated_jpeg(frame.image, result.persons, hands=result.hands))
    assert np.array_equal(frame.image, before)  # the frame itself is untouched
    diff = np.abs(both - body).max(axis=2)
    height, width = diff.shape
    near = np.zeros_like(diff, bool)
    margin = 10  # point radius and JPEG ringing
    for found in result.hands:
        points = [(x * width, y * height) for x, y, _ in found.landmarks]
        for start, end in HAND_CONNECTIONS:  # each bone's middle changed
            x = round((points[start][0] + points[end][0]) / 2)
            y = round((points[start][1] + points[end][1]) / 2)
            assert diff[max(0, y - 1):y + 2, max(0, x - 1):x + 2].max() > 60, (start, end)
        xs, ys = zip(*points)
        near[max(0, round(min(ys)) - margin):round(max(ys)) + margin + 1,
             max(0, round(min(xs)) - margin):round(max(xs)) + margin + 1] = True
    assert (diff[~near] > 60).sum() == 0  # nothing drawn away from the hands
    # without persons, the hands alone are drawn on the frame
    alone = decode(annotated_jpeg(frame.image, (), hands=result.hands))
    raw = decode(encode_jpeg(frame.image))
    assert (np.abs(alone - raw).max(axis=2)[near] > 60).sum() > 200


def test_hand_points_and_bones_have_their_colours():
    image = np.zeros((400, 400, 3), np.uint8)
    found = Hand(tuple((0.5 + 0.3 * np.cos(a), 0.5 + 0.3 * np.sin(a), 0.0)
                       for a in np.linspace(0, 2 * np.pi, 21, endpoint=False) + 0.1),
                 "Right", 0.9)
    drawn = draw_persons(image, (), hands=(found,))
    for start, end in HAND_CONNECTIONS:
        (ax, ay, _), (bx, by, _) = found.landmarks[start], found.landmarks[end]
        y, x = round((ay + by) / 2 * 400), round((ax + bx) / 2 * 400)
        assert (drawn[y - 1:y + 2, x - 1:x + 2] == HAND_BONE_COLOUR).all(axis=2).any()
    assert all(tuple(drawn[round(y * 400), round(x * 400)]) == HAND_POINT_COLOUR
               for x, y, _ in found.landmarks)
    assert not draw_persons(image, ()).any() and not image.any()


# --- batch mode end to end -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def batch(models, captures, tmp_path_factory) -> Path:
    """Batch mode over the capture with processing.hands on (2 frames/s): its output folder."""
    _require(captures / "vogels_330.mkv", "capture vogels_330.mkv")
    tmp = tmp_path_factory.mktemp("hands")
    config_file = write_config(
        tmp / "batch.yaml",
        processing={"pose": {"models_dir": str(models), "download": False, "model": "full"},
                    "hands": {"enabled": True}})
    config = batch_config(config_file, fps=2, environ={})
    result = BatchPipeline(config, tmp / "out").run([captures / "vogels_330.mkv"])
    assert result.ok, result
    return tmp / "out"


def test_batch_pose_files_hold_the_speakers_hands_as_the_records_do(batch):
    records = [json.loads(line) for path in (batch / "records").rglob("records.jsonl")
               for line in path.read_text().splitlines()]
    frames = {(r["InputInformation"]["File"]["FragmentNumber"],
               r["InputInformation"]["File"]["FrameIndex"]): r
              for r in records if r["RecordType"] == "Frame"}
    [path] = (batch / "poses").rglob("*.parquet")
    back = read_pose_sequence(path.read_bytes())
    assert back.metadata["kvsa.pose.hands"] == HAND_SET and back.hands is not None
    rows = back.table.select(["fragment_number", "frame_index", "person_index"]).to_pylist()
    assert len({(r["fragment_number"], r["frame_index"]) for r in rows}) == len(frames)
    close_ups = with_hands = 0
    for number, row in enumerate(rows):
        record = frames[(row["fragment_number"], row["frame_index"])]
        file = record["InputInformation"]["File"]
        held = [h for h in record.get("Hands", []) if h["PersonIndex"] == row["person_index"]
                and row["person_index"] >= 0]
        if file["OffsetInFileSeconds"] >= 20.5 and row["person_index"] >= 0:
            close_ups += 1
            with_hands += not np.isnan(back.hand_scores[number]).all()
        for side, name in enumerate(("Left", "Right")):
            alike = [h for h in held if h["Handedness"] == name]
            if not alike:
                assert np.isnan(back.hands[number, side]).all(), (file, name)
                continue
            kept = max(alike, key=lambda h: h["Confidence"])
            truth = np.array([(p["X"], p["Y"], p["Z"]) for p in kept["Landmarks"]])
            # the record rounds to 4 digits, the file to 1/8192
            assert np.abs(back.hands[number, side] - truth).max() <= STEP + 0.5e-4, (file, name)
            assert abs(back.hand_scores[number, side] * 100 - kept["Confidence"]) <= 0.2 + 0.005
    assert close_ups >= 10, close_ups
    assert with_hands >= close_ups // 2, (with_hands, close_ups)


def test_batch_pose_files_read_in_the_lake_with_their_hands(batch):
    con = open_lake(batch)
    try:
        hands, = con.execute("SELECT count(left_hand_x) + count(right_hand_x) FROM poses "
                             "WHERE person_index >= 0").fetchone()
        names = [row[0] for row in con.execute("DESCRIBE poses").fetchall()]
    finally:
        con.close()
    assert hands > 0 and set(HAND_COLUMNS) <= set(names)
