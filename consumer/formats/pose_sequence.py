"""Pose sequences as Parquet: a file per fragment (or window), readable by Athena and DuckDB as is.

`pose_sequence_parquet(items)` turns a list of (FrameSource, FrameResult) into the bytes of one
Parquet file (zstd, one row group); `read_pose_sequence(data)` reads it back and dequantises.
Never pickle: the format is plain columns that any engine reads without running code.

Rows: one per person per frame, in the order given. A frame analysed with no person still gets one
row, with person_index -1 and null track_id, confidence, bbox and landmarks, so a reader knows the
frame was analysed and found nobody (count frames with `count(DISTINCT frame_index)`, persons with
`WHERE person_index >= 0`).

Columns:
  stream_name, stream_arn   string
  fragment_number           string: the ~47-digit decimal, beyond int64 (compare as integers)
  frame_index               int32, the frame's position among the fragment's video frames
  frame_offset              float64, seconds from the fragment's start
  producer_time             timestamp[ms, UTC], the frame's producer time
  server_timestamp          timestamp[ms, UTC], the fragment's server timestamp
  person_index              int16, position in the frame's result, -1 for a frame with no person
  track_id                  int64, null when untracked
  confidence                float32 (the processor's per-person score)
  bbox                      struct<left, top, right, bottom: int16>, quantised like x and y
  x, y, z                   list<int16> of 33, in MediaPipe's landmark order (LANDMARK_NAMES);
                            of 17 in COCO's keypoint order for the coco-17 landmark set
  visibility, presence      list<int16> of 33 (or 17)
  left_hand_x, _y, _z       list<int16> of 21, in MediaPipe's hand landmark order
  right_hand_x, _y, _z        (processors.hands.HAND_LANDMARK_NAMES), quantised like x, y, z;
                            null when that hand of that person was not found
  left_hand_score,          int16, the hand's handedness score (processors.hands.Hand.score),
  right_hand_score            quantised like visibility; null with the hand

Hands (format 2): the eight hand columns are in a file when a frame of it carries hands
(`FrameResult.hands`, processing.hands), or when `hands=True` asks for them; a file without them
has exactly format 1's columns. Parquet columns are matched by name, a missing one reading as
null: old readers, the DuckDB `poses` view (union_by_name) and Athena's `poses` table read files
of both formats; Athena sees the hand columns once its Glue table declares them. A hand
goes in the row of the person holding it (`Hand.person`), as that person's left or right hand
by its handedness ("Left": the person's own left hand, see processors.hands); of two hands of
one person with the same handedness the higher-scored one is kept. A hand held by no person
(`person` None) has no row to go in: it is in the frame's record ("Hands") only, as is any
hand a row does not keep. Metadata key `kvsa.pose.hands` names the hands' landmark set,
"mediapipe-hand-21", in a file with hand columns.

Landmark sets (LANDMARK_SETS, key `kvsa.pose.landmarks` in the file's metadata): the processor's
`landmark_set`, "mediapipe-pose-33" (PoseProcessor, the default) or "coco-17" (YOLO pose models,
z always 0). A processor whose `landmark_set` is "" finds no landmarks (a detection-only model):
it has no pose sequences, and building one for it raises ValueError.

Quantisation (also in the file's key-value metadata, keys `kvsa.pose.*`):
  x, y, z and bbox: value = stored / 8192 (XYZ_SCALE). x and y are fractions of the image width
    and height, so the step is 1/8192 of the image (1.2e-4, error at most 6.1e-5), well below
    MediaPipe's landmark precision (about 1e-3 of the image). int16 spans [-4, 4): landmarks of
    body parts outside the image (x, y beyond 0..1) fit; anything beyond saturates.
  visibility, presence: value = stored / 255 (UNIT_SCALE); error at most 0.002.
  In SQL: `x[1] / 8192.0` is the nose's x (Athena and DuckDB lists are 1-based).
Integer columns are signed because Athena has no unsigned types; Parquet stores every integer
narrower than 32 bits as INT32, bit-packed by its encoding, so int16 costs no more than int8.
Encodings are ones every Parquet reader knows (dictionary, DELTA_BINARY_PACKED for coordinates,
zstd); the Arrow schema is not embedded (it would add ~1.3 KB a file), so lists read back as
plain lists. A file has a fixed cost of ~3-4 KB (footer, page headers): group a few frames per
file and that dominates, hence a window of several fragments when sampling is sparse.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute  # pa.compute
import pyarrow.parquet as pq

from processors.base import FrameResult
from processors.frames import FrameSource

if TYPE_CHECKING:
    from processors.hands import Hand

LANDMARK_SET = "mediapipe-pose-33"  # the default: the order of processors.pose.LANDMARK_NAMES
LANDMARK_SETS = {"mediapipe-pose-33": 33, "coco-17": 17}  # name -> landmarks a person
NUM_LANDMARKS = LANDMARK_SETS[LANDMARK_SET]
XYZ_SCALE = 8192
UNIT_SCALE = 255
FORMAT_VERSION = "2"  # 2: the optional hand columns (a file without them is format 1's)
HAND_SET = "mediapipe-hand-21"  # processors.hands.HAND_LANDMARK_NAMES
HAND_LANDMARKS = 21
HAND_SIDES = ("left", "right")  # Hand.handedness "Left", "Right"
HAND_COLUMNS = tuple(f"{side}_hand_{part}" for side in HAND_SIDES
                     for part in ("x", "y", "z", "score"))
_I16 = np.iinfo(np.int16)
_BBOX = pa.struct([(name, pa.int16()) for name in ("left", "top", "right", "bottom")])
_TIME = pa.timestamp("ms", tz="UTC")
_COORDS = ("x", "y", "z", "visibility", "presence")


def landmark_count(landmark_set: str) -> int:
    """Landmarks a person in `landmark_set`; ValueError for "" (no landmarks) or an unknown set."""
    if not landmark_set:
        raise ValueError("the processor finds no landmarks (landmark_set is empty): "
                         "it has no pose sequences")
    try:
        return LANDMARK_SETS[landmark_set]
    except KeyError:
        raise ValueError(f"unknown landmark set {landmark_set!r}; expected one of "
                         f"{sorted(LANDMARK_SETS)}") from None


def landmark_set_of(processor) -> str:
    """A processor's `landmark_set` (MediaPipe's for one without the attribute); "" means it
    finds no landmarks, so it has no pose sequences."""
    return getattr(processor, "landmark_set", LANDMARK_SET)


def schema_for(landmark_set: str = LANDMARK_SET, hands: bool = False) -> pa.Schema:
    """The Arrow schema of a pose sequence of `landmark_set`, with the hand columns if `hands`."""
    marks = pa.list_(pa.int16(), landmark_count(landmark_set))
    hand = pa.list_(pa.int16(), HAND_LANDMARKS)
    return pa.schema([
        ("stream_name", pa.string()), ("stream_arn", pa.string()),
        ("fragment_number", pa.string()), ("frame_index", pa.int32()),
        ("frame_offset", pa.float64()), ("producer_time", _TIME), ("server_timestamp", _TIME),
        ("person_index", pa.int16()), ("track_id", pa.int64()), ("confidence", pa.float32()),
        ("bbox", _BBOX), *((name, marks) for name in _COORDS),
        *((name, pa.int16() if name.endswith("score") else hand)
          for name in (HAND_COLUMNS if hands else ())),
    ])


def has_hands(table: pa.Table | pa.Schema) -> bool:
    """Whether a pose table (or schema) has the hand columns."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    return HAND_COLUMNS[0] in schema.names


