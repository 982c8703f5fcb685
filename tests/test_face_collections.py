"""Face collections (consumer.faces) on the local stack (moto's server: DynamoDB and S3), with
real faces: the speaker of the shared Vogels capture (in close-up from ~20 s) and the astronaut
photograph that scikit-image bundles, through the real face models (processors.faces)."""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pytest

from consumer.faces.collections import COLLECTION_ITEM, FaceCollections
from consumer.faces.records import (
    DIMENSIONS,
    FACE_MODEL,
    FaceCollectionError,
    InvalidParameter,
    ResourceAlreadyExists,
    ResourceNotFound,
    embedding_bytes,
    embedding_from_bytes,
    image_id,
)
from consumer.faces.search import CollectionIndex
from infra.local.stack import LocalStack

BUCKET = "faces-test-bucket"
PREFIX = "lake/v1"
# frames of vogels_330.mkv (29.97 fps) with the speaker's face in close-up, frontal: 21.7 s and
# 23.5 s. Similarity 89 to each other, 66 and 67 to the astronaut. (Not every frame will do: on
# the close-ups from 20 to 25 s the speaker's frames score 71-99 against each other, median 85,
# and a turned head reaches 82 against the astronaut.)
SPEAKER_INDEXED_FRAME = 650
SPEAKER_SEARCHED_FRAME = 705


@dataclass(frozen=True)
class SyntheticFace:
    """A stand-in for processors.faces.Face where the embedding is made up (storage tests)."""

    box: tuple[float, float, float, float]
    confidence: float
    keypoints: tuple = ()
    embedding: np.ndarray | None = None


def synthetic(vector, confidence: float = 0.9) -> SyntheticFace:
    return SyntheticFace((0.1, 0.2, 0.3, 0.4), confidence, (), np.asarray(vector, np.float32))


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- fixtures ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack():
    with LocalStack() as local:
        local.client("s3").create_bucket(Bucket=BUCKET)
        yield local


@pytest.fixture(scope="module")
def table(stack) -> str:
    name = f"faces-{uuid.uuid4().hex[:8]}"
    FaceCollections(stack.client("s3"), stack.client("dynamodb"), BUCKET, PREFIX,
                    name).ensure_table()
    return name


def new_store(stack, table: str, **kwargs) -> FaceCollections:
    """A FaceCollections with clients of its own, as another process would have."""
    return FaceCollections(stack.client("s3"), stack.client("dynamodb"), BUCKET, PREFIX, table,
                           **kwargs)


@pytest.fixture()
def store(stack, table) -> FaceCollections:
    return new_store(stack, table)


def objects(stack, prefix: str = "") -> list[str]:
    pages = stack.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                           Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def items(stack, table: str) -> list[dict]:
    return stack.client("dynamodb").scan(TableName=table)["Items"]


@pytest.fixture(scope="module")
def analyzer(models):
    from processors.faces import FaceAnalyzer
    with FaceAnalyzer(models) as faces:
        yield faces


@pytest.fixture(scope="module")
def speaker_frames(captures) -> dict[int, np.ndarray]:
    """RGB frames of the Vogels capture, by frame number."""
    import av
    wanted = {SPEAKER_INDEXED_FRAME, SPEAKER_SEARCHED_FRAME}
    frames: dict[int, np.ndarray] = {}
    with av.open(str(captures / "vogels_330.mkv")) as container:
        for number, frame in enumerate(container.decode(container.streams.video[0])):
            if number in wanted:
                frames[number] = frame.to_ndarray(format="rgb24")
            if number >= max(wanted):
                break
    assert frames.keys() == wanted
    return frames


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data
    return np.ascontiguousarray(data.astronaut())


def png(rgb: np.ndarray) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


# --- collections ---------------------------------------------------------------------------

