"""The fragment reader against real GetMedia captures and hand-built MKV.

Counts and values below were measured with the reader and cross-checked where an independent
source exists (the captures' README, PyAV's demuxer, the GetMedia output of the same video).
"""

from __future__ import annotations

import io
import random

import pytest

from consumer.wire import (
    Fragment,
    FragmentReader,
    Frame,
    InvalidMkvError,
    TruncatedMkvError,
    ebml,
    iter_fragments,
    model,
    read_fragments,
    writer,
)

from .reader_helpers import (
    ALL_CAPTURES,
    GETMEDIA,
    H264,
    VIDEO,
    block_header,
    feed_in_chunks,
    getmedia_fragment,
    only,
    signature,
)

# --- the real captures ---------------------------------------------------------------------------

OGM_FIRST = 91343852333181432392682062607743920146159169392
OGM_LAST = 91343852333181432412489103236310005892133364608


def test_output_get_media(capture):
    fragments = read_fragments(capture("output_get_media.mkv"))
    assert [len(f.video_frames()) for f in fragments] == [60] * 5
    first, last = fragments[0], fragments[-1]
    assert (first.fragment_number, last.fragment_number) == (OGM_FIRST, OGM_LAST)
    assert (first.server_timestamp, first.producer_timestamp) == (1511852109.126, 1511852108.513)
    assert (last.server_timestamp, last.producer_timestamp) == (1511852114.147, 1511852116.513)
    assert [f.millis_behind_now for f in fragments] == [15858, 14155, 12940, 12414, 12093]
    assert [f.cluster_timecode for f in fragments] == [0, 2000, 4000, 6000, 8000]
    video = first.video_track
    assert (video.codec_id, video.width, video.height) == (H264, 640, 360)
    assert first.tags["ENCODER"] == "Elemental H.264"
    assert first.frames[-1].timecode == 1967


def test_sparse_fragments_are_fragments_1_3_5_of_the_full_capture(capture):
    full = read_fragments(capture("output_get_media.mkv"))
    sparse = read_fragments(capture("output_get_media_sparse_fragments.mkv"))
    assert [f.fragment_number for f in sparse] == [full[i].fragment_number for i in (0, 2, 4)]
    assert [len(f.video_frames()) for f in sparse] == [60] * 3
    for got, want in zip(sparse, (full[0], full[2], full[4])):
        assert [bytes(f.data) for f in got.frames] == [bytes(f.data) for f in want.frames]


def test_renderer_example(capture):
    fragments = read_fragments(capture("kinesis_video_renderer_example_output.mkv"))
    assert [len(f.video_frames()) for f in fragments] == [59] * 7 + [31]
    first, last = fragments[0], fragments[-1]
    assert first.fragment_number == 91343852333181432392682062609776234230823574155
    assert last.fragment_number == 91343852333181432427344383709766881962776549716
    assert (first.server_timestamp, first.producer_timestamp) == (1519423069.07, 1519423067.997)
    assert (last.server_timestamp, last.producer_timestamp) == (1519423069.199, 1519423081.994)
    assert (first.millis_behind_now, last.millis_behind_now) == (7336747, 7337577)
    assert (first.video_track.width, first.video_track.height) == (640, 480)


def test_mixed_tags(capture):
    fragments = read_fragments(capture("test_mixed_tags.mkv"))
    assert [len(f.video_frames()) for f in fragments] == [10] * 10
    assert fragments[0].fragment_number == 91343852333713038908964877623801423530396737899
    assert fragments[-1].fragment_number == 91343852333713038953530719038075113645398559869
    assert [f.producer_timestamp for f in fragments] == [5.0 * i for i in range(10)]
    assert (fragments[0].server_timestamp, fragments[-1].server_timestamp) == (
        1537574915.281, 1537574916.095)
    producer_tags = {f"testTag_{i}": f"testTag_{i}_Value" for i in range(5)}
    for fragment in fragments:
        assert fragment.video_track.codec_id == "V_MS/VFW/FOURCC"  # reported as-is
        assert fragment.tags == producer_tags


