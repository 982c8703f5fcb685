"""Shared fixtures: where the real GetMedia captures and models live, and how to find them.

Captures and models are not in the repo (../shared beside the checkout). Without them a test skips
with the reason on a laptop, and fails under CI (CI=true), where they must be present.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("KVS_SHARED_DIR", REPO.parent / "shared"))
CAPTURES = SHARED / "kvs-captures"
MODELS = SHARED / "models"


def _require(path: Path, what: str) -> Path:
    if path.exists():
        return path
    message = f"{what} not found at {path} (set KVS_SHARED_DIR to the folder holding it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def captures() -> Path:
    """Folder of real GetMedia captures (../shared/kvs-captures)."""
    return _require(CAPTURES, "the KVS captures folder")


@pytest.fixture(scope="session")
def models() -> Path:
    """Folder of model files (../shared/models), e.g. pose_landmarker_full.task."""
    return _require(MODELS, "the models folder")


@pytest.fixture(scope="session")
def capture(captures):
    """Function returning the bytes of one capture by file name."""
    def read(name: str) -> bytes:
        return _require(captures / name, f"capture {name}").read_bytes()
    return read


# The quick run. `python -m pytest` alone leaves out the tests marked `slow` (real consumer fleets,
# the fault tests' restarts and outages, the benchmark smoke runs: together about 13 minutes on 2
# cores); `--run-slow` (what .ci/run passes) runs them too. Naming files or tests, or choosing with
# -m or -k, runs what was chosen, slow or not: `python -m pytest -s tests/faults` runs them all.

def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (left out of a plain `python -m pytest`)")


def _leaves_out_slow(config) -> bool:
    return (not config.getoption("--run-slow") and not config.option.markexpr
            and not config.option.keyword and config.args_source != pytest.Config.ArgsSource.ARGS)


def pytest_collection_modifyitems(config, items):
    if not _leaves_out_slow(config):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config.hook.pytest_deselected(items=slow)
        config.stash[_SLOW_LEFT_OUT] = len(slow)


_SLOW_LEFT_OUT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter, config):
    left_out = config.stash.get(_SLOW_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"{left_out} slow tests left out: `python -m pytest --run-slow` (what .ci/run runs) "
            "runs everything")
