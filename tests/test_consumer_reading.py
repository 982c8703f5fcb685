"""Reading and decoding: GetMedia sessions against the local service, the decoder on real H.264,
and the fragment tracker's ordering."""

from __future__ import annotations

import logging
import threading
import time

import av
import numpy as np
import pytest

from consumer.cloud.aws import AwsContext
from consumer.cloud.discovery import discover
from consumer.cloud.media_source import MediaSource, StreamGone
from consumer.config import Sampling, SamplingMode, Streams
from consumer.pipeline.decode import DecodeError, StreamDecoder
from consumer.pipeline.ledger import FragmentLedger
from consumer.wire import read_fragments
from infra.local.kvs_service import LocalKvsService
from infra.local.limits import Limits

from .kvs_wire_helpers import producer_mkv, put_media


@pytest.fixture(scope="module")
def get_media_fragments(capture):
    return read_fragments(capture("output_get_media.mkv"))


@pytest.mark.parametrize("mode, fps, per_fragment", [
    (SamplingMode.ALL, 1, 60), (SamplingMode.FPS, 2, 4), (SamplingMode.FPS, 5, 10),
    (SamplingMode.FPS, 15, 30), (SamplingMode.FPS, 30, 60),  # ms-rounded times still on grid
    (SamplingMode.KEYFRAMES, 1, 1)])
def test_decoder_sampling_and_provenance(get_media_fragments, mode, fps, per_fragment):
    decoder = StreamDecoder("cam", "arn:cam", Sampling(mode=mode, fps=fps))
    batches = [decoder.decode(f) for f in get_media_fragments]
    assert [len(b) for b in batches] == [per_fragment] * 5
    first = batches[1][0]
    assert first.image.shape == (360, 640, 3) and first.image.dtype == np.uint8
    assert first.source.fragment_number == get_media_fragments[1].fragment_number
    assert first.source.producer_timestamp == get_media_fragments[1].producer_timestamp
    assert first.source.server_timestamp == get_media_fragments[1].server_timestamp
    offsets = [frame.source.frame_offset for frame in batches[1]]
    # the schedule restarts with each fragment, so a replay picks the same frames
    assert offsets == sorted(offsets) and offsets[0] == 0.0
    assert len({frame.source.record_id for b in batches for frame in b}) == 5 * per_fragment
    if mode is SamplingMode.KEYFRAMES:
        assert decoder.frames_decoded == 5  # non-key frames were never decoded


def test_decoded_pixels_match_pyav_reading_the_file(capture, tmp_path, get_media_fragments):
    decoder = StreamDecoder("cam", "arn:cam", Sampling(mode=SamplingMode.ALL))
    ours = [f.image for f in decoder.decode(get_media_fragments[0])]
    path = tmp_path / "first.mkv"
    data = capture("output_get_media.mkv")
    path.write_bytes(data[:get_media_fragments[1].stream_offset])
    with av.open(str(path)) as container:
        theirs = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(ours) == len(theirs) == 60
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs))


def test_undecodable_codec_is_a_decode_error_naming_the_fragment(capture):
    fragments = read_fragments(capture("test_mixed_tags.mkv"))
    decoder = StreamDecoder("cam", "arn:cam", Sampling())
    with pytest.raises(DecodeError) as err:
        decoder.decode(fragments[0])
    assert str(fragments[0].fragment_number) in str(err.value) and "V_MS/VFW/FOURCC" in str(err.value)


def test_garbage_h264_is_reported_and_the_next_fragment_decodes(get_media_fragments):
    import dataclasses
    original = get_media_fragments[0]
    broken = dataclasses.replace(original, frames=[  # zeros: no decodable NAL units
        dataclasses.replace(f, data=bytes(len(f.data))) for f in original.frames])
    decoder = StreamDecoder("cam", "arn:cam", Sampling(mode=SamplingMode.FPS, fps=2))
    with pytest.raises(DecodeError):
        decoder.decode(broken)
    assert len(decoder.decode(get_media_fragments[1])) == 4


def test_fps_sampling_decodes_only_up_to_the_last_sampled_frame_and_hands_each_out_at_once(
        get_media_fragments):
    """At 1 frame/s a 2 s fragment of 60 frames gives frames 0 and 30: the codec sees 31
    frames, not 60, and frame 0 comes out before the rest of the fragment is decoded."""
    fragment = get_media_fragments[0]
    decoder = StreamDecoder("cam", "arn:cam", Sampling(mode=SamplingMode.FPS, fps=1))
    frames = decoder.frames(fragment)
    first = next(frames)
    assert first.source.frame_index == 0 and decoder.frames_decoded < 31
    assert [f.source.frame_index for f in frames] == [30]
    assert decoder.frames_decoded == 31 and len(fragment.video_frames()) == 60
    everything = StreamDecoder("cam", "arn:cam", Sampling(mode=SamplingMode.ALL))
    assert len(everything.decode(fragment)) == everything.frames_decoded == 60


