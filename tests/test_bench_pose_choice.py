"""bench.pose_choice in its quick mode, with only the shared full bundle: it measures, says which
variants it skipped and why, and prints well-formed Markdown tables."""

from __future__ import annotations

import pytest

from bench import pose_choice
from tests.conftest import _require
from tests.pose_helpers import POSE_MODEL


def _tables(text: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.endswith("|"), line
            cells = [c.strip() for c in line.replace("\\|", "¦")[1:-1].split("|")]
            if current is None:
                current = []
                tables.append(current)
            current.append(cells)
        else:
            current = None
    return tables


def test_quick_run_prints_well_formed_tables_and_the_skipped_variants(models, captures, capsys):
    _require(models / POSE_MODEL, f"model {POSE_MODEL}")
    _require(captures / "vogels_330.mkv", "capture vogels_330.mkv")  # the bench clip's source
    assert pose_choice.main(["--quick", "--frames", "4", "--models-dir", str(models)]) == 0
    out = capsys.readouterr().out
    for variant in ("lite", "heavy"):  # absent from the shared folder: skipped, with the reason
        assert f"- {variant}: pose_landmarker_{variant}.task is in none of {models}" in out
    assert out.count("python -m processors.pose_bundles --out") == 2
    image, video = _tables(out)
    for table, columns in ((image, 9), (video, 10)):
        assert all(len(row) == columns for row in table)
        assert all(set(cell) == {"-"} for cell in table[1])
    assert [row[:2] for row in image[2:]] == [["bench", "full"], ["mosaic", "full"]]
    assert [row[:2] for row in video[2:]] == [[clip, rate] for clip in ("bench", "mosaic")
                                              for rate in ("S = 1", "S = 2", "every frame")]
    for row in image[2:]:
        assert row[2] == "4" and float(row[3]) > 0 and row[6] == "100 %"  # full agrees with itself
    for row in video[2:]:
        assert int(row[2]) >= 1 and float(row[3]) > 0 and float(row[4]) > 0
        assert row[5].endswith(" %") and row[6].endswith(" %")
    assert "VIDEO mode meets the bar" in out and "load average" in out


def test_sampling_picks_the_frames_a_stream_at_s_would():
    every = [n for n in range(45) if pose_choice.analysed(n, 1.0)]
    assert every == [0, 15, 30]
    twice = [n for n in range(30) if pose_choice.analysed(n, 2.0)]
    assert twice == [0, 8, 15, 23]  # every 7th-8th frame at 15 fps
    assert all(pose_choice.analysed(n, None) for n in range(5))


def test_unknown_names_and_a_missing_full_bundle_are_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        pose_choice.main(["--clips", "nope"])
    assert pose_choice.main(["--models-dir", str(tmp_path), "--quick"]) == 2
    assert "cannot measure without full" in capsys.readouterr().err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as done:
        pose_choice.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "VIDEO mode" in text and "--quick" in text and "process_time" in text