SCHEMA = schema_for(LANDMARK_SET)
_SETS_BY_COUNT = {count: name for name, count in LANDMARK_SETS.items()}
# Encodings every Parquet reader knows (no BYTE_STREAM_SPLIT on integers: too new for Athena).
_DICTIONARY = ["stream_name", "stream_arn", "fragment_number", "person_index",
               "visibility.list.element", "presence.list.element"]
_STATISTICS = ["stream_name", "stream_arn", "fragment_number", "frame_index", "producer_time",
               "server_timestamp", "person_index", "track_id", "confidence"]  # what queries filter
_DELTA = {name: "DELTA_BINARY_PACKED" for name in (
    "frame_index", "x.list.element", "y.list.element", "z.list.element",
    "bbox.left", "bbox.top", "bbox.right", "bbox.bottom",
    *(f"{name}.list.element" for name in HAND_COLUMNS if not name.endswith("score")))}


@dataclass(frozen=True)
class PoseSequence:
    """A pose sequence read back: the stored table and its dequantised arrays, row for row."""

    table: pa.Table  # as stored (quantised integers)
    landmarks: np.ndarray  # float32 (rows, 33 or 17, 5): x, y, z, visibility, presence; NaN if none
    bbox: np.ndarray  # float32 (rows, 4): left, top, right, bottom; NaN if no person
    metadata: dict[str, str]  # the file's key-value metadata
    # float32 (rows, 2, 21, 3): the person's left (0) and right (1) hand, x, y, z; NaN where
    # that hand was not found. None for a file without hand columns.
    hands: np.ndarray | None = None
    hand_scores: np.ndarray | None = None  # float32 (rows, 2), NaN where no hand; or None


