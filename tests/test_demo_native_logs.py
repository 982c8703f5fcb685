"""The demo keeps the native libraries' log lines off the terminal (issue 13, item 4): MediaPipe,
LiteRT, TFLite and absl write straight to file descriptor 2 when the pose model loads, runs and
closes (about a hundred lines, ignoring GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL), so the demo
moves the descriptor to native.log in its output folder, unless verbose, while Python's own
stderr keeps the terminal. Real model, real subprocess: what reaches its stderr is asserted."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from consumer.demo import NATIVE_LOG

from .conftest import REPO

NATIVE = re.compile(r"\.cc:\d+\]|XNNPACK|LiteRT|TensorFlow Lite|InitGoogle")

SCRIPT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    import numpy as np
    from consumer.observe.logs import native_logs_to
    from processors.pose import PoseProcessor
    from processors.settings import Pose

    logging.basicConfig(format="%(levelname)s: %(message)s")
    log_path = None if sys.argv[2] == "verbose" else Path(sys.argv[3])
    with native_logs_to(log_path):
        pose = PoseProcessor(Pose(models_dir=Path(sys.argv[1]), download=False))
        pose._one(np.zeros((240, 320, 3), np.uint8))
        print("python stderr still here", file=sys.stderr)
        logging.getLogger("demo").warning("python logging still here")
        pose.close()
    print("after", file=sys.stderr)
""")


def run(models, tmp_path, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT, str(models), mode,
                           str(tmp_path / NATIVE_LOG)],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_native_log_lines_reach_the_terminal_only_when_verbose(models, tmp_path, mode):
    done = run(models, tmp_path, mode)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    native = [line for line in lines if NATIVE.search(line)]
    # Python's own stderr is untouched either way
    assert "python stderr still here" in lines
    assert "WARNING: python logging still here" in lines and lines[-1] == "after"
    if mode == "quiet":
        assert native == [], native[:5]
        assert len(lines) == 3, lines
        written = (tmp_path / NATIVE_LOG).read_text().splitlines()
        assert len([line for line in written if NATIVE.search(line)]) > 10
    else:
        assert len(native) > 10  # the model load's own lines, as mediapipe prints them
        assert not (tmp_path / NATIVE_LOG).exists()
