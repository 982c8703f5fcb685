"""The fragment reader fuzzed for a few seconds in CI (bench.fuzz runs the same check for
minutes): mutations of the real captures; only the documented MkvError may escape, and no input
under 1 MB may take over 2 s."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz import check, mutate


@pytest.fixture(scope="module")
def sources(captures):
    names = ["output_get_media.mkv", "output_get_media_sparse_fragments.mkv",
             "kinesis_video_renderer_example_output.mkv", "test_mixed_tags.mkv",
             "test_tags_empty_cluster.mkv", "empty-mkv-with-tags.mkv", "clusters.mkv"]
    return [(captures / name).read_bytes() for name in names]


def test_mutated_captures_raise_only_documented_errors_and_stay_fast(sources):
    @settings(max_examples=500, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(which=st.integers(0, len(sources) - 1), seed=st.integers(0, 2 ** 32 - 1))
    def one(which, seed):
        check(mutate(sources[which], random.Random(seed)))
    one()


def test_the_mutations_change_the_input():
    data = bytes(range(256)) * 64
    changed = {mutate(data, random.Random(seed)) for seed in range(50)}
    assert data not in changed and len(changed) == 50
