"""Batch mode (`python -m consumer batch`, `kvs_analytics.BatchPipeline`) end to end: real short
videos with a person (cut from vogels_330.mkv and encoded with PyAV), files that are not videos,
the real MediaPipe pose model from ../shared/models, moto's S3 server for uploads. Each test
checks what a user would look at: the exit status, what is printed, manifest.json, and the
outputs themselves (records against their JSON Schema, Parquet pose files, JPEGs, S3 objects).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
from PIL import Image

from consumer.formats import event_records
from consumer.formats.records import load_schema
from kvs_analytics import BatchPipeline, batch_config, read_pose_sequence
from tests.batch_helpers import (
    REPO,
    batch_command,
    clean_env,
    entries_by_path,
    good_and_bad_videos,
    in_process,
    make_video,
    manifest,
    output_mtimes,
    records,
    run_batch,
    write_config,
)
from tests.pose_helpers import POSE_MODEL

GOOD = ("a.mp4", "sub/b.mp4", "old.avi")  # old.avi: MPEG-4 Part 2, re-encoded to H.264
BAD = {"empty.mp4": "empty file", "notes.mp4": "not a video", "sub/sound.mp4": "no video"}
FRAME_SCHEMA = load_schema()
EVENT_SCHEMA = json.loads(event_records.SCHEMA_PATH.read_text())


# --- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("config") / "batch.yaml")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return good_and_bad_videos(tmp_path_factory.mktemp("videos"))


class Run:
    def __init__(self, out: Path, done: subprocess.CompletedProcess):
        self.out = out
        self.rc = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr

    def __repr__(self) -> str:  # shown when an assertion fails
        return f"rc={self.rc}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"


@pytest.fixture(scope="module")
def first_run(videos, config_file, tmp_path_factory) -> Run:
    """The folder of good and bad files to a local folder, one worker, JPEGs of every frame."""
    out = tmp_path_factory.mktemp("first") / "out"
    done = run_batch("--video-dir", str(videos), "--output-dir", str(out),
                     "--preset", "development", "--config", str(config_file))
    return Run(out, done)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _record_ids(root: Path, entry: dict) -> list[str]:
    key = next(o["key"] for o in entry["outputs"] if o["key"].endswith("records.jsonl"))
    return [r["RecordId"] for r in records(root / key)]


def _keys(entry: dict) -> set[str]:
    return {o["key"] for o in entry["outputs"]}


def _poses_match_records(root: Path, entry: dict) -> None:
    """The video's Parquet pose files load to (rows, 33, 5), one row a person a frame (or one
    for a frame with nobody), row for row what its records say: none missing, none twice."""
    keys = _keys(entry)
    poses = sorted(k for k in keys if k.endswith(".parquet"))
    assert poses, keys
    frames = [r for r in records(root / f"records/stream={entry['video_id']}/records.jsonl")
              if r["RecordType"] == "Frame"]
    rows = []
    for key in poses:
        sequence = read_pose_sequence((root / key).read_bytes())
        assert sequence.landmarks.shape == (sequence.table.num_rows, 33, 5)
        assert set(sequence.table.column("stream_name").to_pylist()) == {entry["video_id"]}
        rows += zip(sequence.table.column("fragment_number").to_pylist(),
                    sequence.table.column("frame_index").to_pylist(),
                    sequence.table.column("person_index").to_pylist())
    expected = []
    for record in frames:
        where = record["InputInformation"]["File"]
        expected += [(where["FragmentNumber"], where["FrameIndex"], i)
                     for i in range(len(record["Persons"]))] or [
            (where["FragmentNumber"], where["FrameIndex"], -1)]
    assert sorted(rows) == sorted(expected)


# --- 1. a folder of good and bad files to a local folder -------------------------------------

def test_a_folder_of_good_and_bad_files_gives_outputs_and_a_manifest(first_run, videos):
    run = first_run
    assert run.rc == 1, run  # some files failed
    assert "batch: 3 done, 0 skipped, 3 failed" in run.stdout, run
    data = manifest(run.out)
    entries = entries_by_path(data)
    assert sorted(entries) == sorted([*GOOD, *BAD]), entries.keys()
    assert len(data["videos"]) == 6
    for name, why in BAD.items():
        entry = entries[name]
        assert entry["status"] == "failed", entry
        assert why in entry["error"], entry
        assert f"failed   {name}: {entry['error']}" in run.stdout
    for name in GOOD:
        entry = entries[name]
        path = videos / name
        sha = _sha256(path)
        assert entry["status"] == "done", entry
        assert entry["error"] is None
        assert entry["sha256"] == sha and data["videos"][sha] == entry  # keyed by content
        assert entry["size"] == path.stat().st_size
        assert entry["video_id"] == f"{Path(name).stem}-{sha[:12]}"
        assert entry["frames_read"] == 30 and entry["frames_analysed"] > 0
        assert entry["attempts"] == 1
        for output in entry["outputs"]:
            file = run.out / output["key"]
            assert file.is_file(), output
            assert file.stat().st_size == output["bytes"], output
            assert f"stream={entry['video_id']}/" in output["key"]
        assert entry["output_bytes"] == sum(o["bytes"] for o in entry["outputs"])
    assert entries["old.avi"]["codec"] == "mpeg4"  # re-encoded, and done
    assert entries["a.mp4"]["codec"] == "h264"


def test_records_validate_and_name_the_file_jpegs_decode_poses_match(first_run, videos):
    run = first_run
    entries = entries_by_path(manifest(run.out))
    total_persons = 0
    for name in GOOD:
        entry = entries[name]
        vid, sha = entry["video_id"], entry["sha256"]
        keys = _keys(entry)
        records_key = f"records/stream={vid}/records.jsonl"
        assert records_key in keys
        lines = records(run.out / records_key)
        frames = [r for r in lines if r["RecordType"] == "Frame"]
        for record in lines:
            jsonschema.validate(record, FRAME_SCHEMA if record["RecordType"] == "Frame"
                                else EVENT_SCHEMA)
        assert len(frames) == entry["frames_analysed"]
        assert len({r["RecordId"] for r in lines}) == len(lines)
        persons = 0
        for record in frames:
            where = record["InputInformation"]["File"]
            assert (where["Path"], where["Sha256"], where["VideoId"]) == (name, sha, vid)
            assert 0 <= where["OffsetInFileSeconds"] <= 3.0
            persons += len(record["Persons"])
            # development: a JPEG of every analysed frame, named by its path in the folder
            [jpeg] = record["Frames"]
            assert set(jpeg) <= {"Path", "Annotated"} and jpeg["Path"] in keys, jpeg
            with Image.open(run.out / jpeg["Path"]) as image:
                image.load()
                assert image.format == "JPEG"
                assert image.size == (record["Frame"]["Width"], record["Frame"]["Height"])
        assert persons == entry["persons"]
        total_persons += persons
        _poses_match_records(run.out, entry)
    assert total_persons > 0  # the speaker is found


# --- 2. a second run skips; --force redoes ---------------------------------------------------

def test_a_second_run_skips_what_is_done_and_force_redoes_it(first_run, videos, config_file,
                                                              tmp_path):
    out = tmp_path / "out"
    shutil.copytree(first_run.out, out)  # modification times kept
    before = entries_by_path(manifest(out))
    mtimes = {name: output_mtimes(out, before[name]) for name in GOOD}
    args = ("--video-dir", str(videos), "--output-dir", str(out), "--preset", "development",
            "--config", str(config_file))

    again = Run(out, run_batch(*args))
    assert again.rc == 1, again  # only because the bad files are tried, and fail, again
    assert "batch: 0 done, 3 skipped, 3 failed" in again.stdout, again
    for name in GOOD:
        assert f"skipped  {name}: done before (manifest)" in again.stdout, again
    after = entries_by_path(manifest(out))
    for name in GOOD:
        assert after[name] == before[name]  # untouched, attempts still 1
        assert output_mtimes(out, after[name]) == mtimes[name]  # nothing rewritten
    for name, why in BAD.items():
        assert after[name]["status"] == "failed" and why in after[name]["error"]
        assert f"failed   {name}:" in again.stdout

    forced = Run(out, run_batch(*args, "--force"))
    assert forced.rc == 1, forced
    assert "batch: 3 done, 0 skipped, 3 failed" in forced.stdout, forced
    redone = entries_by_path(manifest(out))
    for name in GOOD:
        entry = redone[name]
        assert entry["status"] == "done" and entry["attempts"] == 2
        assert _keys(entry) == _keys(before[name])
        now = output_mtimes(out, entry)
        assert all(now[key] != mtimes[name][key] for key in now), (now, mtimes[name])
        ids = _record_ids(out, entry)
        assert len(ids) == len(set(ids)) == len(_record_ids(first_run.out, before[name]))
        assert sorted(ids) == sorted(_record_ids(first_run.out, before[name]))
        _poses_match_records(out, entry)  # pose files rewritten, not added to


# --- 3. --dry-run ----------------------------------------------------------------------------

def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


def test_dry_run_writes_nothing_and_says_what_it_would_do(first_run, videos, config_file,
                                                          tmp_path):
    fresh = tmp_path / "never"
    rc, text, err = in_process("--video-dir", str(videos), "--output-dir", str(fresh),
                                "--preset", "development", "--config", str(config_file),
                                "--dry-run")
    assert rc == 0, (text, err)
    assert not fresh.exists()
    lines = [line for line in text.splitlines() if not line.startswith("dry run:")]
    assert len(lines) == 6, text  # one line a file
    for name in GOOD:
        [line] = [line for line in lines if f" {name}:" in line]
        assert line.startswith("analyse") and "3.0 s of video" in line and "about" in line
    for name, why in BAD.items():
        [line] = [line for line in lines if f" {name}:" in line]
        assert line.startswith("fail") and why in line, line
    assert "dry run: 3 to analyse" in text and "3 that cannot be read; nothing written" in text

    done = tmp_path / "done"
    shutil.copytree(first_run.out, done)
    before = _listing(done)
    rc, text, err = in_process("--video-dir", str(videos), "--output-dir", str(done),
                                "--preset", "development", "--config", str(config_file),
                                "--dry-run")
    assert rc == 0, (text, err)
    assert _listing(done) == before  # nothing written, not even native.log
    for name in GOOD:
        assert f"skip     {name}: done before (manifest)" in text, text
    assert "dry run: 0 to analyse" in text and "3 to skip" in text


# --- 4. an interrupted run resumes -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_run_resumes_where_it_stopped(config_file, tmp_path, signum):
    folder = tmp_path / "videos"
    names = [f"clip{i}.mp4" for i in range(4)]
    for i, name in enumerate(names):  # the first short; seconds of work left after it is done
        make_video(folder / name, seconds=2 if i == 0 else 10, offset=25 * i)
    out = tmp_path / "out"
    # every frame analysed (10 a second): time to interrupt after the first, even under load
    args = ("--video-dir", str(folder), "--output-dir", str(out), "--config", str(config_file),
            "--fps", "10", "--workers", "1")
    process = subprocess.Popen(batch_command(*args), cwd=REPO, env=clean_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        first_done = None
        while first_done is None and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            with contextlib.suppress(FileNotFoundError, ValueError):
                done = [e for e in manifest(out)["videos"].values() if e["status"] == "done"]
                first_done = done[0] if done else None
        assert first_done is not None, "no video was done before the run ended"
        assert process.poll() is None, "the run ended before it could be interrupted"
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1, (stdout, stderr)
    assert "interrupted (run the same command again to resume)" in stdout, stdout
    stopped = entries_by_path(manifest(out))
    done = [n for n in names if stopped.get(n, {}).get("status") == "done"]
    assert done and len(done) < len(names), stopped
    for name in names:
        if name not in done:
            assert name not in stopped or stopped[name]["status"] == "interrupted", stopped
    assert any(stopped.get(n, {}).get("status") == "interrupted" for n in names), stopped
    mtimes = {name: output_mtimes(out, stopped[name]) for name in done}

    again = Run(out, run_batch(*args))
    assert again.rc == 0, again
    assert f"batch: {len(names) - len(done)} done, {len(done)} skipped, 0 failed" in again.stdout
    final = entries_by_path(manifest(out))
    for name in names:
        entry = final[name]
        frames = 20 if name == names[0] else 100  # 10 a second
        assert entry["status"] == "done", entry
        assert entry["frames_read"] == frames and entry["frames_analysed"] == frames
        ids = _record_ids(out, entry)
        assert len(ids) == len(set(ids)) == frames  # every frame's record, once
        _poses_match_records(out, entry)  # and its poses, once
        if name in done:
            assert entry == stopped[name]
            assert output_mtimes(out, entry) == mtimes[name]
        else:
            for output in entry["outputs"]:
                assert (out / output["key"]).stat().st_size == output["bytes"]
    interrupted = [n for n in names if stopped.get(n, {}).get("status") == "interrupted"]
    assert all(final[n]["attempts"] == 2 for n in interrupted)


# --- 5. to S3 (moto's server) ----------------------------------------------------------------

@pytest.mark.slow
def test_two_worker_processes_give_the_same_outputs_as_one(first_run, videos, config_file,
                                                           tmp_path):
    out = tmp_path / "out"
    run = Run(out, run_batch("--video-dir", str(videos), "--output-dir", str(out),
                             "--preset", "development", "--config", str(config_file),
                             "--workers", "2", timeout=180))
    assert run.rc == 1, run  # the bad files
    assert "batch: 3 done, 0 skipped, 3 failed" in run.stdout, run
    assert "with 2 workers" in run.stdout
    one, two = entries_by_path(manifest(first_run.out)), entries_by_path(manifest(out))
    for name in GOOD:
        assert two[name]["status"] == "done", two[name]
        assert two[name]["worker"] in (1, 2)
        assert _keys(two[name]) == _keys(one[name])
        assert sorted(_record_ids(out, two[name])) == sorted(_record_ids(first_run.out,
                                                                         one[name]))
        for output in two[name]["outputs"]:
            assert (out / output["key"]).stat().st_size == output["bytes"]
        _poses_match_records(out, two[name])


# --- 7. the Python API -----------------------------------------------------------------------

def test_the_python_api_example_runs_and_counts(videos, config_file, tmp_path):
    config = batch_config(config_file, preset="development")
    out = tmp_path / "out"
    inputs = [str(videos / "a.mp4"), str(videos / "sub" / "b.mp4"), str(videos / "notes.mp4")]
    result = BatchPipeline(config, output_dir=out).run(inputs)
    assert (result.processed, result.skipped, result.failed) == (2, 0, 1)
    assert not result.ok and not result.interrupted
    statuses = {Path(v.path).name: (v.status, v.reason) for v in result.videos}
    assert statuses["a.mp4"] == ("done", None) and statuses["b.mp4"] == ("done", None)
    assert statuses["notes.mp4"][0] == "failed" and "not a video" in statuses["notes.mp4"][1]
    poses = sorted(out.glob("poses/stream=a-*/**/*.parquet"))
    assert poses
    for pose in poses:
        sequence = read_pose_sequence(pose.read_bytes())
        assert sequence.landmarks.shape == (sequence.table.num_rows, 33, 5)
        assert sequence.table.num_rows >= 1
    assert result.manifest == str(out / "manifest.json")

    again = BatchPipeline(config, output_dir=out).run(inputs)
    assert (again.processed, again.skipped, again.failed) == (0, 2, 1)


# --- 8. bad arguments ------------------------------------------------------------------------

def test_bad_arguments_exit_2_with_a_message(tmp_path):
    out = tmp_path / "out"
    rc, text, err = in_process("--output-dir", str(out))
    assert rc == 2 and "give --video-dir DIR or video files" in err, (text, err)

    rc, text, err = in_process(str(tmp_path), "--output-dir", str(out), "--preset", "turbo")
    assert rc == 2 and "'turbo'" in err and "development" in err, (text, err)

    rc, text, err = in_process(str(tmp_path), "--output-dir", str(out), "--max-frames", "0")
    assert rc == 2 and "--max-frames" in err and "'0'" in err, (text, err)
    assert not out.exists()


def test_a_missing_input_folder_fails_alone_and_the_others_go_on(videos, config_file, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "no-such-folder"
    rc, text, err = in_process("--video-dir", str(missing), str(videos / "a.mp4"),
                                "--output-dir", str(out), "--preset", "development",
                                "--config", str(config_file))
    assert rc == 1, (text, err)
    entries = entries_by_path(manifest(out))
    assert entries[str(missing)]["status"] == "failed"
    assert "no such file or folder" in entries[str(missing)]["error"]
    assert entries["a.mp4"]["status"] == "done"
    assert "batch: 1 done, 0 skipped, 1 failed" in text, text


# --- 9. --max-frames -------------------------------------------------------------------------

def test_max_frames_reads_only_the_first_frames(config_file, tmp_path):
    video = make_video(tmp_path / "long.mp4", seconds=5)  # 50 frames
    out = tmp_path / "out"
    rc, text, err = in_process(str(video), "--output-dir", str(out), "--max-frames", "30",
                                "--fps", "10", "--config", str(config_file))
    assert rc == 0, (text, err)
    [entry] = manifest(out)["videos"].values()
    assert entry["status"] == "done"
    assert entry["frames_read"] == 30 and entry["frames_analysed"] == 30
    frames = [r for r in records(out / f"records/stream={entry['video_id']}/records.jsonl")
              if r["RecordType"] == "Frame"]
    offsets = [r["InputInformation"]["File"]["OffsetInFileSeconds"] for r in frames]
    assert len(offsets) == 30 and max(offsets) < 3.0
    assert {r["Processor"]["Model"] for r in frames} == {POSE_MODEL}  # the shared full model
