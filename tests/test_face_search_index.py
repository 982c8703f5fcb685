"""Searching face collections (consumer.faces.search) on the local stack (moto's DynamoDB and
S3): the similarity scale, exact search above a threshold, a 100k-face search timed, loading
collections, and the index that follows another process's changes."""
# ruff: noqa: F811 (the fixtures of test_face_collections, imported, are parameters here)

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from consumer.cloud.aws import ApiCalls
from consumer.faces.collections import FaceCollections
from consumer.faces.records import DIMENSIONS, InvalidParameter, ResourceNotFound, image_id
from consumer.faces.search import CollectionIndex, RefreshingIndex, cosine_floor, similarity
from tests.test_face_collections import (  # noqa: F401 (fixtures, used by name)
    BUCKET,
    PREFIX,
    new_store,
    stack,
    synthetic,
    table,
    unit_vectors,
)

# --- search --------------------------------------------------------------------------------

def test_similarity_scale():
    """dlib's same-person rule (raw distance 0.6 at a descriptor length of ~1.37: unit
    distance ~0.44) maps to ~80, the default threshold; identical is 100; unrelated is 0."""
    def at_distance(d: float) -> float:
        return float(similarity(1.0 - d * d / 2.0))
    assert at_distance(0.0) == 100.0
    assert at_distance(0.6 / 1.37) == pytest.approx(80.8, abs=0.1)
    assert at_distance(np.sqrt(0.2)) == pytest.approx(80.0)
    assert at_distance(np.sqrt(2.0)) == 0.0  # orthogonal
    assert float(similarity(-1.0)) == 0.0
    assert cosine_floor(80.0) == pytest.approx(0.9)


def test_search_returns_the_best_matches_above_the_threshold():
    vectors = unit_vectors(50, seed=10)
    faces = [_record(f"c{i % 2}", i) for i in range(50)]
    index = CollectionIndex(vectors, faces, {"c0": 1, "c1": 1})
    noise = np.random.default_rng(11).standard_normal((2, DIMENSIONS)).astype(np.float32)
    queries = vectors[[3, 7]] + 0.02 * noise  # unit distance ~0.23: similarity ~95
    results = index.search(queries, threshold=80, max_matches=3)
    assert [[m.face_id for m in r] for r in results] == [[faces[3].face_id],
                                                         [faces[7].face_id]]
    assert results[0][0].collection == "c1" and results[0][0].similarity > 90
    everything = index.search(vectors[3], threshold=0, max_matches=50)[0]
    scores = [m.similarity for m in everything]
    assert len(everything) == 50 and scores == sorted(scores, reverse=True)
    assert index.search(vectors[3], threshold=0, max_matches=500)[0] == everything
    assert CollectionIndex(np.zeros((0, 128)), []).search(vectors[:2]) == [[], []]
    for bad in ({"threshold": 101}, {"threshold": -1}, {"max_matches": 0}):
        with pytest.raises(InvalidParameter):
            index.search(vectors[0], **bad)
    with pytest.raises(InvalidParameter, match="M x 128"):
        index.search(np.zeros((1, 64)))


def test_search_of_100k_faces(capsys):
    """Exact search against 100,000 random unit vectors: the numbers in search.py's doc."""
    count = 100_000
    vectors = unit_vectors(count, seed=12)
    index = CollectionIndex(vectors, [_record("big", i) for i in range(count)])
    rng = np.random.default_rng(13)
    timings = {}
    for batch in (1, 32, 256):
        picks = rng.choice(count, batch, replace=False)
        queries = vectors[picks] + 0.03 * rng.standard_normal((batch, 128)).astype(np.float32)
        results = index.search(queries, max_matches=5)
        assert [r[0].face_id for r in results] == [index.faces[p].face_id for p in picks]
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            index.search(queries, max_matches=5)
            runs.append(time.perf_counter() - started)
        timings[batch] = 1000 * float(np.median(runs))
    with capsys.disabled():
        print("\nsearch of 100k x 128 (median of 5, max_matches 5): "
              + ", ".join(f"{b} quer{'y' if b == 1 else 'ies'} {ms:.1f} ms"
                          for b, ms in timings.items())
              + f" ({timings[256] / 256:.2f} ms a query in a batch of 256)")
    assert timings[1] < 1000 and timings[256] < 10_000  # loose: shared CI machines


def _record(collection: str, number: int):
    from consumer.faces.records import FaceRecord
    return FaceRecord(collection, str(uuid.UUID(int=number, version=4)), f"person-{number}",
                      "0" * 64, (0.0, 0.0, 0.1, 0.1), 0.99, "", "")


