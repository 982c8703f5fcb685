"""Each analysed frame's faces, searched against the face collections (processing.faces.search)
and written as Rekognition's stream processors wrote them: the frame record's
`FaceSearchResponse` is one entry per detected face,

    {"DetectedFace": {"BoundingBox": {Width, Height, Left, Top}, "Confidence": 0-100,
                      "Landmarks": [{"Type", "X", "Y"}], "Quality": {"Brightness", "Sharpness"}},
     "MatchedFaces": [{"Similarity": 0-100, "Face": {"FaceId", "ExternalImageId",
                                                      "Confidence", "Collection"}}],
     "PersonIndex": i, "TrackId": t}

MatchedFaces holds at most `max_matches` faces at or above `match_threshold` (Rekognition's
MaxFaces and FaceMatchThreshold), best first; with no collection configured it is empty
(faces detected, not searched). PersonIndex and TrackId name the person whose box holds the face.
Embeddings are used here and dropped: never in records or logs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from processors.base import Person

# processors.faces keypoints: MediaPipe's six, or dlib's five-point predictor's
LANDMARKS_6 = ("eyeRight", "eyeLeft", "nose", "mouthCenter", "earRight", "earLeft")
LANDMARKS_5 = ("eyeRightOuter", "eyeRightInner", "eyeLeftOuter", "eyeLeftInner", "noseBase")


def build_face_search(config) -> FaceSearch | None:
    """The FaceSearch `processing.faces` asks for (None when faces are off), its collections
    (if any) loaded from `outputs.s3.bucket` and the `search.table`; raises the collections'
    errors (a missing collection, no bucket) at start."""
    faces = config.processing.faces
    if not faces.enabled:
        return None
    search = faces.search
    if not search.collections:
        return FaceSearch()
    from consumer.cloud.aws import AwsContext
    from consumer.faces.collections import FaceCollections
    from consumer.faces.search import RefreshingIndex
    outputs = config.outputs.s3
    if outputs is None or not outputs.bucket:
        raise ValueError("processing.faces.search.collections: the collections live in "
                         "outputs.s3.bucket, which is not set")
    endpoints = config.aws.endpoints
    store = FaceCollections(
        AwsContext(endpoints.get("s3"), config.aws.region).client("s3"),
        AwsContext(endpoints.get("dynamodb"), config.aws.region).client("dynamodb"),
        outputs.bucket, outputs.prefix, search.table)
    index = RefreshingIndex(store, search.collections, search.refresh_seconds, background=True)
    return FaceSearch(index, search.match_threshold, search.max_matches)


class FaceSearch:
    def __init__(self, index=None, match_threshold: float = 80.0, max_matches: int = 1):
        """`index`: a consumer.faces.search.RefreshingIndex (or CollectionIndex), None to
        detect without searching."""
        self.index = index
        self.match_threshold = match_threshold
        self.max_matches = max_matches

    def response(self, faces: Sequence, persons: Sequence[Person]) -> list[dict[str, Any]]:
        """The FaceSearchResponse of one frame: `faces` are processors.faces.Face."""
        matches: list[list] = [[] for _ in faces]
        embedded = [i for i, face in enumerate(faces) if face.embedding is not None]
        if self.index is not None and embedded:
            found = self.index.search(np.stack([faces[i].embedding for i in embedded]),
                                      self.match_threshold, self.max_matches)
            for i, face_matches in zip(embedded, found, strict=True):
                matches[i] = face_matches
        return [_entry(face, face_matches, persons)
                for face, face_matches in zip(faces, matches, strict=True)]

    def close(self) -> None:
        if self.index is not None and hasattr(self.index, "close"):
            self.index.close()


def _entry(face, matches, persons: Sequence[Person]) -> dict[str, Any]:
    left, top, width, height = face.box
    names = LANDMARKS_6 if len(face.keypoints) == 6 else LANDMARKS_5
    detected: dict[str, Any] = {
        "BoundingBox": {"Width": round(width, 4), "Height": round(height, 4),
                        "Left": round(left, 4), "Top": round(top, 4)},
        "Confidence": round(100 * face.confidence, 3),
        "Landmarks": [{"Type": name, "X": round(x, 4), "Y": round(y, 4)}
                      for name, (x, y) in zip(names, face.keypoints)],
    }
    if face.quality is not None:
        brightness, sharpness = face.quality
        detected["Quality"] = {"Brightness": round(brightness, 2),
                               "Sharpness": round(sharpness, 2)}
    person = face.person
    return {
        "DetectedFace": detected,
        "MatchedFaces": [{"Similarity": round(match.similarity, 3),
                          "Face": {"FaceId": match.face_id,
                                   "ExternalImageId": match.external_image_id,
                                   "Confidence": round(100 * match.confidence, 3),
                                   "Collection": match.collection}} for match in matches],
        "PersonIndex": person,
        "TrackId": persons[person].track_id if person is not None else None,
    }


def matches_by_person(response: Sequence[dict[str, Any]] | None
                      ) -> dict[int, tuple[tuple[str, str | None, str, float], ...]]:
    """A FaceSearchResponse's matches by PersonIndex, as processors.events.FaceMatch tuples
    (collection, external_image_id, face_id, similarity), in the response's order. Faces held
    by no person (PersonIndex None) are left out: no track can be named for them."""
    out: dict[int, list] = {}
    for entry in response or ():
        person = entry.get("PersonIndex")
        if person is None:
            continue
        for match in entry.get("MatchedFaces", ()):
            face = match["Face"]
            out.setdefault(person, []).append((face["Collection"], face.get("ExternalImageId"),
                                               face["FaceId"], float(match["Similarity"])))
    return {person: tuple(matches) for person, matches in out.items()}
