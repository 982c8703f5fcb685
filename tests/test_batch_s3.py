"""Batch mode to S3 on moto's server (the local stack): every output uploaded with the video's
content hash in its metadata, the manifest and per-video summaries under the prefix, a bucket
alone as the destination, and a second machine (a fresh folder) skipping what the bucket has."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import jsonschema
import pytest

from consumer.formats import event_records
from consumer.formats.records import load_schema
from tests.batch_helpers import (
    entries_by_path,
    good_and_bad_videos,
    in_process,
    manifest,
    records,
    write_config,
)

FRAME_SCHEMA = load_schema()
EVENT_SCHEMA = json.loads(event_records.SCHEMA_PATH.read_text())


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return good_and_bad_videos(tmp_path_factory.mktemp("videos"))


@pytest.fixture(scope="module")
def stack():
    from infra.local.stack import LocalStack
    with LocalStack() as local:
        yield local


def _printed_manifest_exists(text: str, s3, bucket: str) -> bool:
    """The manifest the summary line names (`...; manifest: WHERE`) is there to be read."""
    [where] = [line.rsplit("manifest: ", 1)[1] for line in text.splitlines()
               if line.startswith("batch: ") and "manifest: " in line]
    if where.startswith("s3://"):
        named_bucket, _, key = where[len("s3://"):].partition("/")
        s3.head_object(Bucket=named_bucket, Key=key)
        return named_bucket == bucket
    return Path(where).is_file()


def _s3_config(path: Path, stack) -> Path:
    return write_config(path, aws={"region": stack.region,
                                   "endpoints": {"s3": stack.endpoints["s3"]}})


def test_uploads_to_s3_with_metadata_and_skips_what_the_bucket_has(stack, videos, tmp_path):
    s3 = stack.client("s3")
    bucket = f"batch-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    config = _s3_config(tmp_path / "s3.yaml", stack)
    files = [str(videos / "a.mp4"), str(videos / "sub" / "b.mp4")]
    out = tmp_path / "out"
    rc, text, err = in_process(*files, "--output-dir", str(out), "--s3-bucket", bucket,
                                "--s3-prefix", "pose-data", "--preset", "development",
                                "--config", str(config))
    assert rc == 0, (text, err)
    entries = entries_by_path(manifest(out))
    assert sorted(entries) == ["a.mp4", "b.mp4"]
    for entry in entries.values():
        assert entry["status"] == "done" and entry["uploaded"] is True, entry
        for output in entry["outputs"]:
            key = output["key"]
            assert key.startswith("pose-data/"), key
            head = s3.head_object(Bucket=bucket, Key=key)
            assert head["ContentLength"] == output["bytes"] == (out / key).stat().st_size
            assert head["Metadata"]["source-sha256"] == entry["sha256"]
        summary = s3.head_object(Bucket=bucket, Key=f"pose-data/videos/{entry['video_id']}.json")
        assert summary["Metadata"]["source-sha256"] == entry["sha256"]
        # records name where the JPEGs are in the bucket
        lines = records(out / f"pose-data/records/stream={entry['video_id']}/records.jsonl")
        frames = [r for r in lines if r["RecordType"] == "Frame"]
        assert len(frames) == entry["frames_analysed"] > 0
        for record in lines:
            jsonschema.validate(record, FRAME_SCHEMA if record["RecordType"] == "Frame"
                                else EVENT_SCHEMA)
        for record in frames:
            [location] = record["Frames"]  # development: a JPEG of every analysed frame
            assert set(location) <= {"Bucket", "Key", "Annotated"}, location
            assert location["Bucket"] == bucket and location["Key"].startswith("pose-data/")
            s3.head_object(Bucket=bucket, Key=location["Key"])
    in_bucket = json.loads(s3.get_object(Bucket=bucket, Key="pose-data/manifest.json")
                           ["Body"].read())
    assert {e["path"]: e["status"] for e in in_bucket["videos"].values()} == {
        "a.mp4": "done", "b.mp4": "done"}

    # another machine (a fresh folder), the same bucket: done before
    fresh = tmp_path / "fresh"
    rc, text, err = in_process(*files, "--output-dir", str(fresh), "--s3-bucket", bucket,
                                "--s3-prefix", "pose-data", "--preset", "development",
                                "--config", str(config))
    assert rc == 0, (text, err)
    assert "batch: 0 done, 2 skipped, 0 failed" in text, text
    assert "skipped  a.mp4: done before" in text and "skipped  b.mp4: done before" in text
    assert not list(fresh.rglob("*.jpg")) and not list(fresh.rglob("*.parquet"))
    assert _printed_manifest_exists(text, s3, bucket), text


def test_a_bucket_alone_is_enough_and_skip_upload_needs_a_folder(stack, videos, tmp_path):
    s3 = stack.client("s3")
    bucket = f"batch-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    config = _s3_config(tmp_path / "s3.yaml", stack)
    rc, text, err = in_process(str(videos / "a.mp4"), "--s3-bucket", bucket,
                                "--s3-prefix", "only", "--preset", "development",
                                "--config", str(config))
    assert rc == 0, (text, err)
    data = json.loads(s3.get_object(Bucket=bucket, Key="only/manifest.json")["Body"].read())
    [entry] = data["videos"].values()
    assert entry["status"] == "done" and entry["path"] == "a.mp4", entry
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    for output in entry["outputs"]:
        assert listed[output["key"]] == output["bytes"], output
    assert f"only/videos/{entry['video_id']}.json" in listed
    assert any(k.endswith(".parquet") for k in listed) and any(k.endswith(".jpg") for k in listed)
    assert _printed_manifest_exists(text, s3, bucket), text  # not the deleted staging folder

    rc, text, err = in_process(str(videos / "a.mp4"), "--s3-bucket", bucket, "--skip-upload",
                                "--config", str(config))
    assert rc == 2, (text, err)
    assert "--output-dir" in err and "--skip-upload" in err, err


# --- 6. two worker processes -----------------------------------------------------------------
