"""Event clips (issue 5): fragments re-muxed to MP4 from the original packets, no re-encoding."""

from __future__ import annotations

import dataclasses
import io

import av
import pytest

from consumer.formats.clips import clip_mp4
from consumer.wire import Fragment, read_fragments


def _frames(fragments):
    return [f for fragment in fragments for f in fragment.video_frames()]


def _packets(mp4: bytes):
    with av.open(io.BytesIO(mp4)) as container:
        stream = container.streams.video[0]
        return [(bytes(p), p.is_keyframe, p.pts * stream.time_base)
                for p in container.demux(stream) if p.size]


def _decoded(mp4: bytes):
    with av.open(io.BytesIO(mp4)) as container:
        return [(f.width, f.height) for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def get_media(capture):
    return read_fragments(capture("output_get_media.mkv"))


def test_clip_of_two_fragments_decodes_with_the_source_packets(get_media):
    source = get_media[2:4]
    mp4 = clip_mp4(source)
    assert mp4[4:8] == b"ftyp" and mp4[32:40].endswith(b"moov")  # faststart: index first
    assert _decoded(mp4) == [(640, 360)] * 120
    packets = _packets(mp4)
    frames = _frames(source)
    assert len(packets) == len(frames) == 120
    for (payload, keyframe, _), frame in zip(packets, frames):
        assert payload == bytes(frame.data)  # avcC length-prefixed NALs, copied 1:1
        assert keyframe == frame.keyframe
    times = [t for *_, t in packets]
    assert times[0] == 0 and times == sorted(set(times))
    assert float(times[-1]) == pytest.approx(3.967, abs=0.002)  # source timecodes 4000..7967 ms


def test_trimmed_clip_starts_on_the_keyframe_before_the_start(get_media):
    fragment = get_media[3]
    base = fragment.producer_timestamp
    mp4 = clip_mp4(get_media, start_time=base + 1.0, end_time=base + 1.5)
    frames = fragment.video_frames()
    wanted = [f for f in frames if fragment.frame_offset(f) <= 1.5]
    packets = _packets(mp4)
    assert frames[0].keyframe and packets[0][1]
    assert [p for p, *_ in packets] == [bytes(f.data) for f in wanted]
    assert len(_decoded(mp4)) == len(wanted)


def test_clip_of_a_producer_side_stream(capture):
    fragments = read_fragments(capture("clusters.mkv"))
    assert len(fragments) == 8
    mp4 = clip_mp4(fragments)
    frames = _frames(fragments)
    assert _decoded(mp4) == [(640, 480)] * len(frames)
    assert [p for p, *_ in _packets(mp4)] == [bytes(f.data) for f in frames]


@pytest.mark.parametrize("order", [(0, 0), (3, 1)], ids=["repeated", "backwards"])
def test_timecodes_that_repeat_or_go_back_give_a_monotonic_clip(get_media, order):
    source = [get_media[i] for i in order]
    mp4 = clip_mp4(source)
    times = [t for *_, t in _packets(mp4)]
    assert times == sorted(set(times)) and len(times) == 120
    assert float(times[60] - times[59]) == pytest.approx(1 / 30, abs=0.002)
    assert len(_decoded(mp4)) == 120


def test_errors(get_media):
    fragment = get_media[0]
    with pytest.raises(ValueError, match="no video frames"):
        clip_mp4([])
    with pytest.raises(ValueError, match="no video frames"):
        clip_mp4([Fragment(tracks=(), frames=list(fragment.frames))])
    no_keys = dataclasses.replace(
        fragment, frames=[dataclasses.replace(f, keyframe=False) for f in fragment.frames])
    with pytest.raises(ValueError, match="no keyframe"):
        clip_mp4([no_keys])
    vp8 = dataclasses.replace(fragment, tracks=tuple(
        dataclasses.replace(t, codec_id="V_VP8") for t in fragment.tracks))
    with pytest.raises(ValueError, match="V_VP8"):
        clip_mp4([vp8])
    with pytest.raises(ValueError, match="end_time"):
        clip_mp4([fragment], end_time=fragment.producer_timestamp - 10)