def test_tracker_reports_completions_in_fragment_order():
    completed: list[int] = []
    tracker = FragmentLedger("arn", lambda t: completed.append(t.fragment_number))
    empty, first, second = tracker.begin(5), tracker.begin(10), tracker.begin(11)
    for ticket in (first, second):
        ticket.frame_queued()
    second.seal()
    second.output_added()
    second.frame_analysed("src", "result")
    second.output_done(True)
    assert completed == []  # 11 is done but waits for 10
    empty.seal()
    assert completed == [5]
    first.seal()
    first.frame_skipped()
    assert completed == [5, 10, 11]


@pytest.mark.parametrize("fenced", [False, True])
def test_a_failed_output_blocks_the_checkpoint_and_says_why(caplog, fenced):
    """A delivery failure is an error; the same refusal after the lease was lost is the fence
    at work (the next owner re-reads the fragment), said as such."""
    completed: list[int] = []
    ledger = FragmentLedger("arn", lambda t: completed.append(t.fragment_number))
    ticket, after = ledger.begin(7), ledger.begin(8)
    if fenced:
        ledger.fence()
    ticket.output_added()
    ticket.seal()
    after.seal()
    with caplog.at_level(logging.INFO, logger="consumer.pipeline.ledger"):
        ticket.output_done(False)
    assert completed == [] and ledger.blocked_at == 7
    (record,) = caplog.records
    assert record.levelno == (logging.INFO if fenced else logging.ERROR)
    assert ("left to the next owner" in record.message) == fenced


@pytest.fixture
def kvs():
    with LocalKvsService(limits=Limits(getmedia_idle_seconds=0.5)) as service:
        yield service


def test_media_source_resumes_with_continuation_token_after_each_response_ends(kvs, capture):
    source = read_fragments(capture("clusters.mkv"))
    aws = AwsContext(kvs.endpoint_url)
    arn = aws.client().create_stream(StreamName="cam")["StreamARN"]
    put_media(kvs.endpoint_url, "cam", producer_mkv(source[:3], int(time.time() * 1000)))
    media = MediaSource(aws, "cam", arn, start="EARLIEST")
    got = []

    def read():
        for fragment in media.fragments():
            got.append(fragment.fragment_number)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(1.5)  # the first response ends after 0.5 s idle; the source reconnects
    put_media(kvs.endpoint_url, "cam", producer_mkv(source[3:5], int(time.time() * 1000)))
    deadline = time.monotonic() + 10
    while len(got) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    media.stop()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - started < 1.5  # stop interrupts
    assert len(got) == 5 and got == sorted(got) and len(set(got)) == 5
    assert media.connections >= 2 and media.selector()["StartSelectorType"] == "CONTINUATION_TOKEN"

    after = MediaSource(aws, "cam", arn, after_fragment=got[2])
    assert after.selector() == {"StartSelectorType": "FRAGMENT_NUMBER",
                                "AfterFragmentNumber": str(got[2])}


def test_media_source_ends_with_stream_gone_when_the_stream_is_deleted(kvs):
    aws = AwsContext(kvs.endpoint_url)
    arn = aws.client().create_stream(StreamName="doomed")["StreamARN"]
    media = MediaSource(aws, "doomed", arn, start="NOW")
    aws.client().delete_stream(StreamARN=arn)
    with pytest.raises(StreamGone):
        list(media.fragments())


def test_discovery_by_names_prefix_and_tags(kvs):
    client = AwsContext(kvs.endpoint_url).client()
    client.create_stream(StreamName="lobby-1", Tags={"site": "hq"})
    client.create_stream(StreamName="lobby-2", Tags={"site": "annex"})
    client.create_stream(StreamName="yard")
    assert set(discover(client, Streams(names=["yard", "missing"]))) == {"yard"}
    assert set(discover(client, Streams(prefix="lobby-"))) == {"lobby-1", "lobby-2"}
    assert set(discover(client, Streams(tags={"site": "hq"}))) == {"lobby-1"}
    arn = discover(client, Streams(names=["yard"]))["yard"]
    assert discover(client, Streams(names=[arn])) == {"yard": arn}
