"""Shared by the reader tests: hand-built KVS MKV and comparisons."""

from __future__ import annotations

from consumer.wire import Fragment, FragmentReader, Frame, Track, ebml, model, writer

H264 = "V_MPEG4/ISO/AVC"
VIDEO = Track(1, ebml.TRACK_TYPE_VIDEO, H264, width=64, height=48)
AUDIO = Track(2, ebml.TRACK_TYPE_AUDIO, "A_AAC", sampling_frequency=48000.0, channels=2)
GETMEDIA = ("output_get_media.mkv", "output_get_media_sparse_fragments.mkv",
            "kinesis_video_renderer_example_output.mkv", "test_mixed_tags.mkv")
ALL_CAPTURES = GETMEDIA + ("test_tags_empty_cluster.mkv", "empty-mkv-with-tags.mkv",
                           "clusters.mkv", "vogels_330.mkv")


def signature(fragments: list[Fragment]) -> list[tuple]:
    """Everything a fragment carries, with frame payloads as bytes, for equality checks."""
    return [
        (f.fragment_number, f.server_timestamp, f.producer_timestamp, f.millis_behind_now,
         f.continuation_token, str(f.error), f.tags, f.tracks, f.timecode_scale,
         f.cluster_timecode, f.stream_offset, f.size,
         [(fr.track, fr.timecode, fr.keyframe, bytes(fr.data), fr.duration) for fr in f.frames])
        for f in fragments
    ]


def feed_in_chunks(data: bytes, size: int) -> list[Fragment]:
    reader = FragmentReader()
    out: list[Fragment] = []
    for start in range(0, len(data), size):
        out += reader.feed(data[start:start + size])
    return out + reader.close()


def getmedia_fragment(number: int, cluster_timecode: int, frames: list[Frame],
                      tracks: tuple[Track, ...] = (VIDEO,)) -> bytes:
    """One fragment as GetMedia sends it: a standalone MKV with tags around its cluster."""
    return (writer.stream_header(tracks)
            + writer.tags({model.FRAGMENT_NUMBER: str(number),
                           model.SERVER_TIMESTAMP: f"{1700000000 + number}.5",
                           model.PRODUCER_TIMESTAMP: f"{1699999999 + number}.25"})
            + writer.cluster(cluster_timecode, frames)
            + writer.tags({model.MILLIS_BEHIND_NOW: "42", model.CONTINUATION_TOKEN: str(number)}))


def cluster_with(*children: bytes, timecode: int = 1000) -> bytes:
    """A known-size cluster of hand-built children after a producer stream header."""
    body = ebml.uint_element(ebml.TIMECODE, timecode) + b"".join(children)
    return writer.stream_header([VIDEO, AUDIO]) + ebml.element(ebml.CLUSTER, body)


def block_header(track: int, relative: int, flags: int) -> bytes:
    return ebml.encode_size(track) + relative.to_bytes(2, "big", signed=True) + bytes([flags])


def only(fragments: list[Fragment]) -> Fragment:
    assert len(fragments) == 1, [f.fragment_number for f in fragments]
    return fragments[0]
