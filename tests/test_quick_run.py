"""`python -m pytest` alone is the quick run (tests marked slow left out); `--run-slow` (.ci/run),
naming files, or choosing with -m/-k runs the slow ones too (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import REPO


def collect(*args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider", *args], cwd=REPO, env=env,
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


SLOW_IN_FLEET = ("tests/test_fleet.py::"
                 "test_workers_balance_take_over_a_killed_one_and_hand_over_on_sigterm")
QUICK_IN_FLEET = ("tests/test_fleet.py::"
                  "test_a_crashed_session_is_restarted_from_its_checkpoint_and_status_says_so")


# The plain run collects the configured testpaths; narrowed to one file here to keep this quick.
PLAIN = ("-o", "testpaths=tests/test_fleet.py")


def test_the_plain_run_leaves_slow_tests_out_and_says_how_to_run_them():
    lines = collect(*PLAIN)
    assert QUICK_IN_FLEET in lines and SLOW_IN_FLEET not in lines
    assert any("slow tests left out: `python -m pytest --run-slow`" in line for line in lines)
    assert SLOW_IN_FLEET in collect(*PLAIN, "--run-slow")


def test_named_files_and_marker_choices_run_slow_tests():
    assert SLOW_IN_FLEET in collect("tests/test_fleet.py")
    assert SLOW_IN_FLEET in collect("-m", "slow", "tests/test_fleet.py")
