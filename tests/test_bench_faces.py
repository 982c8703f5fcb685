"""bench.faces in its quick mode: it measures with the real models and prints well-formed Markdown
tables; its exact search returns each query's best gallery rows, best first."""

from __future__ import annotations

import numpy as np
import pytest

from bench import faces
from tests.conftest import _require


def _tables(text: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("|"):
            assert line.endswith("|"), line
            if current is None:
                current = []
                tables.append(current)
            current.append([cell.strip() for cell in line[1:-1].split("|")])
        else:
            current = None
    return tables


def test_quick_run_prints_the_four_measures(models, captures, capsys):
    pytest.importorskip("dlib")
    capture = _require(captures / "vogels_330.mkv", "capture vogels_330.mkv")
    assert faces.main(["--quick", "--models-dir", str(models), "--capture", str(capture)]) == 0
    out = capsys.readouterr().out
    detection, hands, search = _tables(out)
    assert [row[0] for row in detection[2:]] == [
        f"{name} @ {size}" for name in ("mediapipe", "dlib HOG, upsample 0",
                                        "dlib HOG, upsample 1")
        for size in ("640x330", "1280x660")]
    for row in detection[2:]:
        found, frames = map(int, row[1].split("/"))
        assert frames == 4 and 1 <= found <= frames and float(row[3]) > 0
    assert "ms CPU per face" in out
    assert {row[0] for row in hands[2:]} <= {"0", "1", "2"} and len(hands) >= 3
    assert sum(int(row[1]) for row in hands[2:]) == 4
    assert [row[:2] for row in search[2:]] == [["1000", "1"], ["1000", "8"]]
    assert all(row[5] == "0.5" for row in search[2:])  # 1000 x 128 float32


def test_top_k_is_exact_cosine_search():
    rng = np.random.default_rng(1)
    gallery = faces._unit(rng.standard_normal((500, faces.DIM), dtype=np.float32))
    queries = gallery[[7, 42]] + 0.01  # near rows 7 and 42
    indices, scores = faces.top_k(gallery, faces._unit(queries), 3)
    assert indices.shape == scores.shape == (2, 3)
    assert list(indices[:, 0]) == [7, 42]
    expected = np.sort(faces._unit(queries) @ gallery.T, axis=1)[:, ::-1][:, :3]
    assert np.allclose(scores, expected) and np.all(np.diff(scores, axis=1) <= 0)
    assert faces.top_k(gallery[:2], queries, 5)[0].shape == (2, 2)  # k > N: all rows


def test_a_missing_model_folder_is_an_error(tmp_path, captures, capsys):
    capture = _require(captures / "vogels_330.mkv", "capture vogels_330.mkv")
    assert faces.main(["--quick", "--models-dir", str(tmp_path), "--capture", str(capture)]) == 2
    assert "face_detector.tflite" in capsys.readouterr().err