def test_tags_and_no_cluster(capture):
    fragment = only(read_fragments(capture("test_tags_empty_cluster.mkv")))
    assert fragment.frames == [] and fragment.tracks == ()
    assert fragment.fragment_number is None
    assert sorted(fragment.tags) == [f"testTag_{i}" for i in range(5)]


def test_empty_fragment_with_aws_tags(capture):
    fragment = only(read_fragments(capture("empty-mkv-with-tags.mkv")))
    assert fragment.frames == []
    assert fragment.fragment_number == 91343852338378294813695855977007281634605393997
    assert fragment.server_timestamp == 1516124526.822
    assert fragment.producer_timestamp == 1515865326.543
    assert fragment.millis_behind_now is None and fragment.continuation_token is None
    assert fragment.tags == {}  # AWS tags become fields, not producer tags
    video = fragment.video_track
    assert (video.codec_id, video.width, video.height) == (H264, 960, 720)


def test_producer_side_clusters_are_fragments(capture):
    fragments = read_fragments(capture("clusters.mkv"))
    assert [len(f.video_frames()) for f in fragments] == [59] * 7 + [31]
    assert all(f.fragment_number is None for f in fragments)
    assert fragments[1].cluster_timecode == 1999
    assert [f.frames[0].keyframe for f in fragments] == [True] * 8


def test_producer_side_is_what_getmedia_returned_for_it(capture):
    """clusters.mkv is the PutMedia side of the renderer example: same frames, same timecodes."""
    def frames(name):
        return [(f.track, f.timecode, f.keyframe, bytes(f.data))
                for fragment in read_fragments(capture(name)) for f in fragment.frames]
    assert frames("clusters.mkv") == frames("kinesis_video_renderer_example_output.mkv")


def test_vogels_video_and_audio(capture):
    fragments = read_fragments(capture("vogels_330.mkv"))
    assert [len(f.video_frames()) for f in fragments] == [65, 150, 79, 150, 70, 150, 86, 114, 45]
    audio = [f for fragment in fragments for f in fragment.frames if f.track == 2]
    assert len(audio) == 1425
    video, sound = fragments[0].tracks
    assert (video.codec_id, video.width, video.height) == (H264, 640, 330)
    assert (sound.number, sound.codec_id, sound.sampling_frequency, sound.channels) == (
        2, "A_AAC", 48000.0, 2)
    # A producer's clusters need not start on a keyframe; GetMedia fragments always do.
    assert [sum(f.keyframe for f in x.video_frames()) for x in fragments] == [
        1, 1, 0, 1, 0, 1, 0, 1, 1]


@pytest.mark.parametrize("name", ["vogels_330.mkv", "clusters.mkv"])
def test_frames_match_pyav_packets(capture, captures, name):
    """An independent demuxer sees the same payloads, track by track."""
    av = pytest.importorskip("av")
    with av.open(str(captures / name)) as container:
        packets: dict[int, list[bytes]] = {}
        for packet in container.demux():
            if packet.size:
                packets.setdefault(packet.stream.index + 1, []).append(bytes(packet))
    frames: dict[int, list[bytes]] = {}
    for fragment in read_fragments(capture(name)):
        for frame in fragment.frames:
            frames.setdefault(frame.track, []).append(bytes(frame.data))
    assert frames == packets


@pytest.mark.parametrize("name", GETMEDIA)
def test_getmedia_fragment_invariants(capture, name):
    fragments = read_fragments(capture(name))
    numbers = [f.fragment_number for f in fragments]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    for fragment in fragments:
        assert fragment.continuation_token == str(fragment.fragment_number)
        assert fragment.video_frames()[0].keyframe
        assert fragment.error is None and fragment.millis_behind_now > 0
        assert fragment.server_timestamp > 1.5e9