def test_collections_are_created_listed_described_and_deleted(store, stack):
    info = store.create_collection("lifecycle-a")
    assert (info.name, info.face_count, info.version, info.face_model, info.status) == \
        ("lifecycle-a", 0, 1, FACE_MODEL, "ACTIVE")
    store.create_collection("lifecycle-b")
    with pytest.raises(ResourceAlreadyExists, match="'lifecycle-a' already exists"):
        store.create_collection("lifecycle-a")
    names = [c.name for c in store.list_collections()]
    assert {"lifecycle-a", "lifecycle-b"} <= set(names) and names == sorted(names)
    described = store.describe("lifecycle-a")
    assert described == info
    assert store.version("lifecycle-a") == 1

    assert store.delete_collection("lifecycle-a") == 0
    with pytest.raises(ResourceNotFound, match="'lifecycle-a' not found"):
        store.describe("lifecycle-a")
    with pytest.raises(ResourceNotFound, match="'lifecycle-a'"):
        store.delete_collection("lifecycle-a")
    with pytest.raises(ResourceNotFound, match="'lifecycle-a'"):
        store.list_faces("lifecycle-a")
    assert store.version("lifecycle-a") is None
    assert "lifecycle-a" not in [c.name for c in store.list_collections()]
    assert store.create_collection("lifecycle-a").face_count == 0  # the name is free again
    store.delete_collection("lifecycle-a")
    store.delete_collection("lifecycle-b")


def test_a_missing_table_is_named(stack):
    store = FaceCollections(stack.client("s3"), stack.client("dynamodb"), BUCKET, PREFIX,
                            "no-such-face-table")
    with pytest.raises(ResourceNotFound, match="face table 'no-such-face-table' not found"):
        store.list_collections()


def test_faces_are_stored_as_npy_under_the_collection_and_items_name_them(store, stack):
    store.create_collection("storage")
    vectors = unit_vectors(3, seed=1) * 1.37  # raw dlib descriptors are ~1.37 long
    records = store.index_faces("storage", [(synthetic(v), f"person-{i}")
                                            for i, v in enumerate(vectors)], image_id(b"photo"))
    assert [r.external_image_id for r in records] == ["person-0", "person-1", "person-2"]
    assert all(r.image_id == image_id(b"photo") for r in records)
    keys = sorted(objects(stack, f"{PREFIX}/faces/collection=storage/"))
    assert keys == sorted(f"{PREFIX}/faces/collection=storage/{r.face_id}.npy"
                          for r in records)
    body = stack.client("s3").get_object(Bucket=BUCKET, Key=records[0].embedding_key)["Body"]
    stored = np.load(io.BytesIO(body.read()), allow_pickle=False)
    assert stored.dtype == np.float32 and stored.shape == (DIMENSIONS,)
    assert np.allclose(stored, vectors[0] / np.linalg.norm(vectors[0]), atol=1e-6)
    info = store.describe("storage")
    assert (info.face_count, info.version) == (3, 2)  # one IndexFaces call: one version
    listed = store.list_faces("storage")
    assert sorted(listed, key=lambda r: r.face_id) == sorted(records, key=lambda r: r.face_id)
    store.delete_collection("storage")


def test_a_pickled_or_wrong_object_is_refused_when_loaded():
    vector = unit_vectors(1, seed=2)[0]
    assert np.array_equal(embedding_from_bytes(embedding_bytes(vector), "x"), vector)
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"not": "a vector"}], dtype=object), allow_pickle=True)
    with pytest.raises(FaceCollectionError, match="s3://b/k is not a .npy embedding"):
        embedding_from_bytes(pickled.getvalue(), "s3://b/k")
    wrong = io.BytesIO()
    np.save(wrong, np.zeros(64, np.float64))
    with pytest.raises(FaceCollectionError, match=r"float64\[64\], not float32\[128\]"):
        embedding_from_bytes(wrong.getvalue(), "s3://b/k")
    with pytest.raises(FaceCollectionError):
        embedding_from_bytes(b"garbage", "s3://b/k")


