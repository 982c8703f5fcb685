"""Packets to fragments: clusters start on keyframes, durations, and a lossless MKV round trip."""

from __future__ import annotations

import itertools

import pytest

from consumer.media.fragmenter import (
    Fragmenter,
    FragmenterError,
    encode_cluster,
    fragment_packets,
)
from consumer.media.sources import FileSource, Packet, TestPatternSource
from consumer.wire import read_fragments, writer

BASE = 1_700_000_000_000  # a wall-clock origin, as the camera gives


@pytest.fixture(scope="module")
def vogels_packets(captures):
    source = FileSource(captures / "vogels_330.mkv")
    packets = list(source)
    return source.track, packets


def test_vogels_fragments_start_on_keyframes(vogels_packets):
    track, packets = vogels_packets
    fragments = fragment_packets(packets, track, 2000, BASE)
    # Keyframes at 0, 2.169, 9.81, 17.15, 25.025, 28.829 s are all >= 2 s apart: one each.
    assert [f.cluster_timecode - BASE for f in fragments] == [0, 2169, 9810, 17150, 25025, 28829]
    assert [len(f.frames) for f in fragments] == [65, 229, 220, 236, 114, 45]
    assert sum(len(f.frames) for f in fragments) == 909
    for fragment in fragments:
        assert fragment.frames[0].keyframe
        assert fragment.frames[0].timecode == fragment.cluster_timecode
        assert not any(f.keyframe for f in fragment.frames[1:])
        assert fragment.tracks == (track,)
    # Each fragment runs until the next one starts (one frame short of it).
    for this, nxt in itertools.pairwise(fragments):
        assert 0 < nxt.cluster_timecode - this.frames[-1].timecode <= 34


def test_longer_fragment_duration_merges_gops(vogels_packets):
    track, packets = vogels_packets
    fragments = fragment_packets(packets, track, 4000, 0)
    assert [f.cluster_timecode for f in fragments] == [0, 9810, 17150, 25025]
    assert [len(f.frames) for f in fragments] == [294, 220, 236, 159]


def test_test_pattern_makes_exact_two_second_fragments():
    source = TestPatternSource(96, 64, fps=30, frames=185, epoch_ms=0)
    fragments = fragment_packets(source, None, 2000, BASE)
    assert fragments[0].tracks == (source.track,)
    assert [f.cluster_timecode - BASE for f in fragments] == [0, 2000, 4000, 6000]
    assert [len(f.frames) for f in fragments] == [60, 60, 60, 5]
    # One-second GOPs: two keyframes per fragment, the first one leading it.
    assert [sum(fr.keyframe for fr in f.frames) for f in fragments] == [2, 2, 2, 1]
    assert fragments[0].duration == pytest.approx(1.967, abs=0.001)


def test_keyframe_a_hair_early_still_cuts(captures):
    # clusters.mkv has keyframes at 1999, 3999, 5998 ms...: 2 s fragments, like its own clusters.
    source = FileSource(captures / "clusters.mkv")
    fragments = fragment_packets(source, None, 2000, 0)
    original = read_fragments((captures / "clusters.mkv").read_bytes())
    assert [f.cluster_timecode for f in fragments] == [f.cluster_timecode for f in original]
    assert [len(f.frames) for f in fragments] == [59] * 7 + [31]


def test_round_trip_through_the_wire_reader(vogels_packets):
    track, packets = vogels_packets
    fragments = fragment_packets(packets, track, 2000, BASE)
    body = writer.stream_header([track]) + b"".join(encode_cluster(f) for f in fragments)
    parsed = read_fragments(body)
    assert len(parsed) == len(fragments)
    assert parsed[0].tracks == (track,)
    frames = [f for fragment in parsed for f in fragment.frames]
    assert [(f.timecode - BASE, f.keyframe, bytes(f.data)) for f in frames] == \
        [(p.pts_ms, p.keyframe, p.data) for p in packets]
    assert [f.cluster_timecode for f in parsed] == [f.cluster_timecode for f in fragments]


def test_frames_before_the_first_keyframe_are_dropped():
    fragmenter = Fragmenter(None, 1000)
    assert fragmenter.add(0, False, b"p0") == []
    assert fragmenter.add(33, False, b"p1") == []
    assert fragmenter.add(66, True, b"k") == []
    assert fragmenter.add(99, False, b"p") == []
    [fragment] = fragmenter.flush()
    assert fragmenter.dropped_before_keyframe == 2
    assert fragment.cluster_timecode == 66 and [f.data for f in fragment.frames] == [b"k", b"p"]
    assert fragmenter.flush() == []


def test_timecodes_must_increase_between_fragments():
    fragmenter = Fragmenter(None, 100)
    fragmenter.add(1000, True, b"k")
    fragmenter.add(1033, False, b"p")
    with pytest.raises(FragmenterError, match="keyframe at 900 is before"):
        fragmenter.add(900, True, b"k")
    fragmenter.flush()
    with pytest.raises(FragmenterError, match="not after the previous fragment"):
        fragmenter.add(1000, True, b"k")


def test_a_gop_longer_than_a_cluster_can_hold_is_refused():
    fragmenter = Fragmenter(None, 2000)
    fragmenter.add(0, True, b"k")
    fragmenter.add(30_000, False, b"p")
    with pytest.raises(FragmenterError, match="no keyframe for 40.0 s.*re-encode"):
        fragmenter.add(40_000, False, b"p")


def test_over_ten_seconds_is_warned_about(caplog):
    fragments = fragment_packets([Packet(0, True, b"k"), Packet(10_500, False, b"p"),
                                  Packet(11_000, True, b"k")], None, 2000)
    assert len(fragments) == 2
    assert "rejects fragments over 10 s" in caplog.text


def test_bad_duration():
    with pytest.raises(ValueError, match="must be positive"):
        Fragmenter(None, 0)
