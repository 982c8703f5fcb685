"""The names, records and errors of face collections (consumer.faces.collections): ids
validated as Rekognition validates them, before any becomes part of a key; a collection's and a
face's items; embeddings as NumPy .npy bytes (never pickle)."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

FACE_MODEL = "dlib-resnet-v1"
DIMENSIONS = 128

COLLECTION_ID = re.compile(r"[a-zA-Z0-9_.\-]{1,255}")
EXTERNAL_IMAGE_ID = re.compile(r"[a-zA-Z0-9_.\-:]{1,255}")
FACE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
IMAGE_ID = re.compile(r"[0-9a-f]{64}")
TABLE_NAME = re.compile(r"[a-zA-Z0-9_.\-]{3,255}")


class FaceCollectionError(Exception):
    """A face collection operation failed; the message names the collection (or face)."""


class InvalidParameter(FaceCollectionError, ValueError):
    """A name, id or face that Rekognition would refuse (InvalidParameterException); raised
    before anything is written or any key is made."""


class ResourceNotFound(FaceCollectionError):
    """No such collection (or table): Rekognition's ResourceNotFoundException."""


class ResourceAlreadyExists(FaceCollectionError):
    """The collection exists already: Rekognition's ResourceAlreadyExistsException."""


def check_collection_id(name: str) -> str:
    """`name` if it is a legal Rekognition collection id, else InvalidParameter naming it."""
    if not isinstance(name, str) or not COLLECTION_ID.fullmatch(name):
        raise InvalidParameter(f"collection id {name!r} is not 1-255 of a-z A-Z 0-9 _ . -")
    return name


def check_external_image_id(external_id: str) -> str:
    """`external_id` if it is a legal Rekognition ExternalImageId, else InvalidParameter."""
    if not isinstance(external_id, str) or not EXTERNAL_IMAGE_ID.fullmatch(external_id):
        raise InvalidParameter(f"external image id {external_id!r} is not 1-255 of "
                               "a-z A-Z 0-9 _ . - :")
    return external_id


def check_face_id(face_id: str) -> str:
    """`face_id` if it is a face id (a lower-case uuid, as IndexFaces gives), else
    InvalidParameter naming it."""
    if not isinstance(face_id, str) or not FACE_ID.fullmatch(face_id):
        raise InvalidParameter(f"face id {face_id!r} is not a uuid")
    return face_id


def check_table_name(table: str) -> str:
    if not isinstance(table, str) or not TABLE_NAME.fullmatch(table):
        raise InvalidParameter(f"table name {table!r} is not 3-255 of a-z A-Z 0-9 _ . -")
    return table


def image_id(data: bytes) -> str:
    """The ImageId of a source image: the sha256 of its bytes (hex), so the same file indexed
    twice gives the same ImageId."""
    return hashlib.sha256(data).hexdigest()


def unit_embedding(embedding, what: str) -> np.ndarray:
    """`embedding` as a unit float32[128], or InvalidParameter naming `what`."""
    if embedding is None:
        raise InvalidParameter(f"{what} has no embedding (make the FaceAnalyzer with embed=True)")
    vector = np.asarray(embedding, dtype=np.float64)
    if vector.shape != (DIMENSIONS,) or not np.all(np.isfinite(vector)):
        raise InvalidParameter(f"{what}: embedding must be {DIMENSIONS} finite numbers, "
                               f"got shape {vector.shape}")
    norm = float(np.linalg.norm(vector))
    if norm < 1e-6:
        raise InvalidParameter(f"{what}: embedding is zero")
    return (vector / norm).astype(np.float32)


def embedding_bytes(vector: np.ndarray) -> bytes:
    """The .npy bytes of an embedding (never pickled)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(vector, dtype="<f4"), allow_pickle=False)
    return buffer.getvalue()


def embedding_from_bytes(data: bytes, what: str) -> np.ndarray:
    """An embedding back from its .npy bytes, refusing anything that is not float32[128]
    (allow_pickle=False: an object array raises instead of running code)."""
    try:
        vector = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FaceCollectionError(f"{what} is not a .npy embedding: {err}") from None
    if vector.dtype != np.float32 or vector.shape != (DIMENSIONS,):
        raise FaceCollectionError(f"{what} holds {vector.dtype}{list(vector.shape)}, "
                                  f"not float32[{DIMENSIONS}]")
    return vector


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    created_at: str  # ISO 8601 UTC
    updated_at: str
    face_count: int
    version: int
    face_model: str
    deleting: bool = False

    @property
    def status(self) -> str:
        return "DELETING" if self.deleting else "ACTIVE"

    def to_json(self) -> dict[str, Any]:
        return {"collection": self.name, "face_count": self.face_count, "version": self.version,
                "face_model": self.face_model, "created_at": self.created_at,
                "updated_at": self.updated_at, "status": self.status}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> CollectionInfo:
        return cls(name=item["collection"]["S"], created_at=item["createdAt"]["S"],
                   updated_at=item.get("updatedAt", item["createdAt"])["S"],
                   face_count=int(item["faceCount"]["N"]), version=int(item["version"]["N"]),
                   face_model=item["faceModel"]["S"],
                   deleting=is_deleting(item))


@dataclass(frozen=True)
class FaceRecord:
    """One indexed face, as ListFaces and IndexFaces give it."""

    collection: str
    face_id: str
    external_image_id: str | None
    image_id: str
    box: tuple[float, float, float, float]  # left, top, width, height (ratios)
    confidence: float  # the detector's, 0..1
    created_at: str
    embedding_key: str

    def to_json(self) -> dict[str, Any]:
        left, top, width, height = self.box
        return {"collection": self.collection, "face_id": self.face_id,
                "external_image_id": self.external_image_id, "image_id": self.image_id,
                "box": {"left": left, "top": top, "width": width, "height": height},
                "confidence": self.confidence, "created_at": self.created_at,
                "embedding_key": self.embedding_key}

    def item(self) -> dict[str, Any]:
        item = {"collection": {"S": self.collection}, "faceId": {"S": self.face_id},
                "imageId": {"S": self.image_id},
                "box": {"M": {k: {"N": _num(v)} for k, v in
                              zip(("left", "top", "width", "height"), self.box, strict=True)}},
                "confidence": {"N": _num(self.confidence)}, "createdAt": {"S": self.created_at},
                "embeddingKey": {"S": self.embedding_key}}
        if self.external_image_id is not None:
            item["externalImageId"] = {"S": self.external_image_id}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> FaceRecord:
        box = item["box"]["M"]
        return cls(collection=item["collection"]["S"], face_id=item["faceId"]["S"],
                   external_image_id=item.get("externalImageId", {}).get("S"),
                   image_id=item["imageId"]["S"],
                   box=tuple(float(box[k]["N"]) for k in ("left", "top", "width", "height")),
                   confidence=float(item["confidence"]["N"]), created_at=item["createdAt"]["S"],
                   embedding_key=item["embeddingKey"]["S"])


def is_deleting(item: dict[str, Any]) -> bool:
    return item.get("deleting", {}).get("BOOL", False)


def _num(value: float) -> str:
    return repr(round(float(value), 6))