def quantise_xyz(values: np.ndarray) -> np.ndarray:
    """Normalised coordinates to int16 steps of 1/XYZ_SCALE, saturating outside [-4, 4)."""
    return np.clip(np.rint(np.asarray(values, np.float64) * XYZ_SCALE), _I16.min, _I16.max
                   ).astype(np.int16)


def quantise_unit(values: np.ndarray) -> np.ndarray:
    """Scores in 0..1 to int16 steps of 1/UNIT_SCALE (0..255)."""
    return np.clip(np.rint(np.asarray(values, np.float64) * UNIT_SCALE), 0, UNIT_SCALE
                   ).astype(np.int16)


def pose_sequence_parquet(items: Sequence[tuple[FrameSource, FrameResult]], *,
                          metadata: Mapping[str, str] | None = None,
                          compression_level: int = 9, landmark_set: str = LANDMARK_SET,
                          hands: bool | None = None) -> bytes:
    """Parquet bytes for `items`, one row per person per frame (see the module docstring).

    `metadata` adds key-value pairs (e.g. model, model_version, frame width and height); persons
    must have the landmark set's count of landmarks (33 for mediapipe-pose-33, 17 for coco-17)
    or none (a person without landmarks keeps null landmark columns). `hands`: whether the file
    has the hand columns; None (the default): when any frame carries a hand. ValueError for an
    empty or unknown `landmark_set`, or a hand without 21 landmarks.
    """
    return write_pose_table(pose_sequence_table(items, landmark_set, hands), metadata=metadata,
                            compression_level=compression_level, landmark_set=landmark_set)


def write_pose_table(table: pa.Table, *, metadata: Mapping[str, str] | None = None,
                     compression_level: int = 9, landmark_set: str | None = None) -> bytes:
    """Parquet bytes for a table from pose_sequence_table or merge_pose_tables; `landmark_set`,
    recorded in the metadata, defaults to the one whose count the table's lists have."""
    if landmark_set is None:
        landmark_set = _SETS_BY_COUNT[table.schema.field("x").type.list_size]
    meta = {"kvsa.pose.format": FORMAT_VERSION, "kvsa.pose.xyz_scale": str(XYZ_SCALE),
            "kvsa.pose.unit_scale": str(UNIT_SCALE), "kvsa.pose.landmarks": landmark_set}
    if has_hands(table):
        meta["kvsa.pose.hands"] = HAND_SET
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    encodings = {k: v for k, v in _DELTA.items() if k.split(".")[0] in table.schema.names}
    out = io.BytesIO()
    with pq.ParquetWriter(out, table.schema, compression="zstd",
                          compression_level=compression_level, use_dictionary=_DICTIONARY,
                          column_encoding=encodings, write_statistics=_STATISTICS,
                          store_schema=False) as writer:
        writer.write_table(table, row_group_size=max(1, table.num_rows))
        writer.add_key_value_metadata(meta)
    return out.getvalue()


def merge_pose_tables(existing: bytes, table: pa.Table, replaced: set[str]) -> pa.Table:
    """`table` plus the rows of an existing file whose fragment_number is not in `replaced`:
    a window rewritten after a restart keeps what the earlier run wrote for other fragments.
    The old rows come first; with the hand columns when either has them (concat_pose_tables)."""
    old = pq.read_table(io.BytesIO(existing))
    keep = pa.compute.invert(pa.compute.is_in(old["fragment_number"],
                                              value_set=pa.array(sorted(replaced), pa.string())))
    return concat_pose_tables([old.filter(keep), table])


