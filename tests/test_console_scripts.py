"""The installed commands: console scripts from pyproject's [project.scripts], and `python -m ...`
from any folder (not only the repository root)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_scripts_are_the_python_m_entry_points():
    assert set(SCRIPTS) == {"kvs-analytics", "kvs-producer-sim", "kvs-local-stack"}
    for target in SCRIPTS.values():
        module, _, name = target.partition(":")
        assert callable(getattr(importlib.import_module(module), name)), target


def _installed(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.exists():
        message = f"{name} is not installed beside {sys.executable}: run pip install -e ."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.mark.parametrize("name,needles", [
    ("kvs-analytics", ["inspect", "run", "fleet", "demo"]),
    ("kvs-producer-sim", ["push", "run", "usage: kvs-producer-sim"]),
    ("kvs-local-stack", ["--kvs-port", "--moto-port"]),
])
def test_installed_scripts_run_from_any_folder(tmp_path, name, needles):
    done = subprocess.run([str(_installed(name)), "--help"], cwd=tmp_path, check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for needle in needles:
        assert needle in done.stdout, (needle, done.stdout)


def test_a_script_runs_a_subcommand(tmp_path):
    (tmp_path / "notes.txt").write_text("not video\n")
    done = subprocess.run([str(_installed("kvs-analytics")), "inspect", "notes.txt"],
                          cwd=tmp_path, check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "notes.txt: not an MKV file" in done.stderr


def _python_m_help(module: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=cwd, env=env,
                          check=False, capture_output=True, text=True, timeout=60)
    if done.returncode and f"No module named {module}" in done.stderr:
        message = f"{module} is not importable outside the checkout: run pip install -e ."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_python_m_bench_works_from_any_folder_and_states_the_bounded_rule(tmp_path):
    from bench import metrics

    text = " ".join(_python_m_help("bench", tmp_path).split())
    assert f"at least {metrics.DELIVERED_FRACTION:.0%}".replace("%", " %") in text
    assert f"at most {metrics.GROWTH_LIMIT:g} s per second of run" in text
    assert "whole fragments" in text and "slope" in text
    assert "median" not in text and "middle third" not in text  # the old rule


@pytest.mark.parametrize("module", ["consumer", "producer_sim", "infra.local"])
def test_python_m_keeps_working(tmp_path, module):
    assert "usage:" in _python_m_help(module, tmp_path)
