"""Batch mode's Python API as a user meets it: the README's example run as it is written, and a
file that vanishes between the plan and its turn (a failed entry with the reason; the batch goes
on)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from consumer.batch.progress import LineReporter
from kvs_analytics import BatchPipeline, batch_config
from tests.batch_helpers import make_video, models_dir, write_config
from tests.conftest import REPO


def readme_api_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("The Python API (`kvs_analytics`)"):]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README's Batch mode section has a python example"
    return match.group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    make_video(tmp_path / "videos" / "clip.mp4", seconds=3)
    monkeypatch.chdir(tmp_path)  # the example's relative videos/ and out/
    for name in list(os.environ):
        if name.startswith("KVSA_"):
            monkeypatch.delenv(name)
    # the user's machine has the model where models_dir says; here, the shared folder
    monkeypatch.setenv("KVSA_PROCESSING__POSE__MODELS_DIR", str(models_dir()))
    monkeypatch.setenv("KVSA_PROCESSING__POSE__DOWNLOAD", "false")
    exec(compile(readme_api_example(), "README.md", "exec"), {})  # noqa: S102 (our README)
    lines = capsys.readouterr().out.splitlines()
    progress = ("batch: ", "done ", "failed ", "skipped ")  # the default reporter's lines
    assert any(line.startswith("done ") and "clip.mp4" in line for line in lines)
    printed = [line for line in lines if not line.startswith(progress)]
    assert printed[0] == "1 0 0"  # processed, skipped, failed
    assert printed[1] == "clip.mp4 done None"
    poses = [line for line in printed[2:] if line.startswith("out/poses/")]
    assert poses and all(line.endswith(", 33, 5)") for line in poses), printed
    assert (tmp_path / "out" / "manifest.json").is_file()


class DeletesTheOther(LineReporter):
    """When the first video starts, the second one is deleted (a file moved away mid-run)."""

    def __init__(self, victim: Path):
        super().__init__()
        self.victim = victim

    def started(self, worker, item) -> None:
        if self.victim.exists() and not item.path.endswith(self.victim.name):
            self.victim.unlink()


def test_a_file_that_vanishes_mid_run_fails_alone(tmp_path):
    folder = tmp_path / "videos"
    make_video(folder / "a.mp4", seconds=2)
    make_video(folder / "b.mp4", seconds=2, offset=30)
    config = batch_config(write_config(tmp_path / "batch.yaml"), environ={})
    pipeline = BatchPipeline(config, tmp_path / "out",
                             reporter=DeletesTheOther(folder / "b.mp4"))
    result = pipeline.run([folder])
    statuses = {video.path: (video.status, video.reason) for video in result.videos}
    assert statuses["a.mp4"] == ("done", None)
    assert statuses["b.mp4"][0] == "failed"
    assert "disappeared" in statuses["b.mp4"][1]
    assert (result.processed, result.failed) == (1, 1) and not result.ok


@pytest.fixture(scope="module")
def stack():
    from infra.local.stack import LocalStack
    with LocalStack() as local:
        yield local


def test_a_large_object_goes_up_in_parts(stack, tmp_path):
    """boto3's managed transfer with the batch's part size: 12 MiB in 5 MiB parts."""
    from consumer.batch.uploads import Uploader
    from consumer.config import Batch
    s3 = stack.client("s3")
    s3.create_bucket(Bucket="parts")
    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * (12 * 1024 * 1024))
    uploader = Uploader(s3, "parts", Batch(upload_part_size_mb=5, upload_threshold_mb=5), 4)
    try:
        errors = uploader.wait([uploader.submit("k/big.jsonl", big, "application/x-ndjson",
                                                {"source-sha256": "ab" * 32})])
    finally:
        uploader.close()
    assert errors == []
    head = s3.head_object(Bucket="parts", Key="k/big.jsonl")
    assert head["ContentLength"] == 12 * 1024 * 1024
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of 3 parts
    assert head["Metadata"] == {"source-sha256": "ab" * 32}


def test_progress_bars_show_seconds_of_video_frames_a_second_and_each_worker():
    import io

    from consumer.batch.plan import Planned
    from consumer.batch.progress import BarReporter
    out = io.StringIO()
    reporter = BarReporter(out)
    first = Planned("/v/a.mp4", "a.mp4", "analyse", sha256="a" * 64, duration_seconds=10.0)
    second = Planned("/v/b.mp4", "b.mp4", "analyse", sha256="b" * 64, duration_seconds=20.0)
    skipped = Planned("/v/c.mp4", "c.mp4", "skip", "done before (manifest)", sha256="c" * 64)
    reporter.start([first, second, skipped], workers=2)
    reporter.started(0, first)
    reporter.started(1, second)
    reporter.progress(0, first, 5.0, 10)
    reporter.progress(1, second, 4.0, 8)
    assert reporter.total.n == 9.0  # seconds of video read, both workers together
    reporter.finished(0, first, {"status": "done", "seconds": 2.0, "video_seconds": 10.0,
                                 "frames_analysed": 20})
    reporter.finished(1, second, {"status": "failed", "error": "the file disappeared"})
    reporter.close()
    text = out.getvalue()
    assert "all videos" in text and "s of video" in text and "frames/s analysed" in text
    assert "worker 1: a.mp4" in text and "worker 2: b.mp4" in text
    assert "1 done" in text and "1 failed" in text and "1 skipped" in text
    assert "done     a.mp4: 20 frames analysed" in text and "5.0x real time" in text
    assert "failed   b.mp4: the file disappeared" in text


def test_a_video_codec_ffmpeg_does_not_know_fails_alone(tmp_path):
    """An MKV whose video track's codec id FFmpeg has never heard of: a failed entry saying so,
    before any model loads; the other video is done."""
    from consumer.wire import Frame, Track, ebml, writer
    folder = tmp_path / "videos"
    make_video(folder / "a.mp4", seconds=2)
    track = Track(number=1, type=ebml.TRACK_TYPE_VIDEO, codec_id="V_MADEUP/CODEC", width=320,
                  height=240)
    frames = [Frame(1, i * 40, i % 25 == 0, bytes(range(256)) * 2) for i in range(50)]
    (folder / "madeup.mkv").write_bytes(writer.stream_header([track]) + writer.cluster(0, frames))
    config = batch_config(write_config(tmp_path / "batch.yaml"), environ={})
    result = BatchPipeline(config, tmp_path / "out").run([folder])
    statuses = {video.path: (video.status, video.reason) for video in result.videos}
    assert statuses["a.mp4"] == ("done", None)
    assert statuses["madeup.mkv"] == ("failed", "its video codec is not one FFmpeg can decode")