def test_bad_names_are_refused_before_any_key_is_made(store, stack, table):
    store.create_collection("names")
    before_objects, before_items = objects(stack), len(items(stack, table))
    good = synthetic(unit_vectors(1, seed=3)[0])
    face_id = str(uuid.uuid4())
    for bad in ("a/b", "", "x" * 256, "../up", "café", "name\n"):
        with pytest.raises(InvalidParameter, match="collection id"):
            store.create_collection(bad)
        with pytest.raises(InvalidParameter, match="collection id"):
            store.embedding_key(bad, face_id)
        with pytest.raises(InvalidParameter, match="collection id"):
            store.index_faces(bad, [(good, "ok")], image_id(b"i"))
    for bad in ("has space", "a/b", "x" * 256, ""):
        with pytest.raises(InvalidParameter, match="external image id"):
            # the first face is fine: nothing at all is written for the call
            store.index_faces("names", [(good, "fine"), (good, bad)], image_id(b"i"))
    with pytest.raises(InvalidParameter, match="face id '../x' is not a uuid"):
        store.delete_faces("names", ["../x"])
    with pytest.raises(InvalidParameter, match="image id"):
        store.index_faces("names", [(good, "ok")], "not-a-sha256")
    with pytest.raises(InvalidParameter, match="no embedding"):
        store.index_faces("names", [(SyntheticFace((0, 0, 1, 1), 0.9), "ok")], image_id(b"i"))
    with pytest.raises(InvalidParameter, match="128 finite numbers"):
        store.index_faces("names", [(synthetic(np.full(128, np.nan)), "ok")], image_id(b"i"))
    with pytest.raises(InvalidParameter, match="unsafe S3 key prefix"):
        FaceCollections(None, None, BUCKET, "../escape", table)
    assert objects(stack) == before_objects and len(items(stack, table)) == before_items
    assert store.describe("names").version == 1
    store.delete_collection("names")


def test_index_into_a_missing_collection_leaves_nothing_behind(store, stack):
    before = objects(stack)
    with pytest.raises(ResourceNotFound, match="'never-made' not found"):
        store.index_faces("never-made", [(synthetic(unit_vectors(1, 4)[0]), "x")],
                          image_id(b"i"))
    assert objects(stack) == before


def test_concurrent_indexers_lose_no_count(stack, table):
    new_store(stack, table).create_collection("busy")

    def indexer(seed: int) -> None:
        store = new_store(stack, table)  # a process of its own: its own clients
        for n, vector in enumerate(unit_vectors(5, seed)):
            store.index_faces("busy", [(synthetic(vector), f"w{seed}-{n}")],
                              image_id(bytes([seed, n])))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(indexer, range(4)))  # an indexer's error is raised here
    store = new_store(stack, table)
    info = store.describe("busy")
    assert (info.face_count, info.version) == (20, 21)
    assert len(store.list_faces("busy")) == 20
    store.delete_collection("busy")


def test_delete_collection_removes_items_objects_and_strays(store, stack, table):
    store.create_collection("doomed")
    store.index_faces("doomed", [(synthetic(v), None) for v in unit_vectors(4, 5)],
                      image_id(b"d"))
    # an object no item names: what an indexer killed between its S3 PUT and its transaction
    # leaves behind
    stray = f"{PREFIX}/faces/collection=doomed/{uuid.uuid4()}.npy"
    stack.client("s3").put_object(Bucket=BUCKET, Key=stray, Body=b"x")
    store.create_collection("doomed-not")  # a neighbour whose prefix starts the same
    store.index_faces("doomed-not", [(synthetic(unit_vectors(1, 6)[0]), None)], image_id(b"n"))
    assert store.delete_collection("doomed") == 4
    assert objects(stack, f"{PREFIX}/faces/collection=doomed/") == []
    assert len(objects(stack, f"{PREFIX}/faces/collection=doomed-not/")) == 1
    assert not [i for i in items(stack, table) if i["collection"]["S"] == "doomed"]
    store.delete_collection("doomed-not")


