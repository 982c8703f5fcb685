"""Camera sources: real files re-muxed and re-encoded, loops, the test pattern, live-source smoke."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np
import pytest

from consumer.media import h264
from consumer.media.pattern import clock_text, draw_frame, subject_position
from consumer.media.sources import (
    FileSource,
    LiveSource,
    SourceError,
    TestPatternSource,
    decode_packets,
    open_source,
)
from consumer.wire import read_fragments


@pytest.fixture(scope="module")
def vogels(captures):
    return captures / "vogels_330.mkv"


def file_video_frames(path):
    """The video frames of a producer-side MKV, straight from consumer.wire."""
    fragments = read_fragments(path.read_bytes())
    return fragments[0].video_track, [f for fr in fragments for f in fr.video_frames()]


def test_h264_file_is_remuxed_byte_for_byte(vogels):
    source = FileSource(vogels)
    assert (source.codec, source.remuxed, source.duration_ms) == ("h264", True, 30400)
    packets = list(source)
    track, frames = file_video_frames(vogels)
    assert len(packets) == len(frames) == 909
    assert source.track.codec_private == track.codec_private
    assert (source.track.width, source.track.height, source.track.codec_id) == \
        (640, 330, "V_MPEG4/ISO/AVC")
    assert [p.data for p in packets] == [bytes(f.data) for f in frames]
    assert [p.pts_ms for p in packets] == [f.timecode for f in frames]
    assert [p.pts_ms for p in packets if p.keyframe] == [0, 2169, 9810, 17150, 25025, 28829]


def test_other_codecs_are_reencoded_with_a_fixed_gop(tmp_path):
    path = tmp_path / "clip.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(75):
            rgb = np.zeros((120, 160, 3), np.uint8)
            rgb[:, (i * 2) % 160:(i * 2) % 160 + 10] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    source = FileSource(path)
    assert (source.codec, source.remuxed) == ("mpeg4", False)
    packets = list(source)
    assert len(packets) == 75
    assert [p.pts_ms for p in packets if p.keyframe] == [0, 1000, 2000]
    assert packets[1].pts_ms == 40
    assert h264.is_avcc_config(source.track.codec_private)
    decoded = decode_packets(source.track, [p.data for p in packets])
    assert len(decoded) == 75 and decoded[0].shape == (120, 160, 3)
    assert decoded[10][:, 20:30].mean() > 200 and decoded[10][:, 60:].mean() < 40


def test_mp4_with_b_frames_is_remuxed_and_decodes_identically(tmp_path):
    path = tmp_path / "bframes.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.options = {"bframes": "3", "g": "50"}
        for i in range(60):
            rgb = np.zeros((120, 160, 3), np.uint8)
            rgb[:, (i * 3) % 150:(i * 3) % 150 + 10] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    source = FileSource(path)
    packets = list(source)
    assert source.remuxed and len(packets) == 60
    pts = [p.pts_ms for p in packets]
    assert pts != sorted(pts)  # decode order, presentation timestamps
    stored = decode_packets(source.track, [p.data for p in packets], format=None)
    with av.open(str(path)) as container:
        direct = [frame.to_ndarray() for frame in container.decode(video=0)]
    assert len(stored) == len(direct) == 60
    assert all(np.array_equal(a, b) for a, b in zip(stored, direct))


def test_h264_reencoded_on_request_gets_a_keyframe_every_second(vogels):
    source = FileSource(vogels, reencode=True)
    packets = []
    for packet in source:
        packets.append(packet)
        if len(packets) == 85:
            break
    assert [p.pts_ms for p in packets if p.keyframe] == [0, 1001, 2002]  # 29.97 fps, GOP 30
    assert source.track.codec_private != file_video_frames(vogels)[0].codec_private


def test_loop_continues_the_timeline(captures):
    source = FileSource(captures / "clusters.mkv", loop=True)
    packets = []
    for packet in source:
        packets.append(packet)
        if len(packets) == 444 * 2 + 10:
            break
    first, second = packets[:444], packets[444:888]
    assert [p.data for p in first] == [p.data for p in second]
    assert second[0].keyframe and second[0].pts_ms == first[-1].pts_ms + 33
    pts = [p.pts_ms for p in packets]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert packets[888].pts_ms == 2 * second[0].pts_ms


def test_test_pattern_keyframes_clock_and_subject():
    epoch = 1_700_000_000_000
    source = TestPatternSource(320, 240, fps=10, frames=25, epoch_ms=epoch)
    packets = list(source)
    assert len(packets) == 25 and source.duration_ms == 2500
    assert [p.pts_ms for p in packets if p.keyframe] == [0, 1000, 2000]
    decoded = decode_packets(source.track, [p.data for p in packets])
    assert len(decoded) == 25
    for index in (0, 13, 24):
        expected = draw_frame(320, 240, index * 100, epoch, index)
        assert np.abs(decoded[index].astype(int) - expected).mean() < 6  # lossy, but the same
    # The subject moves: where draw_frame puts it, the decoded frame is orange.
    size = 240 // 6
    x, y = subject_position(1300, 320, 240, size)
    patch = decoded[13][y + 5:y + size - 5, x + 5:x + size - 5].reshape(-1, 3).mean(axis=0)
    assert patch[0] > 200 and 90 < patch[1] < 170 and patch[2] < 60
    assert subject_position(0, 320, 240, size) != subject_position(1300, 320, 240, size)
    assert clock_text(epoch + 1300) == "22:13:21.300"


def test_test_pattern_defaults_to_now_and_paces_nothing():
    source = TestPatternSource(64, 48, frames=3)
    start = time.time() * 1000
    list(source)
    assert start - 1000 <= source.epoch_ms <= time.time() * 1000


@pytest.mark.parametrize("spec,expected", [
    ("testpattern", ("testpattern:640x480@30", 640, 480, 30)),
    ("testpattern:320x240@15", ("testpattern:320x240@15", 320, 240, 15)),
    ("testpattern:1280x720", ("testpattern:1280x720@30", 1280, 720, 30)),
])
def test_open_source_test_pattern_specs(spec, expected):
    source = open_source(spec)
    assert (source.name, source.width, source.height, source.fps) == expected


def test_open_source_files_and_live_specs(vogels):
    assert isinstance(open_source(str(vogels), loop=True), FileSource)
    rtsp = open_source("rtsp://camera.local/stream1")
    assert isinstance(rtsp, LiveSource) and rtsp.live and rtsp.options["rtsp_transport"] == "tcp"
    cam = open_source("webcam:/dev/video7@640x480@15")
    assert cam.url == "/dev/video7" and cam.options == {"video_size": "640x480",
                                                         "framerate": "15"}


@pytest.mark.parametrize("spec,message", [
    ("/no/such/clip.mkv", "no such file"),
    ("testpattern:640by480", "bad size/rate"),
    ("testpattern:10x10", "out of range"),
    ("webcam:", "name the device"),
])
def test_bad_sources_are_named(spec, message):
    with pytest.raises(SourceError, match=message) as err:
        open_source(spec)
    if spec.startswith("/"):
        assert spec in str(err.value)


def test_a_file_that_is_not_media(tmp_path):
    path = tmp_path / "notes.mkv"
    path.write_text("not a video")
    with pytest.raises(SourceError) as err:
        FileSource(path)
    assert str(err.value) == f"not a video file PyAV can read: {path}"
    with pytest.raises(SourceError, match="not a file"):
        FileSource(tmp_path)


def test_a_file_without_video(tmp_path):
    path = tmp_path / "tone.mka"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate = 8000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(SourceError, match="no video stream"):
        FileSource(path)


def test_live_sources_fail_with_a_clear_message_offline():
    # Nothing listens on port 1 and there is no such device: both fail fast, naming the source.
    with pytest.raises(SourceError, match="rtsp://127.0.0.1:1/cam"):
        list(open_source("rtsp://127.0.0.1:1/cam"))
    with pytest.raises(SourceError, match="/dev/no-such-video"):
        list(open_source("webcam:/dev/no-such-video"))


def test_annexb_to_avcc_round_trip():
    sps, pps = bytes.fromhex("6742c01eda0280"), bytes.fromhex("68ce0fc8")
    idr = bytes.fromhex("65888202e898a0")
    annexb = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + b"\x00\x00\x00\x01" + idr
    assert h264.split_annexb(annexb) == [sps, pps, idr]
    avcc = h264.annexb_to_avcc(annexb)
    assert list(h264.iter_avcc_units(avcc)) == [sps, pps, idr]
    config = h264.avcc_config_from_annexb(annexb)
    assert config[:6] == bytes([1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1])
    assert h264.is_avcc_config(config) and not h264.is_avcc_config(annexb)
    assert h264.avcc_length_size(config) == 4
    assert h264.avcc_config_from_annexb(b"\x00\x00\x01" + idr) is None
