"""Face collections shared by the fleet, with the semantics (and error names) of Amazon
Rekognition's CreateCollection, IndexFaces, ListFaces, DeleteFaces, DescribeCollection and
DeleteCollection.

Storage: one DynamoDB table (on demand; hash key `collection`, range key `faceId`, both S) and
one S3 object per face.

    collection item   faceId "#collection"; kind "collection" (the key of the sparse index
                      `collections` that lists them without reading any face), createdAt,
                      updatedAt (ISO 8601 UTC), faceCount, version, faceModel
                      ("dlib-resnet-v1"); deleting (true) while DeleteCollection runs
    face item         faceId (a uuid4), externalImageId (optional), imageId (sha256 of the
                      source image's bytes, hex), box {left, top, width, height} (ratios of the
                      image), confidence (0..1), createdAt, embeddingKey
    embedding         {prefix}/faces/collection={name}/{faceId}.npy: NumPy's .npy of a unit
                      float32[128] (np.save with allow_pickle=False; read back the same way)

Names are validated (consumer.faces.records) before they become part of a key: a collection id as Rekognition's
([a-zA-Z0-9_.-]{1,255}; it only ever appears after `collection=`, so no key segment can be `.`
or `..`), an external image id as Rekognition's ([a-zA-Z0-9_.:-]{1,255}), face ids as uuids.

Consistency. `version` goes up by one with every change of a collection (faces indexed or
deleted), so a reader learns that its copy is stale from one GetItem
(`consumer.faces.search.RefreshingIndex`). Faces and the collection item change together in one
DynamoDB transaction whose update of the collection item is an atomic `ADD faceCount :n,
version :1` under the condition that the collection exists and is not being deleted: two
indexers never lose each other's count (no read-modify-write), and nothing is indexed into a
collection that is gone. A transaction that collides with another on the collection item is
retried with backoff. The embedding is written to S3 before its item, so an item never names a
missing object; an indexer that dies in between leaves an object no item names (never loaded;
removed with the collection, whose deletion lists the whole prefix). DeleteCollection first
marks the collection `deleting` (no index or delete of faces succeeds from then on), removes
the face items and objects, then the collection item: killed half-way, the collection shows as
DELETING and another DeleteCollection finishes it.

Permissions (least privilege): dynamodb:DescribeTable and CreateTable (ensure_table only),
GetItem, BatchGetItem, Query (the table and its index `collections`), PutItem, UpdateItem,
DeleteItem, BatchWriteItem (TransactWriteItems needs the item actions it contains); on the
bucket s3:PutObject, GetObject, DeleteObject and ListBucket, all under `{prefix}/faces/`.
Searching needs only GetItem, Query and GetObject.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from botocore.exceptions import BotoCoreError, ClientError

from consumer.cloud.backoff import Backoff
from consumer.faces.records import (
    FACE_MODEL,
    IMAGE_ID,
    CollectionInfo,
    FaceCollectionError,
    FaceRecord,
    InvalidParameter,
    ResourceAlreadyExists,
    ResourceNotFound,
    check_collection_id,
    check_external_image_id,
    check_face_id,
    check_table_name,
    embedding_bytes,
    is_deleting,
    unit_embedding,
)
from consumer.formats.s3_layout import check_prefix

if TYPE_CHECKING:
    from processors.faces import Face

log = logging.getLogger(__name__)

COLLECTION_ITEM = "#collection"  # faceId of the collection's own item; uuids never start so
LIST_INDEX = "collections"  # sparse GSI over the collection items only
DEFAULT_TABLE = "kvs-analytics-faces"
_RETRY = Backoff(base=0.05, cap=2.0)  # a transaction colliding with another: retried soon
TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems: 99 faces + the collection
_LIVE = "attribute_exists(faceId) AND attribute_not_exists(deleting)"
_KEY_SCHEMA = [{"AttributeName": "collection", "KeyType": "HASH"},
               {"AttributeName": "faceId", "KeyType": "RANGE"}]
_INDEX_KEY_SCHEMA = [{"AttributeName": "kind", "KeyType": "HASH"},
                     {"AttributeName": "collection", "KeyType": "RANGE"}]


class FaceCollections:
    """The collections in one table and one bucket (see the module doc). Thread-safe as its
    boto3 clients are; several processes and machines may use the same table at once."""

    def __init__(self, s3, dynamodb, bucket: str | None, prefix: str = "",
                 table: str = DEFAULT_TABLE, backoff: Backoff = _RETRY,
                 attempts: int = 8):
        self.s3 = s3
        self.dynamodb = dynamodb
        self.bucket = bucket
        try:
            self.prefix = check_prefix(prefix)
        except ValueError as err:
            raise InvalidParameter(str(err)) from None
        self.table = check_table_name(table)
        self._backoff = backoff
        self._attempts = attempts

    # --- keys ------------------------------------------------------------------------------

    def collection_prefix(self, name: str) -> str:
        """`{prefix}/faces/collection={name}/` (name validated first)."""
        parts = [self.prefix, "faces", f"collection={check_collection_id(name)}"]
        return "/".join(p for p in parts if p) + "/"

    def embedding_key(self, name: str, face_id: str) -> str:
        return f"{self.collection_prefix(name)}{check_face_id(face_id)}.npy"

    # --- the table -------------------------------------------------------------------------

    def ensure_table(self, timeout: float = 300.0) -> None:
        """Create the table (on-demand billing, with its index `collections`) if missing; wait
        until it is ACTIVE. A table of another shape is a FaceCollectionError naming it."""
        try:
            table = self.dynamodb.describe_table(TableName=self.table)["Table"]
        except ClientError as err:
            if _code(err) != "ResourceNotFoundException":
                raise
            try:
                self.dynamodb.create_table(
                    TableName=self.table, BillingMode="PAY_PER_REQUEST", KeySchema=_KEY_SCHEMA,
                    AttributeDefinitions=[
                        {"AttributeName": name, "AttributeType": "S"}
                        for name in ("collection", "faceId", "kind")],
                    GlobalSecondaryIndexes=[{"IndexName": LIST_INDEX,
                                             "KeySchema": _INDEX_KEY_SCHEMA,
                                             "Projection": {"ProjectionType": "ALL"}}])
                log.info("created face table %s", self.table)
            except ClientError as err2:
                if _code(err2) != "ResourceInUseException":  # another process made it first
                    raise
            table = None
        if table is None or table.get("TableStatus") != "ACTIVE":
            self.dynamodb.get_waiter("table_exists").wait(
                TableName=self.table,
                WaiterConfig={"Delay": 2, "MaxAttempts": max(1, int(timeout / 2))})
            table = self.dynamodb.describe_table(TableName=self.table)["Table"]
        indexes = {i["IndexName"]: i["KeySchema"]
                   for i in table.get("GlobalSecondaryIndexes", [])}
        if table["KeySchema"] != _KEY_SCHEMA or indexes.get(LIST_INDEX) != _INDEX_KEY_SCHEMA:
            raise FaceCollectionError(
                f"table {self.table} exists but is not a face table (key collection + faceId, "
                f"index {LIST_INDEX} on kind + collection)")

    # --- collections -----------------------------------------------------------------------

    def create_collection(self, name: str) -> CollectionInfo:
        """Create an empty collection; ResourceAlreadyExists if there is one of that name
        (also while one of that name is being deleted)."""
        check_collection_id(name)
        now = _now()
        item = {"collection": {"S": name}, "faceId": {"S": COLLECTION_ITEM},
                "kind": {"S": "collection"}, "createdAt": {"S": now}, "updatedAt": {"S": now},
                "faceCount": {"N": "0"}, "version": {"N": "1"}, "faceModel": {"S": FACE_MODEL}}
        try:
            self.dynamodb.put_item(TableName=self.table, Item=item,
                                   ConditionExpression="attribute_not_exists(faceId)")
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                raise ResourceAlreadyExists(f"collection {name!r} already exists") from None
            raise self._table_error(err) from None
        return CollectionInfo.from_item(item)

    def describe(self, name: str) -> CollectionInfo:
        """The collection's face count, version, model, times and status (DELETING while a
        DeleteCollection runs or was interrupted); ResourceNotFound if there is none."""
        item = self._collection_item(check_collection_id(name))
        if item is None:
            raise ResourceNotFound(f"collection {name!r} not found")
        return CollectionInfo.from_item(item)

    def version(self, name: str) -> int | None:
        """The collection's version, or None when it is gone or being deleted."""
        stamp = self.stamp(name)
        return None if stamp is None else stamp[1]

    def stamp(self, name: str) -> tuple[str, int] | None:
        """(created at, version) of the collection from one strongly consistent GetItem of three
        attributes, or None when it is gone or being deleted: what a RefreshingIndex polls. The
        creation time tells a collection deleted and made again (its version starts at 1 again)
        from the one before."""
        item = self._collection_item(check_collection_id(name),
                                     projection="createdAt, version, deleting")
        if item is None or is_deleting(item):
            return None
        return item["createdAt"]["S"], int(item["version"]["N"])

    def list_collections(self) -> list[CollectionInfo]:
        """Every collection, by name (a Query of the sparse index: no face is read)."""
        infos = [CollectionInfo.from_item(item) for item in self._query(
            IndexName=LIST_INDEX, KeyConditionExpression="kind = :kind",
            ExpressionAttributeValues={":kind": {"S": "collection"}})]
        return sorted(infos, key=lambda info: info.name)

    def delete_collection(self, name: str) -> int:
        """Delete the collection, its faces and every object under its prefix; the number of
        faces deleted. ResourceNotFound if there is no such collection."""
        self._require_bucket()
        check_collection_id(name)
        try:
            self.dynamodb.update_item(
                TableName=self.table, Key=_key(name, COLLECTION_ITEM),
                UpdateExpression="SET deleting = :yes, updatedAt = :now",
                ConditionExpression="attribute_exists(faceId)",
                ExpressionAttributeValues={":yes": {"BOOL": True}, ":now": {"S": _now()}})
        except ClientError as err:
            if _code(err) == "ConditionalCheckFailedException":
                raise ResourceNotFound(f"collection {name!r} not found") from None
            raise self._table_error(err) from None
        faces = [item for item in self._query(
            KeyConditionExpression="#c = :c", ExpressionAttributeNames={"#c": "collection"},
            ExpressionAttributeValues={":c": {"S": name}}, ConsistentRead=True,
            ProjectionExpression="#c, faceId")
            if item["faceId"]["S"] != COLLECTION_ITEM]
        self._delete_objects(self._list_keys(self.collection_prefix(name)))
        self._batch_delete([_key(name, item["faceId"]["S"]) for item in faces])
        self.dynamodb.delete_item(TableName=self.table, Key=_key(name, COLLECTION_ITEM))
        log.info("deleted face collection %s (%d faces)", name, len(faces))
        return len(faces)

    # --- faces -----------------------------------------------------------------------------

    def index_faces(self, name: str, faces: Sequence[tuple[Face, str | None]],
                    image_id: str) -> list[FaceRecord]:
        """Add `faces` (each with its external image id, or None) found in the image whose
        ImageId (`image_id()` of its bytes) is given; their records, in the order given.

        Everything is validated before anything is written: the collection id, each external id,
        the image id, each face's box, confidence and embedding (InvalidParameter). Then the
        embeddings go to S3 and the items to DynamoDB with the collection's new count and
        version, 99 faces to a transaction. ResourceNotFound if the collection does not exist
        (or is being deleted); the objects already written are removed again."""
        self._require_bucket()
        check_collection_id(name)
        if not isinstance(image_id, str) or not IMAGE_ID.fullmatch(image_id):
            raise InvalidParameter(f"image id {image_id!r} is not a sha256 in hex "
                                   "(consumer.faces.collections.image_id of the image's bytes)")
        now = _now()
        prepared: list[tuple[FaceRecord, np.ndarray]] = []
        for number, (face, external_id) in enumerate(faces, 1):
            what = f"face {number} for collection {name!r}"
            if external_id is not None:
                check_external_image_id(external_id)
            vector = unit_embedding(getattr(face, "embedding", None), what)
            box = tuple(float(v) for v in face.box)
            confidence = float(face.confidence)
            if len(box) != 4 or not all(math.isfinite(v) for v in box) \
                    or not 0.0 <= confidence <= 1.0:
                raise InvalidParameter(f"{what}: box must be 4 finite ratios and confidence "
                                       f"0..1, got {box} and {confidence}")
            face_id = str(uuid.uuid4())
            prepared.append((FaceRecord(name, face_id, external_id, image_id, box, confidence,
                                        now, self.embedding_key(name, face_id)), vector))
        if not prepared:
            return []
        self._require_live(name)
        written: list[str] = []
        try:
            for record, vector in prepared:
                self.s3.put_object(Bucket=self.bucket, Key=record.embedding_key,
                                   Body=embedding_bytes(vector),
                                   ContentType="application/octet-stream",
                                   Metadata={"collection": name, "face-id": record.face_id,
                                             "face-model": FACE_MODEL})
                written.append(record.embedding_key)
            records = [record for record, _ in prepared]
            for start in range(0, len(records), TRANSACTION_ITEMS - 1):
                chunk = records[start:start + TRANSACTION_ITEMS - 1]
                self._transact(name, [{"Put": {
                    "TableName": self.table, "Item": record.item(),
                    "ConditionExpression": "attribute_not_exists(faceId)"}}
                    for record in chunk], len(chunk))
                written = written[len(chunk):]  # these are named by items now
        except BaseException:
            try:
                self._delete_objects(written)
            except (ClientError, BotoCoreError) as err:  # strays: removed with the collection
                log.warning("collection %s: %d embedding objects left behind: %s", name,
                            len(written), err)
            raise
        return records

    def list_faces(self, name: str) -> list[FaceRecord]:
        """Every face of the collection (ordered by face id); ResourceNotFound if none."""
        return self.snapshot(name)[1]

    def snapshot(self, name: str) -> tuple[CollectionInfo, list[FaceRecord]]:
        """The collection and its faces from one strongly consistent Query (the collection
        item sorts first, so its version is read no later than any face: a copy built from
        this is never newer than the version it records, only possibly older, which a
        RefreshingIndex corrects by loading again)."""
        check_collection_id(name)
        info, faces = None, []
        for item in self._query(
                KeyConditionExpression="#c = :c", ExpressionAttributeNames={"#c": "collection"},
                ExpressionAttributeValues={":c": {"S": name}}, ConsistentRead=True):
            if item["faceId"]["S"] == COLLECTION_ITEM:
                info = CollectionInfo.from_item(item)
            elif info is not None:
                faces.append(FaceRecord.from_item(item))
        if info is None:
            raise ResourceNotFound(f"collection {name!r} not found")
        if info.deleting:
            raise ResourceNotFound(f"collection {name!r} is being deleted")
        return info, faces

    def delete_faces(self, name: str, face_ids: Iterable[str]) -> list[str]:
        """Delete faces by id; the ids deleted (an id that is not in the collection is left
        out, as Rekognition's DeletedFaces does). ResourceNotFound if there is no collection."""
        self._require_bucket()
        check_collection_id(name)
        wanted = list(dict.fromkeys(check_face_id(face_id) for face_id in face_ids))
        self._require_live(name)
        deleted: list[str] = []
        for start in range(0, len(wanted), TRANSACTION_ITEMS - 1):
            chunk = wanted[start:start + TRANSACTION_ITEMS - 1]
            for attempt in range(1, self._attempts + 1):
                present = self._present(name, chunk)
                if not present:
                    break
                try:
                    self._transact(name, [{"Delete": {
                        "TableName": self.table, "Key": _key(name, face_id),
                        "ConditionExpression": "attribute_exists(faceId)"}}
                        for face_id in present], -len(present))
                except _FaceGone:
                    if attempt == self._attempts:
                        raise FaceCollectionError(
                            f"collection {name!r}: faces kept changing while being deleted "
                            f"({attempt} attempts)") from None
                    continue  # another process deleted one of them: look again
                deleted += present
                self._delete_objects([self.embedding_key(name, f) for f in present])
                break
        return deleted

    # --- helpers ---------------------------------------------------------------------------

    def _require_bucket(self) -> None:
        if not self.bucket:
            raise FaceCollectionError("no bucket for the face embeddings "
                                      "(outputs.s3.bucket, or --bucket)")

    def _collection_item(self, name: str, projection: str | None = None) -> dict | None:
        """The collection's item (strongly consistent), also while it is being deleted."""
        kwargs: dict[str, Any] = {"TableName": self.table, "Key": _key(name, COLLECTION_ITEM),
                                  "ConsistentRead": True}
        if projection:
            kwargs["ProjectionExpression"] = projection
        try:
            return self.dynamodb.get_item(**kwargs).get("Item")
        except ClientError as err:
            raise self._table_error(err) from None

    def _require_live(self, name: str) -> None:
        """ResourceNotFound unless the collection exists and is not being deleted."""
        item = self._collection_item(name, projection="faceId, deleting")
        if item is None:
            raise ResourceNotFound(f"collection {name!r} not found")
        if is_deleting(item):
            raise ResourceNotFound(f"collection {name!r} is being deleted")

    def _transact(self, name: str, items: list[dict], count_change: int) -> None:
        """`items` and the collection's count and version, in one transaction; retried while
        it collides with another transaction on the same items."""
        update = {"Update": {
            "TableName": self.table, "Key": _key(name, COLLECTION_ITEM),
            "UpdateExpression": "ADD faceCount :n, version :one SET updatedAt = :now",
            "ConditionExpression": _LIVE,
            "ExpressionAttributeValues": {":n": {"N": str(count_change)}, ":one": {"N": "1"},
                                          ":now": {"S": _now()}}}}
        for attempt in range(1, self._attempts + 1):
            try:
                self.dynamodb.transact_write_items(TransactItems=[*items, update])
                return
            except ClientError as err:
                if _code(err) != "TransactionCanceledException":
                    raise self._table_error(err) from None
                reasons = [r.get("Code", "None") for r in
                           err.response.get("CancellationReasons", [])]
                if reasons and reasons[-1] == "ConditionalCheckFailed":
                    raise ResourceNotFound(f"collection {name!r} not found") from None
                if "ConditionalCheckFailed" in reasons:
                    raise _FaceGone() from None
                if attempt == self._attempts:
                    raise FaceCollectionError(
                        f"collection {name!r}: transaction still conflicting after "
                        f"{attempt} attempts ({', '.join(reasons) or err})") from None
                time.sleep(self._backoff.delay(attempt))

    def _present(self, name: str, face_ids: list[str]) -> list[str]:
        keys = [_key(name, face_id) for face_id in face_ids]
        found: set[str] = set()
        request: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": True,
                                                "ProjectionExpression": "faceId"}}
        attempt = 0
        while request:
            response = self.dynamodb.batch_get_item(RequestItems=request)
            found.update(item["faceId"]["S"] for item in response["Responses"].get(self.table, []))
            request = response.get("UnprocessedKeys") or {}
            if request:
                attempt += 1
                time.sleep(self._backoff.delay(attempt))
        return [face_id for face_id in face_ids if face_id in found]

    def _query(self, **kwargs) -> Iterable[dict[str, Any]]:
        kwargs["TableName"] = self.table
        while True:
            try:
                page = self.dynamodb.query(**kwargs)
            except ClientError as err:
                raise self._table_error(err) from None
            yield from page.get("Items", [])
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _batch_delete(self, keys: list[dict]) -> None:
        for start in range(0, len(keys), 25):
            request = {self.table: [{"DeleteRequest": {"Key": key}}
                                    for key in keys[start:start + 25]]}
            attempt = 0
            while request:
                request = self.dynamodb.batch_write_item(
                    RequestItems=request).get("UnprocessedItems") or {}
                if request:
                    attempt += 1
                    time.sleep(self._backoff.delay(attempt))

    def _list_keys(self, prefix: str) -> list[str]:
        keys = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                       Prefix=prefix):
            keys += [obj["Key"] for obj in page.get("Contents", [])]
        return keys

    def _delete_objects(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start:start + 1000]
            response = self.s3.delete_objects(Bucket=self.bucket, Delete={
                "Objects": [{"Key": key} for key in chunk], "Quiet": True})
            for error in response.get("Errors", []):
                log.warning("could not delete s3://%s/%s: %s", self.bucket, error.get("Key"),
                            error.get("Message"))

    def _table_error(self, err: ClientError) -> Exception:
        if _code(err) == "ResourceNotFoundException":
            return ResourceNotFound(f"face table {self.table!r} not found (ensure_table, or "
                                    "`faces create-collection`, creates it)")
        return err


class _FaceGone(Exception):
    """A face of a DeleteFaces transaction was deleted by someone else meanwhile."""


def _key(name: str, face_id: str) -> dict[str, Any]:
    return {"collection": {"S": name}, "faceId": {"S": face_id}}


def _code(err: ClientError) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
