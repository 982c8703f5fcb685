"""The fragment reader on timecodes, tracks, blocks and lacing, built by hand."""

from __future__ import annotations

import pytest

from consumer.wire import (
    FragmentReader,
    Frame,
    GetMediaError,
    Track,
    ebml,
    model,
    read_fragments,
    writer,
)

from .reader_helpers import (
    AUDIO,
    VIDEO,
    block_header,
    cluster_with,
    feed_in_chunks,
    getmedia_fragment,
    only,
)

# --- timecodes -----------------------------------------------------------------------------------

def test_repeating_and_backward_timecodes_keep_every_frame_in_order():
    """Fragment boundaries where FFmpeg can drop a frame: a repeated and a backward timecode."""
    plan = [(1, 0, [0, 33, 66]), (2, 0, [0, 33]), (3, 2000, [0, -40, 33]), (4, 1000, [0, 33])]
    stream = b""
    expected = []
    for number, cluster_timecode, relatives in plan:
        frames = [Frame(1, cluster_timecode + r, i == 0, f"{number}:{i}".encode())
                  for i, r in enumerate(relatives)]
        stream += getmedia_fragment(number, cluster_timecode, frames)
        expected += [(number, f.timecode, f.keyframe, f.data) for f in frames]
    for chunk in (1, 5, len(stream)):
        got = [(fragment.fragment_number, f.timecode, f.keyframe, bytes(f.data))
               for fragment in feed_in_chunks(stream, chunk) for f in fragment.frames]
        assert got == expected


def test_producer_side_clusters_going_backwards():
    body = b"".join(writer.cluster(tc, [Frame(1, tc, True, b"a%d" % i), Frame(1, tc + 1, False,
                                                                             b"b%d" % i)])
                    for i, tc in enumerate([2000, 1000, 1000, 0]))
    fragments = read_fragments(writer.stream_header([VIDEO]) + body)
    assert [f.cluster_timecode for f in fragments] == [2000, 1000, 1000, 0]
    assert [bytes(f.data) for x in fragments for f in x.frames] == [
        b"a0", b"b0", b"a1", b"b1", b"a2", b"b2", b"a3", b"b3"]


# --- tracks, blocks, lacing ----------------------------------------------------------------------

def test_video_and_audio_frames_keep_their_track():
    frames = [Frame(1, 0, True, b"v0"), Frame(2, 0, True, b"a0"), Frame(2, 21, True, b"a1"),
              Frame(1, 33, False, b"v1")]
    fragment = only(read_fragments(getmedia_fragment(5, 0, frames, (VIDEO, AUDIO))))
    assert [(f.track, f.timecode, f.keyframe, bytes(f.data)) for f in fragment.frames] == [
        (1, 0, True, b"v0"), (2, 0, True, b"a0"), (2, 21, True, b"a1"), (1, 33, False, b"v1")]
    assert [bytes(f.data) for f in fragment.video_frames()] == [b"v0", b"v1"]
    assert fragment.track(2).codec_id == "A_AAC" and fragment.track(2).channels == 2


def test_other_codec_ids_are_reported_as_is():
    vp9 = Track(1, ebml.TRACK_TYPE_VIDEO, "V_VP9", width=1280, height=720)
    fragment = only(read_fragments(getmedia_fragment(1, 0, [Frame(1, 0, True, b"x")], (vp9,))))
    assert (fragment.video_track.codec_id, fragment.video_track.width) == ("V_VP9", 1280)


