"""The decoder leaves out H.264 frames that are not sampled and that no other frame references
(non-reference B-frames, as libx264 writes by default and recorded files often hold): the
sampled frames come out with the same pixels, and fewer frames go through the codec."""

from __future__ import annotations

import av
import numpy as np
import pytest

from consumer.batch.file_source import FileFragments
from consumer.config import Sampling, SamplingMode
from consumer.media import h264
from consumer.pipeline import decode


@pytest.fixture(scope="module")
def bframe_clip(tmp_path_factory) -> list:
    """4 s of 320x240 at 25 fps, libx264 with B-frames (its defaults), a keyframe a second."""
    path = tmp_path_factory.mktemp("clip") / "bframes.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.options = {"bf": "3", "g": "25", "keyint_min": "25", "sc_threshold": "0"}
        for i in range(100):
            image = np.zeros((240, 320, 3), np.uint8)
            image[:, (i * 3) % 320:(i * 3) % 320 + 40] = (200, 80 + i, 40)  # a moving bar
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return list(FileFragments(path, fragment_seconds=1.0).probe().fragments())


def test_disposable_means_every_slice_has_nal_ref_idc_zero():
    def unit(header: int) -> bytes:
        body = bytes([header, 0x88, 0x84])
        return len(body).to_bytes(4, "big") + body
    assert h264.is_disposable(unit(0x01))  # non-IDR slice, nal_ref_idc 0
    assert not h264.is_disposable(unit(0x21))  # the same slice as a reference
    assert not h264.is_disposable(unit(0x65))  # IDR
    assert not h264.is_disposable(unit(0x06) + unit(0x09))  # SEI and AUD only: no picture
    assert not h264.is_disposable(unit(0x01) + unit(0x41))  # one reference slice is enough
    assert not h264.is_disposable(b"")


def test_sampled_frames_are_the_same_with_fewer_frames_decoded(bframe_clip, monkeypatch):
    track = bframe_clip[0].video_track
    size = h264.avcc_length_size(track.codec_private)
    frames = [f for fragment in bframe_clip for f in fragment.frames]
    disposable = sum(h264.is_disposable(f.data, size) for f in frames)
    assert disposable >= len(frames) // 4, "the clip should hold non-reference B-frames"

    def run() -> tuple[list, int]:
        ours = decode.StreamDecoder("cam", "arn:cam", Sampling(mode=SamplingMode.FPS, fps=4))
        out = [frame for fragment in bframe_clip for frame in ours.decode(fragment)]
        return out, ours.frames_decoded

    skipping, decoded_skipping = run()
    monkeypatch.setattr(decode, "_disposable_test", lambda track: None)
    everything, decoded_everything = run()
    assert [f.source for f in skipping] == [f.source for f in everything]
    assert len(skipping) == 16  # 4 a second for 4 s
    for ours, theirs in zip(skipping, everything, strict=True):
        assert np.array_equal(ours.image, theirs.image)
    assert decoded_skipping < decoded_everything
