"""`python -m consumer inspect`, run as a user runs it: a subprocess on real captures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from consumer.wire import Frame, Track, ebml, model, writer

REPO = Path(__file__).resolve().parents[1]
KEYS = ["fragment_number", "server_timestamp", "producer_timestamp", "millis_behind_now",
        "continuation_token", "frames", "keyframes", "codec", "width", "height", "tags"]
OGM_NUMBERS = [
    "91343852333181432392682062607743920146159169392",
    "91343852333181432397633822764885441725874549018",
    "91343852333181432402585582922026963247510532162",
    "91343852333181432407537343079168484595829378270",
    "91343852333181432412489103236310005892133364608",
]
OGM_TAGS = {"COMPATIBLE_BRANDS": "isomavc1mp42", "MAJOR_BRAND": "M4V ", "MINOR_VERSION": "1",
            "ENCODER": "Elemental H.264", "HANDLER_NAME": "ETI ISO Video Media Handler",
            "DURATION": "00:00:10.000000000"}


def inspect(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "consumer", "inspect", *args], cwd=REPO,
                          env=env, input=stdin, capture_output=True, timeout=60)


def json_rows(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


@pytest.fixture
def capture_path(capture, captures):
    """Path of one capture (skipping, or failing under CI, like `capture` when it is absent)."""
    def path(name: str) -> str:
        capture(name)
        return str(captures / name)
    return path


def test_json_lines_of_output_get_media(capture_path):
    result = inspect("--json", capture_path("output_get_media.mkv"))
    assert result.returncode == 0, result.stderr
    rows = json_rows(result)
    assert all(list(row) == KEYS for row in rows)
    assert [row["fragment_number"] for row in rows] == OGM_NUMBERS
    assert rows[0] == {
        "fragment_number": OGM_NUMBERS[0], "server_timestamp": 1511852109.126,
        "producer_timestamp": 1511852108.513, "millis_behind_now": 15858,
        "continuation_token": OGM_NUMBERS[0], "frames": 60, "keyframes": 1,
        "codec": "V_MPEG4/ISO/AVC", "width": 640, "height": 360, "tags": OGM_TAGS,
    }
    assert [row["millis_behind_now"] for row in rows] == [15858, 14155, 12940, 12414, 12093]
    assert [row["server_timestamp"] for row in rows] == [
        1511852109.126, 1511852110.915, 1511852112.487, 1511852113.414, 1511852114.147]
    assert {(row["frames"], row["keyframes"]) for row in rows} == {(60, 1)}
    assert result.stderr == b""


def test_json_of_a_producer_side_file_has_nulls(capture_path):
    rows = json_rows(inspect("--json", capture_path("vogels_330.mkv")))
    assert [row["frames"] for row in rows] == [65, 150, 79, 150, 70, 150, 86, 114, 45]
    assert {row["fragment_number"] for row in rows} == {None}
    assert {row["continuation_token"] for row in rows} == {None}
    assert (rows[0]["codec"], rows[0]["width"], rows[0]["height"]) == ("V_MPEG4/ISO/AVC", 640, 330)


def test_json_of_a_fragment_without_frames_or_tracks(capture_path):
    row, = json_rows(inspect("--json", capture_path("test_tags_empty_cluster.mkv")))
    assert row["frames"] == 0 and row["codec"] is None and row["width"] is None
    assert row["tags"] == {f"testTag_{i}": f"testTag_{i}_Value" for i in range(5)}


def test_table_lists_every_fragment(capture_path):
    result = inspect(capture_path("output_get_media.mkv"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].split()[:3] == ["fragment_number", "server_ts", "producer_ts"]
    for number, line in zip(OGM_NUMBERS, lines[1:6]):
        assert line.startswith(number)
        assert "1511852" in line and " 640 " in line and "ENCODER=Elemental H.264" in line
    assert lines[-1] == "5 fragments, 300 frames, 2503485 bytes"


def test_table_shows_tags_and_codec(capture_path):
    lines = inspect(capture_path("test_mixed_tags.mkv")).stdout.decode().splitlines()
    assert len(lines) == 1 + 10 + 1
    assert all("V_MS/VFW/FOURCC" in line and "testTag_4=testTag_4_Value" in line
               for line in lines[1:11])


def test_reads_stdin(capture):
    result = inspect("--json", "-", stdin=capture("test_mixed_tags.mkv"))
    assert result.returncode == 0
    assert [row["frames"] for row in json_rows(result)] == [10] * 10


def test_missing_file_exits_2_naming_it(tmp_path):
    missing = tmp_path / "no-such-capture.mkv"
    result = inspect(str(missing))
    assert result.returncode == 2
    assert str(missing) in result.stderr.decode()
    assert "No such file" in result.stderr.decode()


@pytest.mark.parametrize("content", [b"my-hostname\n", b"\x7fELF\x02\x01\x01" + bytes(500), b""],
                         ids=["text", "binary", "empty"])
def test_a_file_that_is_not_mkv_says_so_and_exits_1(tmp_path, content):
    path = tmp_path / "hostname"
    path.write_bytes(content)
    for args in ([], ["--resync"], ["--json"]):
        result = inspect(*args, str(path))
        error = result.stderr.decode()
        assert result.returncode == 1, (args, error)
        assert f"{path}: not an MKV file" in error, (args, error)
        assert "truncated" not in error and "(--resync skips" not in error, (args, error)
        assert result.stdout == b"", args


def test_not_mkv_from_stdin():
    result = inspect("-", stdin=b"hello\n")
    assert result.returncode == 1
    assert "<stdin>: not an MKV file" in result.stderr.decode()


def test_junk_before_the_first_fragment_is_not_mkv_unless_resync(capture, tmp_path):
    path = tmp_path / "prefixed.mkv"
    path.write_bytes(b"\x7fELF" + bytes(3000) + capture("test_mixed_tags.mkv"))
    result = inspect(str(path))
    assert result.returncode == 1 and "not an MKV file" in result.stderr.decode()
    result = inspect("--json", "--resync", str(path))
    assert result.returncode == 0, result.stderr
    assert [row["frames"] for row in json_rows(result)] == [10] * 10
    assert "skipped 3004 invalid bytes" in result.stderr.decode()


def test_truncated_file_prints_rows_then_fails(capture, tmp_path):
    data = capture("output_get_media.mkv")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[:1_300_000])  # mid-way through the third fragment
    result = inspect("--json", str(cut))
    assert result.returncode == 1
    assert [row["fragment_number"] for row in json_rows(result)] == OGM_NUMBERS[:2]
    error = result.stderr.decode()
    assert "truncated" in error and "at byte" in error and str(cut) in error


def test_garbage_fails_unless_resync(capture, tmp_path):
    data = capture("output_get_media.mkv")
    first_end = 547925  # the first fragment's standalone MKV
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(data[:first_end] + b"\x00" * 1000 + data[first_end:])
    result = inspect("--json", str(damaged))
    assert result.returncode == 1
    assert [row["fragment_number"] for row in json_rows(result)] == OGM_NUMBERS[:1]
    assert "invalid" in result.stderr.decode() and "at byte 547925" in result.stderr.decode()
    result = inspect("--json", "--resync", str(damaged))
    assert result.returncode == 0
    assert [row["fragment_number"] for row in json_rows(result)] == OGM_NUMBERS
    assert "skipped 1000 invalid bytes" in result.stderr.decode()


def test_getmedia_error_is_a_note_in_the_table_and_stderr_in_json(tmp_path):
    video = Track(1, ebml.TRACK_TYPE_VIDEO, "V_MPEG4/ISO/AVC", width=64, height=48)
    good = (writer.stream_header([video]) + writer.tags({model.FRAGMENT_NUMBER: "123"})
            + writer.cluster(0, [Frame(1, 0, True, b"key")])
            + writer.tags({model.MILLIS_BEHIND_NOW: "5", model.CONTINUATION_TOKEN: "123"}))
    failed = (writer.ebml_header() + writer.segment_start()
              + writer.tags({model.ERROR_CODE: "REQUESTED_FRAGMENT_NOT_FOUND",
                             model.ERROR_ID: "4000"}))
    path = tmp_path / "with-error.mkv"
    path.write_bytes(good + failed)

    table = inspect(str(path))
    assert table.returncode == 0
    lines = table.stdout.decode().splitlines()
    assert "GetMedia error 4000: REQUESTED_FRAGMENT_NOT_FOUND" in lines[2]
    assert "error" not in lines[1]

    result = inspect("--json", str(path))
    rows = json_rows(result)
    assert [list(row) for row in rows] == [KEYS, KEYS]
    assert rows[0]["fragment_number"] == "123" and rows[0]["frames"] == 1
    assert "GetMedia error 4000: REQUESTED_FRAGMENT_NOT_FOUND" in result.stderr.decode()


def test_help_teaches_with_an_example():
    result = subprocess.run([sys.executable, "-m", "consumer", "inspect", "--help"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                            timeout=60)
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "python -m consumer inspect" in text and "--json" in text and "--resync" in text


def test_inspect_reads_a_stream_straight_from_get_media(capture):
    """--stream: GetDataEndpoint + GetMedia against the local service, rows for what was pushed."""
    from consumer.wire import read_fragments
    from infra.local.kvs_service import LocalKvsService
    from infra.local.limits import Limits

    from .kvs_wire_helpers import producer_mkv, put_media

    source = read_fragments(capture("clusters.mkv"))[:3]
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=0.5)) as kvs:
        import boto3
        boto3.client("kinesisvideo", endpoint_url=kvs.endpoint_url, region_name="us-east-1",
                     aws_access_key_id="x", aws_secret_access_key="y").create_stream(
            StreamName="cam-1")
        put_media(kvs.endpoint_url, "cam-1", producer_mkv(source, int(time.time() * 1000)))
        result = subprocess.run(
            [sys.executable, "-m", "consumer", "inspect", "--json", "--stream", "cam-1",
             "--endpoint-url", kvs.endpoint_url], capture_output=True, text=True, timeout=60)
        missing = subprocess.run(
            [sys.executable, "-m", "consumer", "inspect", "--stream", "nope",
             "--endpoint-url", kvs.endpoint_url], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["frames"] for row in rows] == [59, 59, 59]
    assert all(row["continuation_token"] == row["fragment_number"] for row in rows)
    assert missing.returncode == 2 and "ResourceNotFoundException" in missing.stderr
    both = subprocess.run([sys.executable, "-m", "consumer", "inspect", "x.mkv", "--stream", "a"],
                          capture_output=True, text=True, timeout=60)
    assert both.returncode == 2 and "exactly one" in both.stderr