def concat_pose_tables(tables: Sequence[pa.Table]) -> pa.Table:
    """Pose tables of one landmark set as one table in pose_sequence_table's schema, with null
    hand columns added to those without them when any has them (a window gathering fragments
    before and after hands were found, or a file an earlier run wrote). At least one table must
    be as pose_sequence_table built it (its fixed-size lists name the set); the others may be
    read back from a file."""
    sizes = [t.schema.field("x").type.list_size for t in tables
             if isinstance(t.schema.field("x").type, pa.FixedSizeListType)]
    if not sizes:
        raise ValueError("concat_pose_tables: no table as pose_sequence_table builds it")
    schema = schema_for(_SETS_BY_COUNT[sizes[0]], any(has_hands(t) for t in tables))
    return pa.concat_tables([_with_columns(t, schema).cast(schema) for t in tables])


def _with_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with a null column for each of `schema`'s it lacks (the hand columns)."""
    for field in schema:
        if field.name not in table.schema.names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def pose_sequence_table(items: Sequence[tuple[FrameSource, FrameResult]],
                        landmark_set: str = LANDMARK_SET, hands: bool | None = None) -> pa.Table:
    """The quantised Arrow table that pose_sequence_parquet writes (`hands` as there)."""
    if hands is None:
        hands = any(result.hands for _, result in items)
    schema = schema_for(landmark_set, hands)
    count = landmark_count(landmark_set)
    rows: list[tuple[FrameSource, int]] = []
    persons = []
    held: list[dict[str, Hand]] = []  # per row: {side: Hand} of that person
    for source, result in items:
        if not result.persons:
            rows.append((source, -1))
            persons.append(None)
            held.append({})
        by_person = _hands_by_person(result) if hands else {}
        for index, person in enumerate(result.persons):
            rows.append((source, index))
            persons.append(person)
            held.append(by_person.get(index, {}))
    columns: dict[str, pa.Array] = {
        "stream_name": pa.array([s.stream_name for s, _ in rows], pa.string()),
        "stream_arn": pa.array([s.stream_arn for s, _ in rows], pa.string()),
        "fragment_number": pa.array([str(s.fragment_number) for s, _ in rows], pa.string()),
        "frame_index": pa.array([s.frame_index for s, _ in rows], pa.int32()),
        "frame_offset": pa.array([s.frame_offset for s, _ in rows], pa.float64()),
        "producer_time": pa.array([round(s.producer_time * 1000) for s, _ in rows], _TIME),
        "server_timestamp": pa.array([round(s.server_timestamp * 1000) for s, _ in rows], _TIME),
        "person_index": pa.array([i for _, i in rows], pa.int16()),
        "track_id": pa.array([p.track_id if p else None for p in persons], pa.int64()),
        "confidence": pa.array([p.confidence if p else None for p in persons], pa.float32()),
    }
    has_box = np.array([p is not None for p in persons], bool)
    boxes = quantise_xyz(np.array([p.bbox if p else (0.0,) * 4 for p in persons],
                                  np.float64).reshape(-1, 4))
    columns["bbox"] = pa.StructArray.from_arrays(
        [pa.array(boxes[:, k]) for k in range(4)], fields=list(_BBOX), mask=pa.array(~has_box))
    has_marks = np.array([bool(p and p.landmarks) for p in persons], bool)
    marks = np.zeros((len(persons), count, 5), np.float64)
    for row, person in enumerate(persons):
        if has_marks[row]:
            if len(person.landmarks) != count:
                raise ValueError(f"a person has {len(person.landmarks)} landmarks, expected "
                                 f"{count} ({landmark_set})")
            marks[row] = [(p.x, p.y, p.z, p.visibility, p.presence) for p in person.landmarks]
    for k, name in enumerate(_COORDS):
        quantise = quantise_xyz if k < 3 else quantise_unit
        flat = pa.array(quantise(marks[:, :, k]).ravel(), pa.int16())
        columns[name] = pa.FixedSizeListArray.from_arrays(flat, count, mask=pa.array(~has_marks))
    if hands:
        columns.update(_hand_columns(held))
    return pa.table(columns, schema=schema)


