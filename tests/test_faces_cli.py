"""`kvs-analytics faces` end to end on the local stack (moto's DynamoDB and S3) with real faces
(the speaker of the Vogels capture, scikit-image's astronaut) through the real face models:
every subcommand, --json, and the exit statuses; and a --help that teaches."""
# ruff: noqa: F811 (the fixtures of test_face_collections, imported, are parameters here)

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from consumer.cli import main
from consumer.faces.records import image_id
from tests.test_face_collections import (  # noqa: F401 (fixtures, used by name)
    BUCKET,
    PREFIX,
    SPEAKER_INDEXED_FRAME,
    SPEAKER_SEARCHED_FRAME,
    astronaut,
    png,
    speaker_frames,
    stack,
    table,
)


def cli(*argv: str) -> int:
    return main(list(argv))


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_cli_end_to_end(stack, table, models, speaker_frames, astronaut, tmp_path, capsys):
    config = tmp_path / "consumer.yaml"
    config.write_text(yaml.safe_dump({
        "aws": {"region": stack.region, "endpoints": {"s3": stack.endpoints["s3"],
                                                      "dynamodb": stack.endpoints["dynamodb"]}},
        "outputs": {"s3": {"bucket": BUCKET, "prefix": PREFIX}},
        "processing": {"pose": {"models_dir": str(models)}}}))
    common = ("--config", str(config), "--table", table)
    speaker_png, other_png, astronaut_png, blank_png, not_image = (
        tmp_path / name for name in ("speaker.png", "other.png", "astronaut.png", "blank.png",
                                     "notes.txt"))
    speaker_png.write_bytes(png(speaker_frames[SPEAKER_INDEXED_FRAME]))
    other_png.write_bytes(png(speaker_frames[SPEAKER_SEARCHED_FRAME]))
    astronaut_png.write_bytes(png(astronaut))
    blank_png.write_bytes(png(np.full((240, 320, 3), 128, np.uint8)))
    not_image.write_text("not an image")

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli(*argv)
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("faces", "create-collection", "cli-people", *common)
    assert code == 0 and "created collection cli-people" in out
    code, _, err = run("faces", "create-collection", "cli-people", *common)
    assert code == 1 and "'cli-people' already exists" in err
    code, _, err = run("faces", "create-collection", "a/b", *common)
    assert code == 2 and "collection id 'a/b'" in err

    code, out, _ = run("faces", "index", "--collection", "cli-people", "--image",
                       str(speaker_png), "--external-id", "speaker", "--json", *common)
    assert code == 0
    [indexed] = json_lines(out)
    assert indexed["external_image_id"] == "speaker"
    assert indexed["image_id"] == image_id(speaker_png.read_bytes())
    code, out, _ = run("faces", "index", "--collection", "cli-people", "--image",
                       str(astronaut_png), "--external-id", "astronaut", *common)
    assert code == 0 and "1 face indexed into cli-people" in out
    code, _, err = run("faces", "index", "--collection", "cli-people", "--image",
                       str(blank_png), *common)
    assert code == 1 and f"no face found in {blank_png}" in err
    code, _, err = run("faces", "index", "--collection", "cli-people", "--image",
                       str(speaker_png), "--external-id", "has space", *common)
    assert code == 2 and "external image id 'has space'" in err
    code, _, err = run("faces", "index", "--collection", "cli-people", "--image",
                       str(not_image), *common)
    assert code == 2 and "cannot read it as an image" in err
    code, _, err = run("faces", "index", "--collection", "cli-nobody", "--image",
                       str(speaker_png), *common)
    assert code == 1 and "'cli-nobody' not found" in err

    code, out, _ = run("faces", "list", "--json", *common)
    assert code == 0
    [listed] = [c for c in json_lines(out) if c["collection"] == "cli-people"]
    assert listed["face_count"] == 2 and listed["version"] == 3
    code, out, _ = run("faces", "list", *common)
    assert code == 0 and "cli-people" in out and "row" in out
    code, out, _ = run("faces", "list", "--collection", "cli-people", "--json", *common)
    assert sorted(f["external_image_id"] for f in json_lines(out)) == ["astronaut", "speaker"]

    code, out, _ = run("faces", "search", "--collection", "cli-people", "--image",
                       str(other_png), "--json", *common)
    assert code == 0
    first = json_lines(out)[0]
    assert [m["external_image_id"] for m in first["matches"]] == ["speaker"]
    assert first["matches"][0]["similarity"] > 80
    code, out, _ = run("faces", "search", "--collection", "cli-people", "--image",
                       str(astronaut_png), *common)
    assert code == 0 and "astronaut" in out and "speaker" not in out
    code, _, err = run("faces", "search", "--collection", "cli-people", "--image",
                       str(other_png), "--threshold", "120", *common)
    assert code == 2 and "--threshold 120" in err

    code, out, _ = run("faces", "delete", "--collection", "cli-people", "--face-id",
                       indexed["face_id"], "--json", *common)
    assert code == 0 and json_lines(out) == [{"collection": "cli-people",
                                              "deleted": [indexed["face_id"]],
                                              "not_found": []}]
    code, out, err = run("faces", "delete", "--collection", "cli-people", "--face-id",
                         indexed["face_id"], *common)
    assert code == 1 and "0 faces deleted" in out and indexed["face_id"] in err
    code, out, _ = run("faces", "search", "--collection", "cli-people", "--image",
                       str(other_png), "--json", *common)
    assert code == 0 and json_lines(out)[0]["matches"] == []

    code, out, _ = run("faces", "delete-collection", "cli-people", *common)
    assert code == 0 and "deleted collection cli-people (1 face)" in out
    code, out, _ = run("faces", "list", "--json", *common)
    assert "cli-people" not in out
    code, _, err = run("faces", "list", "--collection", "cli-people", "--endpoint-url",
                       stack.endpoints["dynamodb"], "--region", stack.region, "--bucket", BUCKET,
                       "--table", table)
    assert code == 1 and "'cli-people' not found" in err


def test_cli_help_teaches(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli("faces", "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("create-collection", "exit status", "examples:", "kvs-analytics-faces",
                 "Rekognition's 0-100 scale"):
        assert text in out
    with pytest.raises(SystemExit):
        cli("faces", "search", "--help")
    assert "--max-matches" in capsys.readouterr().out