@pytest.mark.parametrize("name", ALL_CAPTURES)
def test_fragments_tile_the_stream(capture, name):
    """Each GetMedia fragment's byte range is its standalone MKV, headers included."""
    data = capture(name)
    fragments = read_fragments(data)
    assert fragments[0].stream_offset == 0
    for before, after in zip(fragments, fragments[1:]):
        assert after.stream_offset == before.stream_offset + before.size
    assert fragments[-1].stream_offset + fragments[-1].size == len(data)
    if name in GETMEDIA:
        second = fragments[1]
        alone = only(read_fragments(data[second.stream_offset:][:second.size]))
        assert alone.stream_offset == 0
        alone.stream_offset = second.stream_offset
        assert signature([alone]) == signature([second])


# --- incremental feeding -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_CAPTURES)
@pytest.mark.parametrize("chunk", [7, 4096])
def test_chunk_size_does_not_change_the_result(capture, name, chunk):
    data = capture(name)
    assert signature(feed_in_chunks(data, chunk)) == signature(read_fragments(data))


@pytest.mark.parametrize("name", ["test_mixed_tags.mkv", "test_tags_empty_cluster.mkv",
                                  "empty-mkv-with-tags.mkv", "output_get_media.mkv"])
def test_byte_by_byte(capture, name):
    data = capture(name)
    if len(data) > 100_000:  # one real 550 KB fragment is enough (and takes about a second)
        first = read_fragments(data)[0]
        data = data[:first.size]
    assert signature(feed_in_chunks(data, 1)) == signature(read_fragments(data))


@pytest.mark.parametrize("name", ["output_get_media.mkv", "test_mixed_tags.mkv"])
def test_fragment_returned_when_its_closing_tags_arrive(capture, name):
    data = capture(name)
    expected = read_fragments(data)
    reader = FragmentReader()
    position = 0
    for fragment in expected:
        end = fragment.stream_offset + fragment.size
        assert reader.feed(data[position:end - 1]) == []  # one byte short: not complete yet
        got = reader.feed(data[end - 1:end])  # nothing of the next fragment has arrived
        assert [f.fragment_number for f in got] == [fragment.fragment_number]
        assert got[0].millis_behind_now == fragment.millis_behind_now
        position = end
    assert reader.close() == []


def test_iter_fragments_reads_a_stream(capture):
    data = capture("test_mixed_tags.mkv")
    got = list(iter_fragments(io.BytesIO(data), chunk_size=1000))
    assert signature(got) == signature(read_fragments(data))


# --- damaged input -------------------------------------------------------------------------------

@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_truncated_mid_cluster(capture, where):
    data = capture("output_get_media.mkv")
    fragments = read_fragments(data)
    third = fragments[2]
    cut = third.stream_offset + int(third.size * where)
    reader = FragmentReader()
    got = reader.feed(data[:cut])
    assert [f.fragment_number for f in got] == [f.fragment_number for f in fragments[:2]]
    with pytest.raises(TruncatedMkvError) as caught:
        reader.close()
    assert third.stream_offset <= caught.value.offset <= cut
    assert "at byte" in str(caught.value)


def test_truncated_stream_yields_complete_fragments_then_raises(capture):
    data = capture("test_mixed_tags.mkv")
    fragments = read_fragments(data)
    cut = fragments[5].stream_offset + fragments[5].size // 2
    got = []
    with pytest.raises(TruncatedMkvError):
        for fragment in iter_fragments(io.BytesIO(data[:cut]), chunk_size=500):
            got.append(fragment)
    assert signature(got) == signature(fragments[:5])


def test_cut_at_a_fragment_boundary_is_a_clean_end(capture):
    data = capture("test_mixed_tags.mkv")
    fragments = read_fragments(data)
    end = fragments[3].stream_offset + fragments[3].size
    assert signature(read_fragments(data[:end])) == signature(fragments[:4])


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes_are_invalid(seed):
    garbage = random.Random(seed).randbytes(4096)
    with pytest.raises(InvalidMkvError):
        read_fragments(garbage)


def test_text_is_invalid_at_byte_zero():
    with pytest.raises(InvalidMkvError) as caught:
        FragmentReader().feed(b"<html>503 Service Unavailable</html>")
    assert caught.value.offset == 0