def test_index_loads_collections_with_one_query_each_and_parallel_gets(stack, table):
    calls = ApiCalls()
    s3, dynamodb = stack.client("s3"), stack.client("dynamodb")
    calls.attach(s3)
    calls.attach(dynamodb)
    store = FaceCollections(s3, dynamodb, BUCKET, PREFIX, table)
    store.create_collection("load-a")
    store.create_collection("load-b")
    store.index_faces("load-a", [(synthetic(v), "a") for v in unit_vectors(6, 14)],
                      image_id(b"a"))
    store.index_faces("load-b", [(synthetic(v), "b") for v in unit_vectors(3, 15)],
                      image_id(b"b"))
    before = calls.snapshot()
    index = CollectionIndex.load(store, ["load-a", "load-b"], workers=4)
    after = calls.snapshot()
    spent = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) !=
             before.get(k, 0)}
    assert spent == {"dynamodb:Query": 2, "s3:GetObject": 9}
    assert len(index) == 9 and index.versions == {"load-a": 2, "load-b": 2}
    assert np.allclose(np.linalg.norm(index.matrix, axis=1), 1.0, atol=1e-6)
    with pytest.raises(ResourceNotFound, match="'load-c'"):
        CollectionIndex.load(store, ["load-a", "load-c"])
    assert CollectionIndex.load(store, ["load-c"], missing_ok=True).versions == {"load-c": None}
    store.delete_collection("load-a")
    store.delete_collection("load-b")


def test_refreshing_index_sees_another_process_change_the_collection(stack, table):
    calls = ApiCalls()
    dynamodb = stack.client("dynamodb")
    calls.attach(dynamodb)
    consumer_side = FaceCollections(stack.client("s3"), dynamodb, BUCKET, PREFIX, table)
    indexer_side = new_store(stack, table)  # the other process
    indexer_side.create_collection("watch")
    first, second = unit_vectors(2, seed=16)
    indexer_side.index_faces("watch", [(synthetic(first), "first")], image_id(b"1"))
    now = [1000.0]
    live = RefreshingIndex(consumer_side, ["watch"], every=30.0, clock=lambda: now[0])
    assert [m.external_image_id for m in live.search(first)[0]] == ["first"]
    assert live.search(second) == [[]]

    added = indexer_side.index_faces("watch", [(synthetic(second), "second")], image_id(b"2"))
    now[0] += 10  # not due yet: the copy there is, and no call at all
    before = calls.snapshot()
    assert live.search(second) == [[]]
    assert calls.snapshot() == before
    now[0] += 25  # due: one GetItem finds the new version and the index is loaded again
    assert [m.face_id for m in live.search(second)[0]] == [added[0].face_id]
    assert live.versions == {"watch": 3} and live.reloads == 1
    now[0] += 31  # due, nothing changed: one GetItem, no reload
    before = calls.snapshot()
    live.search(second)
    spent = {k: v - before.get(k, 0) for k, v in calls.snapshot().items()
             if v != before.get(k, 0)}
    assert spent == {"dynamodb:GetItem": 1} and live.reloads == 1

    indexer_side.delete_faces("watch", [added[0].face_id])
    now[0] += 31
    assert live.search(second) == [[]]
    # made again between two checks, and changed until its version is the one of the copy there
    # is: the creation time tells them apart
    indexer_side.delete_collection("watch")
    indexer_side.create_collection("watch")
    for n, vector in enumerate([*unit_vectors(2, seed=18), second]):
        indexer_side.index_faces("watch", [(synthetic(vector), f"again-{n}")],
                                 image_id(bytes([n])))
    assert live.versions == {"watch": 4} == {"watch": indexer_side.version("watch")}
    now[0] += 31
    assert [m.external_image_id for m in live.search(second)[0]] == ["again-2"]
    assert live.search(first) == [[]]
    indexer_side.delete_collection("watch")  # searched as empty, the consumer goes on
    now[0] += 31
    assert live.search(second) == [[]] and live.versions == {"watch": None}


def test_refreshing_index_in_the_background(stack, table):
    store = new_store(stack, table)
    store.create_collection("background")
    vector = unit_vectors(1, seed=17)[0]
    with RefreshingIndex(new_store(stack, table), ["background"], every=0.1,
                         background=True) as live:
        assert live.search(vector) == [[]]
        store.index_faces("background", [(synthetic(vector), "late")], image_id(b"l"))
        deadline = time.monotonic() + 5
        while not live.search(vector)[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m.external_image_id for m in live.search(vector)[0]] == ["late"]
    store.delete_collection("background")


