"""Searching face collections in memory: what every consumer of the fleet does with the faces
it finds, against the collections that `consumer.faces.collections` keeps.

`CollectionIndex` holds one or more collections as an N x 128 float32 matrix of unit
embeddings, with each row's face id, external image id, detector confidence and collection. It is
loaded with one strongly consistent Query per collection and one S3 GET per face (in a small
thread pool). `search` is exact: the cosines of M query embeddings with all N faces are one
matrix product (M x 128 by 128 x N), and the best `max_matches` per query are picked with
argpartition (O(N) per query, not a sort).

Similarity, on Rekognition's 0-100 scale. For unit vectors a and b, with cosine c = a.b and
Euclidean distance d (d^2 = 2 - 2c):

    similarity = 100 * clip(2c - 1, 0, 1) = 100 * clip(1 - d^2, 0, 1)

    d (unit vectors)   0     0.20   0.32   0.39   0.447   0.50   0.55   0.63   0.71   >= 1
    cosine c           1     0.98   0.95   0.925  0.90    0.875  0.85   0.80   0.75   <= 0.5
    similarity         100   96     90     85     80      75     70     60     50     0

Why this one: dlib's face recogniser (the 128-d ResNet that `processors.faces` runs) was trained so
that two faces of one person lie closer than 0.6 in its raw descriptor space, the threshold behind
its 99.38 % on LFW. Its raw descriptors are not unit vectors: they are about 1.37 long (1.25 to
1.46 measured on the faces of the tests), so raw 0.6 is a unit-vector distance of about 0.6 / 1.37 =
0.44, and the mapping puts similarity 80, the default threshold (as Rekognition's
FaceMatchThreshold), at unit distance 0.447, cosine 0.9 (raw ~0.61; processors.faces'
MATCH_DISTANCE 0.45): the default threshold is dlib's own same-person rule. Being linear in the
cosine, a threshold is a cosine floor, (threshold / 100 + 1) / 2, and no square root is taken.

Measured with processors.faces (MediaPipe boxes, dlib embeddings) on the test capture's
close-ups (21 frames of one speaker, 20-25 s of vogels_330.mkv) and skimage's astronaut: the
speaker against himself 71-99 (median 85; 79 % of pairs >= 80), against the astronaut 60-82
(median 68; one frame, a turned head, >= 80). So 80 separates frontal faces, not every face:
for decisions that matter, raise it (85-90) and decide per track over several frames (e.g. the
median of a track's best matches), not on one frame.

Where exact search stops being enough. Measured here (2 CPU cores, NumPy's BLAS; the test
prints the numbers of the machine it runs on), 100,000 faces are a 51 MB matrix and a search
with max_matches 5 takes: one query 1-3 ms, a batch of 32 (every face of a few frames) 15-17
ms, a batch of 256 about 100 ms (0.4 ms a query). Time and memory grow linearly with the faces,
and every consumer process holds its own copy: at 100k faces that is plenty for tens of
cameras per process. At millions of faces (0.5 GB and ~15 ms a single query per million, per
process) or many hundreds of queries per second, use an approximate index (FAISS IVF or HNSW,
with inner product on these unit vectors, sharing one index per machine), and load each
collection from one consolidated matrix written per version instead of one GET per face (a
100k collection is 100k GETs: minutes from S3 with 8 threads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from consumer.faces.collections import FaceCollections
from consumer.faces.records import (
    DIMENSIONS,
    FaceCollectionError,
    FaceRecord,
    InvalidParameter,
    ResourceNotFound,
    check_collection_id,
    embedding_from_bytes,
)

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 80.0
_QUERY_ROWS = 256  # queries per matrix product: bounds the M x N cosines to 256 x N floats


def similarity(cosine):
    """Rekognition-scale similarity (0-100) of unit-vector cosines (see the module doc)."""
    return 100.0 * np.clip(2.0 * np.asarray(cosine, dtype=np.float64) - 1.0, 0.0, 1.0)


def cosine_floor(threshold: float) -> float:
    """The cosine at which similarity equals `threshold`."""
    return (threshold / 100.0 + 1.0) / 2.0


@dataclass(frozen=True)
class Match:
    """A face of a collection that a searched face matched (Rekognition's FaceMatch)."""

    similarity: float  # 0-100
    face_id: str
    external_image_id: str | None
    confidence: float  # the detector's confidence when the face was indexed, 0..1
    collection: str

    def to_json(self) -> dict[str, Any]:
        return {"similarity": round(self.similarity, 3), "face_id": self.face_id,
                "external_image_id": self.external_image_id,
                "confidence": self.confidence, "collection": self.collection}


class CollectionIndex:
    """An immutable, in-memory copy of some collections; search it from any thread."""

    def __init__(self, matrix: np.ndarray, faces: Sequence[FaceRecord],
                 stamps: dict[str, tuple[str, int] | None] | None = None):
        matrix = np.asarray(matrix, dtype=np.float32).reshape(-1, DIMENSIONS)
        if len(faces) != matrix.shape[0]:
            raise ValueError(f"{matrix.shape[0]} embeddings for {len(faces)} faces")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        self._matrix = np.ascontiguousarray(matrix / np.maximum(norms, 1e-12), dtype=np.float32)
        self.faces = tuple(faces)
        # collection -> (created at, version) loaded; None: it was missing
        self.stamps = dict(stamps or {})

    @property
    def versions(self) -> dict[str, int | None]:
        """Collection -> the version loaded (None: it was missing)."""
        return {name: None if stamp is None else stamp[1] for name, stamp in self.stamps.items()}

    @classmethod
    def load(cls, store: FaceCollections, names: Iterable[str], *, workers: int = 8,
             missing_ok: bool = False) -> CollectionIndex:
        """The collections `names` as they are now: one Query each, then their embeddings'
        S3 GETs in a pool of `workers` threads. ResourceNotFound for a missing collection,
        unless `missing_ok` (then it is loaded as empty, its version None). A face whose object
        is gone (deleted since the Query) is left out."""
        names = list(dict.fromkeys(check_collection_id(n) for n in names))
        stamps: dict[str, tuple[str, int] | None] = {}
        records: list[FaceRecord] = []
        for name in names:
            try:
                info, faces = store.snapshot(name)
            except ResourceNotFound:
                if not missing_ok:
                    raise
                stamps[name] = None
                continue
            stamps[name] = (info.created_at, info.version)
            records += faces
        if records and not store.bucket:
            raise FaceCollectionError("no bucket for the face embeddings "
                                      "(outputs.s3.bucket, or --bucket)")
        vectors = _fetch(store, records, workers)
        kept = [(r, v) for r, v in zip(records, vectors, strict=True) if v is not None]
        matrix = (np.stack([v for _, v in kept]) if kept
                  else np.zeros((0, DIMENSIONS), np.float32))
        return cls(matrix, [r for r, _ in kept], stamps)

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def matrix(self) -> np.ndarray:
        """The N x 128 unit embeddings (read-only view)."""
        view = self._matrix.view()
        view.flags.writeable = False
        return view

    def search(self, embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
               max_matches: int = 1) -> list[list[Match]]:
        """For each of the M embeddings (M x 128, or one 128-vector), its best `max_matches`
        faces with similarity >= `threshold` (0-100), best first (Rekognition's
        SearchFacesByImage with FaceMatchThreshold and MaxFaces)."""
        if not 0.0 <= float(threshold) <= 100.0:
            raise InvalidParameter(f"threshold {threshold} is not within 0..100")
        if isinstance(max_matches, bool) or not isinstance(max_matches, int) \
                or max_matches < 1:
            raise InvalidParameter(f"max_matches {max_matches!r} must be 1 or more")
        queries = np.asarray(embeddings, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != DIMENSIONS \
                or not np.all(np.isfinite(queries)):
            raise InvalidParameter(f"embeddings must be M x {DIMENSIONS} finite numbers, got "
                                   f"shape {np.shape(embeddings)}")
        count = self._matrix.shape[0]
        if count == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        k = min(max_matches, count)
        results: list[list[Match]] = []
        for start in range(0, queries.shape[0], _QUERY_ROWS):
            cosines = queries[start:start + _QUERY_ROWS] @ self._matrix.T
            if k < count:
                top = np.argpartition(-cosines, k - 1, axis=1)[:, :k]
            else:
                top = np.broadcast_to(np.arange(count), cosines.shape)
            best = np.take_along_axis(cosines, top, axis=1)
            order = np.argsort(-best, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            scores = similarity(np.take_along_axis(best, order, axis=1))
            for row_top, row_scores in zip(top, scores, strict=True):
                results.append([self._match(int(i), float(s))
                                for i, s in zip(row_top, row_scores, strict=True)
                                if s >= threshold])
        return results

    def _match(self, row: int, score: float) -> Match:
        face = self.faces[row]
        return Match(score, face.face_id, face.external_image_id, face.confidence,
                     face.collection)


class RefreshingIndex:
    """A CollectionIndex that follows its collections: every `every` seconds it reads each
    collection's version (`FaceCollections.stamp`: one GetItem per collection) and, when one
    changed (or the collection was deleted, or made again),
    loads them all again and swaps the new copy in; searches go on against the old copy
    meanwhile. With `every` = 30 a consumer sees a face indexed or deleted by any process within
    about a minute (30 s plus the load), without a restart.

    By default the check is made on use (in `search`, by the thread that searches, at most one
    at a time); `background=True` makes it in a daemon thread instead, so no search ever waits
    for a load (better for large collections): call `close()` (or use `with`) to stop it.
    A collection deleted meanwhile is searched as empty, and one that cannot be read keeps the
    copy there is (logged): a consumer never stops for the collection's sake. The first load
    raises (ResourceNotFound for a missing collection): a misnamed collection is found at start.
    """

    def __init__(self, collections: FaceCollections, names: Iterable[str], every: float = 30.0,
                 *, background: bool = False, workers: int = 8,
                 clock: Callable[[], float] = time.monotonic):
        self.names = list(dict.fromkeys(check_collection_id(n) for n in names))
        if not self.names:
            raise InvalidParameter("no collection to search")
        if every < 0:
            raise InvalidParameter(f"every={every}: the refresh period must be >= 0 seconds")
        self.collections = collections
        self.every = float(every)
        self._workers = workers
        self._clock = clock
        self._lock = threading.Lock()
        self._index = CollectionIndex.load(collections, self.names, workers=workers)
        self._checked = clock()
        self.reloads = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name="face-index-refresh",
                                            daemon=True)
            self._thread.start()

    @property
    def index(self) -> CollectionIndex:
        return self._index

    @property
    def versions(self) -> dict[str, int | None]:
        return self._index.versions

    def search(self, embeddings: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
               max_matches: int = 1) -> list[list[Match]]:
        """CollectionIndex.search on the latest copy (checked first, when due and no background
        thread does it)."""
        if self._thread is None:
            self.maybe_refresh()
        return self._index.search(embeddings, threshold, max_matches)

    def maybe_refresh(self) -> bool:
        """`refresh()` if `every` seconds have passed since the last check and no other thread
        is checking; whether a new copy was loaded."""
        if self._clock() - self._checked < self.every:
            return False
        if not self._lock.acquire(blocking=False):
            return False  # another thread is at it; search the copy there is
        try:
            if self._clock() - self._checked < self.every:
                return False
            return self._refresh_locked(force=False)
        finally:
            self._lock.release()

    def refresh(self, force: bool = False) -> bool:
        """Check the versions now (and load again if one changed, or `force`); whether a new
        copy was loaded. Errors are logged and the copy there is kept."""
        with self._lock:
            return self._refresh_locked(force)

    def _refresh_locked(self, force: bool) -> bool:
        try:
            stamps = {name: self.collections.stamp(name) for name in self.names}
            if not force and stamps == self._index.stamps:
                return False
            index = CollectionIndex.load(self.collections, self.names, workers=self._workers,
                                         missing_ok=True)
        except (BotoCoreError, ClientError, OSError, FaceCollectionError) as err:
            log.warning("face collections %s: could not refresh, searching the copy of "
                        "versions %s: %s", ", ".join(self.names), self._index.versions, err)
            return False
        finally:
            self._checked = self._clock()
        gone = [name for name, version in index.versions.items() if version is None]
        if gone:
            log.warning("face collection(s) %s not found: searched as empty", ", ".join(gone))
        log.info("face collections reloaded: %s (%d faces)", index.versions, len(index))
        self._index = index
        self.reloads += 1
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.every or 1.0):
            self.maybe_refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fetch(store: FaceCollections, records: list[FaceRecord],
           workers: int) -> list[np.ndarray | None]:
    """Each record's embedding from S3 (None where the object is gone), `workers` at a time."""
    def get(record: FaceRecord) -> np.ndarray | None:
        try:
            body = store.s3.get_object(Bucket=store.bucket, Key=record.embedding_key)["Body"]
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                log.info("face %s of %s: embedding gone (deleted since listed)",
                         record.face_id, record.collection)
                return None
            raise
        with body:
            return embedding_from_bytes(body.read(), f"s3://{store.bucket}/"
                                                     f"{record.embedding_key}")
    if not records:
        return []
    if workers <= 1 or len(records) == 1:
        return [get(r) for r in records]
    with ThreadPoolExecutor(max_workers=min(workers, len(records)),
                            thread_name_prefix="face-load") as pool:
        return list(pool.map(get, records))