GARBAGE = b"\x00not an MKV element\x00" * 7


def _two_fragments_with_garbage(data: bytes) -> tuple[bytes, list[Fragment]]:
    fragments = read_fragments(data)
    first, second = fragments[0], fragments[1]
    return (data[:first.size] + GARBAGE
            + data[second.stream_offset:second.stream_offset + second.size]), fragments[:2]


@pytest.mark.parametrize("chunk", [7, 64 * 1024])
def test_resync_skips_garbage_between_fragments(capture, chunk):
    stream, good = _two_fragments_with_garbage(capture("test_mixed_tags.mkv"))
    reader = FragmentReader()
    got = list(iter_fragments(io.BytesIO(stream), chunk_size=chunk, resync=True, reader=reader))
    assert [f.fragment_number for f in got] == [f.fragment_number for f in good]
    assert [bytes(f.data) for f in got[1].frames] == [bytes(f.data) for f in good[1].frames]
    assert reader.bytes_skipped == len(GARBAGE)


def test_garbage_without_resync_stops_after_the_first_fragment(capture):
    stream, good = _two_fragments_with_garbage(capture("test_mixed_tags.mkv"))
    got = []
    with pytest.raises(InvalidMkvError) as caught:
        for fragment in iter_fragments(io.BytesIO(stream), chunk_size=64 * 1024):
            got.append(fragment)
    assert [f.fragment_number for f in got] == [good[0].fragment_number]
    assert caught.value.offset == good[0].size  # where the garbage begins


def test_feed_after_invalid_data_needs_resync():
    reader = FragmentReader()
    good = getmedia_fragment(1, 0, [Frame(1, 0, True, b"key")])
    with pytest.raises(InvalidMkvError) as caught:
        reader.feed(good + GARBAGE)
    assert [f.fragment_number for f in caught.value.fragments] == [1]
    with pytest.raises(InvalidMkvError):
        reader.feed(getmedia_fragment(2, 0, [Frame(1, 0, True, b"key")]))
    reader.resync()
    assert [f.fragment_number for f in reader.feed(getmedia_fragment(3, 0, []))] == [3]


@pytest.mark.parametrize("bad", [
    ebml.element(ebml.TAGS, b"\x73\x73\x85abc"),  # a Tag that overruns its Tags
    ebml.element(ebml.SIMPLE_BLOCK, b""),  # an empty block
    ebml.element(ebml.SIMPLE_BLOCK, b"\x81\x00"),  # a block shorter than its header
    ebml.element(ebml.SIMPLE_BLOCK, block_header(1, 0, 0x84) + b"\x02abcd"),  # 3 laces of 4/3 B
    writer.tags({model.FRAGMENT_NUMBER: "not-a-number"}),
], ids=["tags", "empty-block", "short-block", "fixed-lacing", "fragment-number"])
def test_malformed_element_is_invalid_and_resync_recovers(bad):
    """A malformed payload stops the reader like any invalid data, and --resync gets past it."""
    cluster = ebml.unknown_size_header(ebml.CLUSTER) + ebml.uint_element(ebml.TIMECODE, 0)
    damaged = writer.stream_header([VIDEO]) + cluster + bad
    after = getmedia_fragment(7, 0, [Frame(1, 0, True, b"key")])
    with pytest.raises(InvalidMkvError) as caught:
        read_fragments(damaged + after)
    assert caught.value.offset == len(damaged) - len(bad)  # the offset of the bad element
    assert [f.fragment_number for f in read_fragments(damaged + after, resync=True)] == [7]


def test_resync_past_a_foreign_ebml_document(capture):
    data = capture("test_mixed_tags.mkv")
    foreign = ebml.element(ebml.EBML, ebml.string_element(ebml.DOC_TYPE, "webp"))
    with pytest.raises(InvalidMkvError, match="not matroska"):
        read_fragments(foreign + data)
    reader = FragmentReader()
    got = list(iter_fragments(io.BytesIO(foreign + data), resync=True, reader=reader))
    assert len(got) == 10 and reader.bytes_skipped == len(foreign)