def xiph_size(size: int) -> bytes:
    return b"\xff" * (size // 255) + bytes([size % 255])


def ebml_signed(diff: int) -> bytes:
    """A 2-byte EBML signed vint (EBML lacing stores size differences this way)."""
    return (0x4000 | (diff + (1 << 13) - 1)).to_bytes(2, "big")


LACES = [b"x" * 300, b"yy", b"z" * 5]


@pytest.mark.parametrize("lacing,sizes", [
    (1, xiph_size(300) + xiph_size(2)),
    (3, ebml.encode_size(300) + ebml_signed(2 - 300)),
], ids=["xiph", "ebml"])
def test_laced_block_is_unlaced(lacing, sizes):
    block = block_header(2, 7, 0x80 | lacing << 1) + bytes([len(LACES) - 1]) + sizes
    fragment = only(read_fragments(cluster_with(
        ebml.element(ebml.SIMPLE_BLOCK, block + b"".join(LACES)))))
    assert [(f.track, f.timecode, f.keyframe, bytes(f.data)) for f in fragment.frames] == [
        (2, 1007, True, data) for data in LACES]


def test_fixed_lacing_is_unlaced():
    laces = [b"abcd", b"efgh", b"ijkl"]
    block = block_header(2, 0, 0x80 | 2 << 1) + b"\x02" + b"".join(laces)
    fragment = only(read_fragments(cluster_with(ebml.element(ebml.SIMPLE_BLOCK, block))))
    assert [bytes(f.data) for f in fragment.frames] == laces


def test_ebml_lacing_of_a_single_frame():
    block = block_header(2, 0, 0x80 | 3 << 1) + b"\x00" + b"only"
    fragment = only(read_fragments(cluster_with(ebml.element(ebml.SIMPLE_BLOCK, block))))
    assert [bytes(f.data) for f in fragment.frames] == [b"only"]


def test_block_group_keyframe_comes_from_reference_block():
    def group(data: bytes, relative: int, reference: bool) -> bytes:
        children = ebml.element(ebml.BLOCK, block_header(1, relative, 0) + data)
        children += ebml.uint_element(ebml.BLOCK_DURATION, 33)
        if reference:
            children += ebml.element(ebml.REFERENCE_BLOCK, (-33).to_bytes(1, "big", signed=True))
        return ebml.element(ebml.BLOCK_GROUP, children)

    fragment = only(read_fragments(cluster_with(group(b"I", 0, False), group(b"P", 33, True))))
    assert [(bytes(f.data), f.timecode, f.keyframe, f.duration) for f in fragment.frames] == [
        (b"I", 1000, True, 33), (b"P", 1033, False, 33)]


def test_simple_block_keyframe_flag():
    fragment = only(read_fragments(cluster_with(
        ebml.element(ebml.SIMPLE_BLOCK, block_header(1, 0, 0x80) + b"I"),
        ebml.element(ebml.SIMPLE_BLOCK, block_header(1, 33, 0x00) + b"P"))))
    assert [f.keyframe for f in fragment.frames] == [True, False]


# --- GetMedia errors -----------------------------------------------------------------------------

def error_segment(error_id: str, code: str) -> bytes:
    return (writer.ebml_header() + writer.segment_start()
            + writer.tags({model.ERROR_CODE: code, model.ERROR_ID: error_id}))


def test_error_tags_yield_a_fragment_with_the_error():
    stream = (getmedia_fragment(1, 0, [Frame(1, 0, True, b"key")])
              + error_segment("4000", "REQUESTED_FRAGMENT_NOT_FOUND"))
    good, failed = read_fragments(stream)
    assert good.error is None
    assert isinstance(failed.error, GetMediaError)
    assert (failed.error.error_id, failed.error.code) == (4000, "REQUESTED_FRAGMENT_NOT_FOUND")
    assert failed.error.retryable and failed.frames == []


def test_kms_error_is_not_retryable():
    failed = only(read_fragments(error_segment("4501", "KMS_KEY_DISABLED")))
    assert failed.error.error_id == 4501 and not failed.error.retryable


def test_cluster_ends_fragment_returns_a_producer_fragment_when_its_cluster_ends(capture):
    """PutMedia ingest mode: a known-size cluster completes its fragment without the next one."""
    data = capture("clusters.mkv")
    whole = read_fragments(data)
    second_cluster = whole[1].stream_offset
    default, eager = FragmentReader(), FragmentReader(cluster_ends_fragment=True)
    assert default.feed(data[:second_cluster]) == []
    first = eager.feed(data[:second_cluster])
    assert [len(f.frames) for f in first] == [59]
    rest = eager.feed(data[second_cluster:]) + eager.close()
    assert [len(f.frames) for f in first + rest] == [len(f.frames) for f in whole]