def test_an_interrupted_delete_collection_blocks_indexing_and_can_be_finished(store, stack):
    store.create_collection("halfway")
    store.index_faces("halfway", [(synthetic(unit_vectors(1, 7)[0]), None)], image_id(b"h"))
    # what delete_collection does first, then dies
    stack.client("dynamodb").update_item(
        TableName=store.table, Key={"collection": {"S": "halfway"},
                                    "faceId": {"S": COLLECTION_ITEM}},
        UpdateExpression="SET deleting = :yes", ExpressionAttributeValues={":yes": {"BOOL": True}})
    assert store.describe("halfway").status == "DELETING"
    assert store.version("halfway") is None
    with pytest.raises(ResourceNotFound, match="'halfway' is being deleted"):
        store.index_faces("halfway", [(synthetic(unit_vectors(1, 8)[0]), None)], image_id(b"h"))
    with pytest.raises(ResourceAlreadyExists):
        store.create_collection("halfway")
    assert store.delete_collection("halfway") == 1
    assert objects(stack, f"{PREFIX}/faces/collection=halfway/") == []


def test_delete_faces_reports_what_it_deleted(store, stack):
    store.create_collection("trim")
    records = store.index_faces("trim", [(synthetic(v), f"p{i}")
                                         for i, v in enumerate(unit_vectors(3, 9))],
                                image_id(b"t"))
    unknown = str(uuid.uuid4())
    deleted = store.delete_faces("trim", [records[0].face_id, unknown, records[0].face_id])
    assert deleted == [records[0].face_id]
    assert not objects(stack, records[0].embedding_key)
    info = store.describe("trim")
    assert (info.face_count, info.version) == (2, 3)
    assert store.delete_faces("trim", [records[0].face_id]) == []
    assert store.describe("trim").version == 3  # nothing changed: no new version
    with pytest.raises(ResourceNotFound, match="'nope' not found"):
        store.delete_faces("nope", [unknown])
    store.delete_collection("trim")


# --- real faces ----------------------------------------------------------------------------

def test_real_faces_index_search_and_delete(store, analyzer, speaker_frames, astronaut, capsys):
    store.create_collection("people")
    speaker_faces = analyzer.faces(speaker_frames[SPEAKER_INDEXED_FRAME])
    astronaut_faces = analyzer.faces(astronaut)
    assert speaker_faces and astronaut_faces
    speaker = store.index_faces("people", [(speaker_faces[0], "speaker")],
                                image_id(png(speaker_frames[SPEAKER_INDEXED_FRAME])))[0]
    astro = store.index_faces("people", [(astronaut_faces[0], "astronaut")],
                              image_id(png(astronaut)))[0]
    listed = {f.face_id: f for f in store.list_faces("people")}
    assert {f.external_image_id for f in listed.values()} == {"speaker", "astronaut"}
    assert listed[speaker.face_id].box == pytest.approx(tuple(speaker_faces[0].box), abs=1e-6)

    index = CollectionIndex.load(store, ["people"])
    other_frame = analyzer.faces(speaker_frames[SPEAKER_SEARCHED_FRAME])
    all_scores = index.search(np.stack([other_frame[0].embedding, astronaut_faces[0].embedding]),
                              threshold=0, max_matches=2)
    with capsys.disabled():
        print("\nsimilarities: speaker at 23.5 s vs "
              + ", ".join(f"{m.external_image_id} {m.similarity:.1f}" for m in all_scores[0])
              + "; astronaut vs "
              + ", ".join(f"{m.external_image_id} {m.similarity:.1f}" for m in all_scores[1]))
    [matches] = index.search(other_frame[0].embedding, max_matches=5)
    assert [m.external_image_id for m in matches] == ["speaker"]
    assert matches[0].similarity > 80 and matches[0].face_id == speaker.face_id
    [matches] = index.search(astronaut_faces[0].embedding, max_matches=5)
    assert [m.external_image_id for m in matches] == ["astronaut"]
    assert matches[0].similarity > 95

    assert store.delete_faces("people", [speaker.face_id]) == [speaker.face_id]
    index = CollectionIndex.load(store, ["people"])
    assert index.search(other_frame[0].embedding, max_matches=5) == [[]]
    assert [f.face_id for f in store.list_faces("people")] == [astro.face_id]
    store.delete_collection("people")