def _hands_by_person(result: FrameResult) -> dict[int, dict[str, Hand]]:
    """Person index -> {"left"/"right": its Hand}: the higher-scored of a person's hands of one
    handedness; hands held by no person (or of an unknown handedness) have no place."""
    out: dict[int, dict[str, Hand]] = {}
    for hand in result.hands:
        side = str(hand.handedness).lower()
        if hand.person is None or side not in HAND_SIDES or not (
                0 <= hand.person < len(result.persons)):
            continue
        if len(hand.landmarks) != HAND_LANDMARKS:
            raise ValueError(f"a hand has {len(hand.landmarks)} landmarks, expected "
                             f"{HAND_LANDMARKS}")
        kept = out.setdefault(hand.person, {}).get(side)
        if kept is None or hand.score > kept.score:
            out[hand.person][side] = hand
    return out


def _hand_columns(held: Sequence[Mapping[str, Hand]]) -> dict[str, pa.Array]:
    """The hand columns of rows, each {side: Hand} (see the module docstring)."""
    columns: dict[str, pa.Array] = {}
    for side in HAND_SIDES:
        found = np.array([side in row for row in held], bool)
        marks = np.zeros((len(held), HAND_LANDMARKS, 3), np.float64)
        scores = np.zeros(len(held), np.float64)
        for number, row in enumerate(held):
            if side in row:
                marks[number] = row[side].landmarks
                scores[number] = row[side].score
        missing = pa.array(~found)
        for k, axis in enumerate("xyz"):
            flat = pa.array(quantise_xyz(marks[:, :, k]).ravel(), pa.int16())
            columns[f"{side}_hand_{axis}"] = pa.FixedSizeListArray.from_arrays(
                flat, HAND_LANDMARKS, mask=missing)
        columns[f"{side}_hand_score"] = pa.array(quantise_unit(scores), pa.int16(), mask=~found)
    return columns


def read_pose_sequence(data: bytes) -> PoseSequence:
    """Read Parquet bytes written by pose_sequence_parquet and dequantise with the file's scales."""
    table = pq.read_table(pa.BufferReader(data))
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()
            if k != b"ARROW:schema"}
    xyz_scale = float(meta.get("kvsa.pose.xyz_scale", XYZ_SCALE))
    unit_scale = float(meta.get("kvsa.pose.unit_scale", UNIT_SCALE))
    count = landmark_count(meta.get("kvsa.pose.landmarks", LANDMARK_SET))
    landmarks = np.full((table.num_rows, count, 5), np.nan, np.float32)
    for k, name in enumerate(_COORDS):
        column = table.column(name).combine_chunks()
        valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)
        values = column.flatten().to_numpy().reshape(-1, count)
        landmarks[valid, :, k] = values / (xyz_scale if k < 3 else unit_scale)
    bbox = np.full((table.num_rows, 4), np.nan, np.float32)
    boxes = table.column("bbox").combine_chunks()
    valid = ~np.asarray(boxes.is_null().to_numpy(zero_copy_only=False), bool)
    for k in range(4):
        bbox[valid, k] = boxes.field(k).to_numpy(zero_copy_only=False)[valid] / xyz_scale
    if not has_hands(table):
        return PoseSequence(table=table, landmarks=landmarks, bbox=bbox, metadata=meta)
    hands = np.full((table.num_rows, len(HAND_SIDES), HAND_LANDMARKS, 3), np.nan, np.float32)
    scores = np.full((table.num_rows, len(HAND_SIDES)), np.nan, np.float32)
    for s, side in enumerate(HAND_SIDES):
        for k, axis in enumerate("xyz"):
            column = table.column(f"{side}_hand_{axis}").combine_chunks()
            valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)
            values = column.flatten().to_numpy().reshape(-1, HAND_LANDMARKS)
            hands[valid, s, :, k] = values / xyz_scale
        score = table.column(f"{side}_hand_score").combine_chunks()
        valid = ~np.asarray(score.is_null().to_numpy(zero_copy_only=False), bool)
        scores[valid, s] = score.to_numpy(zero_copy_only=False)[valid] / unit_scale
    return PoseSequence(table=table, landmarks=landmarks, bbox=bbox, metadata=meta,
                        hands=hands, hand_scores=scores)
