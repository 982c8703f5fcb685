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
