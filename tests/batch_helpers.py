"""Shared by the batch-mode tests: short real videos with a person in them (cut from the speaker's
close-up in vogels_330.mkv and re-encoded with PyAV), files that are not videos, the batch's
configuration file, and readers for what a batch leaves behind (manifest, records, outputs).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from consumer import cli
from tests.conftest import CAPTURES, MODELS, REPO, _require
from tests.pose_helpers import CLOSE_UP, POSE_MODEL

SOURCE = "vogels_330.mkv"  # 640x330, 29.97 frames/s, 30 s; the speaker in close-up from ~20 s
RATE = 10  # frames/s of the test videos: every third frame of the source
GOP = RATE  # a keyframe a second


def source_path() -> Path:
    return _require(CAPTURES / SOURCE, f"capture {SOURCE}")


def models_dir() -> Path:
    _require(MODELS / POSE_MODEL, f"model {POSE_MODEL}")
    return MODELS


_frames_cache: list[np.ndarray] | None = None


def _close_up_frames() -> list[np.ndarray]:
    """RGB frames of the close-up at RATE frames/s (decoded once per test process)."""
    global _frames_cache
    if _frames_cache is None:
        frames = []
        step = 3
        with av.open(str(source_path())) as reader:
            for index, frame in enumerate(reader.decode(video=0)):
                if index < CLOSE_UP:
                    continue
                if (index - CLOSE_UP) % step == 0:
                    frames.append(frame.to_ndarray(format="rgb24"))
        _frames_cache = frames
    return _frames_cache


def make_video(path: Path, seconds: float = 3.0, offset: int = 0, codec: str = "libx264",
               container: str | None = None, pix_fmt: str = "yuv420p") -> Path:
    """`seconds` of the speaker in close-up at RATE frames/s, starting `offset` frames into the
    close-up (different offsets: different bytes, different videos), encoded with `codec`."""
    frames = _close_up_frames()
    count = round(seconds * RATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=RATE)
        height, width = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            stream.options = {"preset": "ultrafast",
                              "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0"}
        else:
            stream.gop_size = GOP
        for index in range(count):
            image = frames[(offset + index) % len(frames)]
            picture = av.VideoFrame.from_ndarray(image, format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, RATE)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    return path


def make_audio_only(path: Path, seconds: float = 1.0, codec: str = "aac") -> Path:
    """A file with one audio stream (a tone) and no video track."""
    rate = 44100
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        t = np.arange(int(seconds * rate)) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        step = 1024
        for start in range(0, len(samples), step):
            frame = av.AudioFrame.from_ndarray(samples[None, start:start + step], format="fltp",
                                               layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_config(path: Path, **extra) -> Path:
    """The batch's configuration file: the full pose model from the shared folder, no download,
    and `extra` sections (merged at the top level). JSON is YAML."""
    settings = {"processing": {"pose": {"models_dir": str(models_dir()), "download": False,
                                        "model": "full"}},
                "logging": {"level": "WARNING"}}
    settings.update(extra)
    path.write_text(json.dumps(settings, indent=1) + "\n")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without KVSA_ overrides (a developer's shell must not change a test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSA_")}
    env.update({"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def batch_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "consumer", "batch", *args]


def run_batch(*args: str, timeout: float = 120, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    """`python -m consumer batch ARGS` as a user runs it."""
    return subprocess.run(batch_command(*args), cwd=REPO, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def entries_by_path(data: dict) -> dict[str, dict]:
    """The manifest's entries by the path it names (relative to the folder searched)."""
    return {entry["path"]: entry for entry in data["videos"].values()}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def output_mtimes(root: Path, entry: dict) -> dict[str, int]:
    """Each listed output's modification time (ns), by key."""
    return {o["key"]: (root / o["key"]).stat().st_mtime_ns for o in entry["outputs"]}


def good_and_bad_videos(folder: Path) -> Path:
    """Three good videos (two H.264 MP4s, one in a subfolder; an MPEG-4 AVI) and three files
    that cannot be analysed (empty, text, audio only)."""
    make_video(folder / "a.mp4", seconds=3, offset=0)
    make_video(folder / "sub" / "b.mp4", seconds=3, offset=40)
    make_video(folder / "old.avi", seconds=3, offset=80, codec="mpeg4")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("meeting notes, not a video\n")
    make_audio_only(folder / "sub" / "sound.mp4")
    return folder


def in_process(*argv: str) -> tuple[int, str, str]:
    """`cli.main(["batch", ...])` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(["batch", *argv])
        except SystemExit as exit_:  # argparse's errors
            rc = exit_.code
    return rc, out.getvalue(), err.getvalue()


def speaker_records_batch(tmp: Path, stack=None, data_stream: str | None = None,
                          bucket: str | None = None, max_frames: int = 600):
    """Batch mode over the first 20 s of the speaker capture with the demo's rules (its stage
    zone, and a dwell of 0.5 s in it: he enters at 11.8 s and is lost at 13.3 s), its outputs to
    `tmp/out` and, given the local stack, its records to `data_stream` and its objects to
    `bucket` there. The BatchResult."""
    from consumer.demo import STAGE_ZONE
    from kvs_analytics import BatchPipeline, batch_config
    sections: dict = {"events": {"cameras": {"*": {"rules": [
        {"type": "zone", "name": "stage", "polygon": STAGE_ZONE},
        {"type": "dwell", "name": "linger", "zone": "stage", "seconds": 0.5}]}}}}
    if stack is not None:
        sections["aws"] = {"region": stack.region, "endpoints": {
            "s3": stack.endpoints["s3"], "kinesis": stack.endpoints["kinesis"]}}
    if data_stream:
        sections["outputs"] = {"kinesis": {"stream": data_stream, "linger_ms": 20}}
    config = batch_config(write_config(tmp / "batch.yaml", **sections), max_frames=max_frames,
                          s3_bucket=bucket, environ={})
    result = BatchPipeline(config, tmp / "out").run([CAPTURES / SOURCE])
    assert result.ok, result
    return result
