"""`kvs-analytics faces`: face collections shared by the fleet, managed as Rekognition's are
(create-collection, index, list, delete, delete-collection, search)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_TABLE = "kvs-analytics-faces"  # = consumer.faces.collections.DEFAULT_TABLE (this
# module imports only the standard library until a command runs)

FACES_EPILOG = f"""\
A collection is a named set of faces, each a 128-number embedding (dlib's face recogniser) with
the ExternalImageId you give it (a person's id, a badge number: 1-255 of a-z A-Z 0-9 _ . - :).
Every consumer of the fleet searches the same collections: they are kept in a DynamoDB table
(--table, default {DEFAULT_TABLE}; one item per collection and per face) and S3 (one
{{prefix}}/faces/collection=NAME/FACE_ID.npy per face, in outputs.s3.bucket under
outputs.s3.prefix). A consumer searching them (consumer.faces.search.RefreshingIndex) sees a
face indexed or deleted here within about a minute, without a restart. Collection names: 1-255
of a-z A-Z 0-9 _ . -

Similarity is on Rekognition's 0-100 scale: 80 (the default threshold) is dlib's own
same-person rule (a raw embedding distance of 0.6); 90 is stricter. See consumer/faces/search.py.

Settings come from the consumer's --config (aws.region, aws.endpoints.s3 and .dynamodb,
outputs.s3.bucket and .prefix, processing.pose.models_dir) and its KVSA_ environment overrides;
the options below override them. Every command takes --json: one JSON object per line.

exit status: 0 done; 1 the operation failed (no such collection, one exists already, no face in
the image, a face id not found, AWS unreachable or refusing); 2 bad arguments or configuration
(a name Rekognition would refuse, an unreadable image, no bucket).

examples:
  kvs-analytics faces create-collection staff --config consumer.yaml
  kvs-analytics faces index --collection staff --image alice.jpg --external-id alice \\
      --config consumer.yaml
  kvs-analytics faces index --collection visitors --image group.jpg --all --config consumer.yaml
  kvs-analytics faces list --config consumer.yaml                   # the collections
  kvs-analytics faces list --collection staff --json --config consumer.yaml | jq .face_id
  kvs-analytics faces search --collection staff --image door.jpg --threshold 90 \\
      --config consumer.yaml
  kvs-analytics faces delete --collection staff --face-id 0b6f...-... --config consumer.yaml
  kvs-analytics faces delete-collection staff --config consumer.yaml
  # the local stack: its configuration has the endpoints, the bucket and the models folder
  python -m infra.local --create-resources --write-config local.yaml --models-dir ../shared/models
  kvs-analytics faces create-collection staff --config local.yaml"""

INDEX_EPILOG = """\
The largest face of the image is indexed (each face with --all), with --external-id when given.
Its ImageId is the sha256 of the file's bytes: the same file indexed twice shows the same
ImageId in `list`. The model files are looked up in --models-dir (the face detector
face_detector.tflite; dlib's recogniser comes with the face-recognition-models package).

exit status: 0 indexed; 1 no face found in the image, or no such collection; 2 bad arguments."""

SEARCH_EPILOG = """\
Every face found in the image is searched (largest first); for each, its best --max-matches
faces of the collection(s) with similarity >= --threshold, best first. A face without a match
is not an error (exit 0, `matches: none`; in JSON an empty list).

exit status: 0 searched; 1 no face found in the image, or no such collection; 2 bad arguments."""


def add_faces(subparsers) -> None:
    parser = subparsers.add_parser(
        "faces", help="face collections shared by the fleet: create, index, list, search",
        description="Manage the face collections that the consumers search (as Amazon "
                    "Rekognition's collections): create one, index the faces of an image into "
                    "it, list, delete, and search an image's faces against it.",
        epilog=FACES_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="faces_command", metavar="COMMAND", required=True)

    create = _command(commands, "create-collection", "create an empty collection",
                      "Create an empty collection (and the table, the first time).",
                      _run_create)
    create.add_argument("name", metavar="NAME", help="the collection's name")

    index = _command(commands, "index", "index the face(s) of an image into a collection",
                     "Detect the faces of an image and add the largest (or all) to a "
                     "collection.", _run_index, INDEX_EPILOG)
    index.add_argument("--collection", required=True, metavar="NAME")
    index.add_argument("--image", required=True, type=Path, metavar="FILE",
                       help="a JPEG, PNG or other image PIL reads")
    index.add_argument("--external-id", metavar="ID",
                       help="who the face is (Rekognition's ExternalImageId), returned with "
                            "every match")
    index.add_argument("--all", action="store_true",
                       help="index every face found, not only the largest")
    _model_options(index)

    listing = _command(commands, "list", "list the collections, or the faces of one",
                       "List the collections (faces, version, created), or with --collection "
                       "the faces of one.", _run_list)
    listing.add_argument("--collection", metavar="NAME", help="list this collection's faces")

    delete = _command(commands, "delete", "delete faces from a collection by face id",
                      "Delete faces from a collection (ids as `index` and `list` print them).",
                      _run_delete)
    delete.add_argument("--collection", required=True, metavar="NAME")
    delete.add_argument("--face-id", required=True, nargs="+", metavar="ID",
                        help="one or more face ids")

    drop = _command(commands, "delete-collection", "delete a collection and all its faces",
                    "Delete a collection: its faces' items and embedding objects, then the "
                    "collection.", _run_delete_collection)
    drop.add_argument("name", metavar="NAME", help="the collection's name")

    search = _command(commands, "search", "search the faces of an image in collection(s)",
                      "Detect the faces of an image and find each one's best matches in one "
                      "or more collections.", _run_search, SEARCH_EPILOG)
    search.add_argument("--collection", required=True, action="append", metavar="NAME",
                        help="the collection to search (repeat to search several)")
    search.add_argument("--image", required=True, type=Path, metavar="FILE")
    search.add_argument("--threshold", type=float, default=80.0, metavar="0-100",
                        help="least similarity of a match (default %(default)g: dlib's "
                             "same-person rule)")
    search.add_argument("--max-matches", type=int, default=5, metavar="N",
                        help="matches per face at most (default %(default)s)")
    _model_options(search)


def _command(commands, name: str, help_text: str, description: str, handler,
             epilog: str | None = None) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=description, epilog=epilog,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE",
                        help="the consumer's configuration (aws.region, aws.endpoints, "
                             "outputs.s3.bucket and prefix, processing.pose.models_dir)")
    parser.add_argument("--bucket", help="the bucket of the embeddings (default: "
                                         "outputs.s3.bucket)")
    parser.add_argument("--table", help=f"the DynamoDB table (default {DEFAULT_TABLE})")
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="S3 and DynamoDB endpoint, e.g. the local stack's (default: "
                             "aws.endpoints.s3 and .dynamodb, else AWS)")
    parser.add_argument("--region", help="AWS region (default: aws.region, the usual chain)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=lambda args: _main(args, handler, name))
    return parser


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, metavar="DIR",
                        help="where the face models are (default: processing.pose.models_dir)")
    parser.add_argument("--min-confidence", type=float, default=0.5, metavar="0-1",
                        help="least detector confidence of a face (default %(default)s)")


class _Usage(Exception):
    """Bad arguments or configuration: exit status 2."""


class _Failed(Exception):
    """The operation failed: exit status 1."""


def _main(args: argparse.Namespace, handler, name: str) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.cloud.aws import AwsSetupError
    from consumer.faces.records import FaceCollectionError, InvalidParameter
    from processors.settings import ConfigError
    try:
        handler(args, _Context(args))
    except (_Usage, InvalidParameter, ConfigError, AwsSetupError) as err:
        print(f"faces {name}: {err}", file=sys.stderr)
        return 2
    except (_Failed, FaceCollectionError) as err:
        print(f"faces {name}: {err}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as err:
        print(f"faces {name}: {err}", file=sys.stderr)
        return 1
    return 0


class _Context:
    """The configuration and the overrides of one command; the store made on first use."""

    def __init__(self, args: argparse.Namespace):
        from consumer.config import BUCKET, load_config
        self.args = args
        self.config = load_config(args.config, live=False)
        s3 = self.config.outputs.s3
        self.bucket = args.bucket or (s3.bucket if s3 else None)
        if args.bucket is not None and not BUCKET.fullmatch(args.bucket):
            raise _Usage(f"--bucket {args.bucket!r} is not a valid S3 bucket name")
        self.prefix = s3.prefix if s3 else ""
        self.table = args.table or DEFAULT_TABLE
        self._store = None

    def store(self, needs_bucket: bool = True):
        from consumer.cloud.aws import AwsContext
        from consumer.faces.collections import FaceCollections
        if needs_bucket and not self.bucket:
            raise _Usage("no bucket for the embeddings: pass --bucket, or set "
                         "outputs.s3.bucket in --config")
        if self._store is None:
            endpoints, args = self.config.aws.endpoints, self.args
            dynamodb_url = args.endpoint_url or endpoints.get("dynamodb")
            aws = AwsContext(dynamodb_url, args.region or self.config.aws.region)
            self._store = FaceCollections(
                aws.client("s3", endpoint_url=args.endpoint_url or endpoints.get("s3")),
                aws.client("dynamodb"), self.bucket, self.prefix, self.table)
        return self._store

    def analyzer(self):
        from processors.faces import FaceAnalyzer
        args = self.args
        if not 0.0 <= args.min_confidence <= 1.0:
            raise _Usage(f"--min-confidence {args.min_confidence} is not within 0..1")
        models_dir = (args.models_dir or self.config.processing.pose.models_dir).expanduser()
        try:
            return FaceAnalyzer(models_dir, min_confidence=args.min_confidence, embed=True)
        except (OSError, ValueError, ImportError) as err:  # a model file or the extra missing
            raise _Usage(f"the face models (--models-dir {models_dir}): {err}") from None


def _read_image(path: Path):
    """(RGB array, the file's bytes); _Usage if it cannot be read as an image."""
    import io

    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            rgb = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise _Usage(f"--image {path}: cannot read it as an image: "
                     f"{getattr(err, 'strerror', None) or err}") from None
    return rgb, data


def _faces_of(context: _Context, path: Path, rgb) -> list:
    analyzer = context.analyzer()
    try:
        faces = analyzer.faces(rgb)
    finally:
        analyzer.close()
    if not faces:
        raise _Failed(f"no face found in {path} (at --min-confidence "
                      f"{context.args.min_confidence})")
    return faces


def _run_create(args: argparse.Namespace, context: _Context) -> None:
    store = context.store(needs_bucket=False)
    store.ensure_table()
    info = store.create_collection(args.name)
    if args.json:
        _json(info.to_json())
    else:
        print(f"created collection {info.name} (table {store.table}, model {info.face_model})")


def _run_index(args: argparse.Namespace, context: _Context) -> None:
    from consumer.faces.records import check_collection_id, check_external_image_id, image_id
    check_collection_id(args.collection)
    if args.external_id is not None:
        check_external_image_id(args.external_id)
    rgb, data = _read_image(args.image)
    store = context.store()
    store.describe(args.collection)  # before the model: a wrong name fails at once
    faces = _faces_of(context, args.image, rgb)
    chosen = faces if args.all else faces[:1]
    records = store.index_faces(args.collection, [(face, args.external_id) for face in chosen],
                                image_id(data))
    for record in records:
        if args.json:
            _json(record.to_json())
        else:
            print(f"indexed {record.face_id}  external id {record.external_image_id or '-'}  "
                  f"{_box(record.box)}  confidence {record.confidence:.3f}")
    if not args.json:
        left = len(faces) - len(chosen)
        more = f"; {left} more face{'s' if left != 1 else ''} in the image (--all indexes " \
               f"every one)" if left else ""
        print(f"{len(records)} face{'s' if len(records) != 1 else ''} indexed into "
              f"{args.collection}{more}")


def _run_list(args: argparse.Namespace, context: _Context) -> None:
    store = context.store(needs_bucket=False)
    if args.collection is None:
        infos = store.list_collections()
        if args.json:
            for info in infos:
                _json(info.to_json())
            return
        _table(["collection", "faces", "version", "created", "status"],
               [[i.name, str(i.face_count), str(i.version), i.created_at, i.status]
                for i in infos])
        return
    faces = store.list_faces(args.collection)
    if args.json:
        for record in faces:
            _json(record.to_json())
        return
    _table(["face_id", "external_image_id", "image_id", "confidence", "box", "created"],
           [[f.face_id, f.external_image_id or "-", f.image_id[:12], f"{f.confidence:.3f}",
             _box(f.box), f.created_at] for f in faces])


def _run_delete(args: argparse.Namespace, context: _Context) -> None:
    from consumer.faces.records import check_face_id
    for face_id in args.face_id:
        check_face_id(face_id)
    deleted = context.store().delete_faces(args.collection, args.face_id)
    missing = [face_id for face_id in dict.fromkeys(args.face_id) if face_id not in deleted]
    if args.json:
        _json({"collection": args.collection, "deleted": deleted, "not_found": missing})
    else:
        print(f"{len(deleted)} face{'s' if len(deleted) != 1 else ''} deleted from "
              f"{args.collection}")
    if missing:
        raise _Failed(f"not in collection {args.collection}: {', '.join(missing)}")


def _run_delete_collection(args: argparse.Namespace, context: _Context) -> None:
    count = context.store().delete_collection(args.name)
    if args.json:
        _json({"collection": args.name, "deleted_faces": count})
    else:
        print(f"deleted collection {args.name} ({count} face{'s' if count != 1 else ''})")


def _run_search(args: argparse.Namespace, context: _Context) -> None:
    import numpy as np

    from consumer.faces.records import check_collection_id
    from consumer.faces.search import CollectionIndex
    for name in args.collection:
        check_collection_id(name)
    if not 0.0 <= args.threshold <= 100.0:
        raise _Usage(f"--threshold {args.threshold:g} is not within 0..100")
    if args.max_matches < 1:
        raise _Usage(f"--max-matches {args.max_matches} must be 1 or more")
    rgb, _data = _read_image(args.image)
    index = CollectionIndex.load(context.store(), args.collection)
    faces = _faces_of(context, args.image, rgb)
    results = index.search(np.stack([face.embedding for face in faces]), args.threshold,
                           args.max_matches)
    for number, (face, matches) in enumerate(zip(faces, results, strict=True), 1):
        if args.json:
            left, top, width, height = (float(v) for v in face.box)
            _json({"face": number, "box": {"left": left, "top": top, "width": width,
                                           "height": height},
                   "confidence": float(face.confidence),
                   "matches": [match.to_json() for match in matches]})
            continue
        print(f"face {number}  {_box(face.box)}  confidence {face.confidence:.3f}: "
              f"{len(matches) or 'no'} match{'es' if len(matches) != 1 else ''}")
        for match in matches:
            print(f"  {match.similarity:6.2f}  {match.external_image_id or '-'}  "
                  f"{match.face_id}  ({match.collection})")
    if not args.json:
        print(f"{len(faces)} face{'s' if len(faces) != 1 else ''} searched in "
              f"{', '.join(args.collection)} ({len(index)} faces, threshold {args.threshold:g})")


def _box(box) -> str:
    left, top, width, height = (float(v) for v in box)
    return f"box {left:.3f},{top:.3f} {width:.3f}x{height:.3f}"


def _json(value) -> None:
    print(json.dumps(value))


def _table(columns: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    print(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
