"""S3 keys and object metadata (consumer.formats.s3_layout): Hive partitions, safe names, ASCII."""

from __future__ import annotations

import pytest

from consumer.formats.s3_layout import (
    check_stream_name,
    clip_key,
    event_key,
    fragment_metadata,
    frame_key,
    object_metadata,
    pose_sequence_key,
)
from processors.frames import FrameSource

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-1/1700000000000"
FRAGMENT = 91343852333181432392682062607743920146264772742
# 2024-04-30 23:59:59.9 UTC: the fragment's date, even for its frames after midnight.
PRODUCER = 1714521599.9


def source(index: int = 7, stream: str = "cam-1") -> FrameSource:
    return FrameSource(stream, ARN, FRAGMENT, PRODUCER + 0.4, PRODUCER, index / 15 + 0.2, index)


def test_frame_keys_are_hive_partitioned_by_stream_and_fragment_date():
    assert frame_key("lake/v1", source()) == (
        f"lake/v1/frames/stream=cam-1/date=2024-04-30/{FRAGMENT}/00007.jpg")
    assert frame_key("", source(12), annotated=True) == (
        f"frames/stream=cam-1/date=2024-04-30/{FRAGMENT}/00012-annotated.jpg")
    assert frame_key("/p/", source()) == frame_key("p", source())


def test_pose_and_clip_keys():
    assert pose_sequence_key("p", "cam-1", FRAGMENT, PRODUCER) == (
        f"p/poses/stream=cam-1/date=2024-04-30/{FRAGMENT}.parquet")
    assert clip_key("p", "cam-1", FRAGMENT, PRODUCER + 1, "mp4") == (
        f"p/clips/stream=cam-1/date=2024-05-01/{FRAGMENT}.mp4")
    with pytest.raises(ValueError):
        clip_key("p", "cam-1", FRAGMENT, PRODUCER, "exe")


def test_keys_are_deterministic_for_replay():
    assert frame_key("p", source()) == frame_key("p", source())
    assert frame_key("p", source(1)) != frame_key("p", source(2))


@pytest.mark.parametrize("name", ["..", ".", "evil..cam", "...", "-", "_.-", "x" * 256])
def test_every_legal_kvs_name_makes_a_key_with_no_dot_segment(name):
    for key in (pose_sequence_key("p", name, FRAGMENT, PRODUCER),
                frame_key("p", source(stream=name)),
                event_key("p", name, PRODUCER, "0b7c4e5e-3f55-5a86-9a9e-0f2e3b1c2d3e", "clip")):
        segments = key.split("/")
        assert f"stream={name}" in segments
        assert not {".", ".."} & set(segments) and "" not in segments


@pytest.mark.parametrize("name", ["", "../x", "a/b", "cam 1", "cam\n", "c@m", "x" * 257,
                                  "caméra"])
def test_unsafe_stream_names_never_reach_a_key(name):
    with pytest.raises(ValueError):
        check_stream_name(name)
    with pytest.raises(ValueError):
        pose_sequence_key("p", name, FRAGMENT, PRODUCER)


@pytest.mark.parametrize("prefix", ["../up", "a/../b", "a b", "a//b", "é"])
def test_unsafe_prefixes_are_refused(prefix):
    with pytest.raises(ValueError):
        frame_key(prefix, source())


@pytest.mark.parametrize("fragment", [-1, 10 ** 64, "123", 1.5, True])
def test_fragment_numbers_must_be_integers(fragment):
    with pytest.raises(ValueError):
        pose_sequence_key("p", "cam-1", fragment, PRODUCER)


def test_object_metadata_joins_back_to_the_video_in_ascii():
    meta = object_metadata(source())
    assert meta == {"stream": "cam-1", "stream-arn": ARN, "fragment-number": str(FRAGMENT),
                    "producer-timestamp": "1714521599.900", "server-timestamp": "1714521600.300",
                    "frame-offset": "0.667", "frame-index": "7",
                    "record-id": source().record_id}
    assert all(v.isascii() and v.isprintable() for v in meta.values())
    assert fragment_metadata("cam-1", ARN, FRAGMENT, PRODUCER, PRODUCER + 1)[
        "fragment-number"] == str(FRAGMENT)
