"""`processing.decode.device: cuda` (NVDEC through PyAV's hwaccel) on real libx264 output.

This machine, and CI, have no GPU: there a cuda decoder falls back to the CPU with one warning per
process, and must give exactly the CPU's frames (same sources, same pixels, same damage). Where a
CUDA device really opens, the fallback tests skip (saying so) and the GPU's frames are compared
with the CPU's instead. The GPU's picture formats (nv12) and a GPU that opens but cannot decode
are played by real codecs: an nv12 frame made from a CPU picture, a proxy over a real decoder.
"""

from __future__ import annotations

import logging

import av
import numpy as np
import pytest

from consumer.config import ConfigError, Sampling, SamplingMode, load_config
from consumer.pipeline import nvdec
from consumer.pipeline.decode import StreamDecoder

from .faults.producer_media import (
    GOP,
    cut_short,
    damaged,
    encode_clip,
    numbered_clip_fragments,
    zeroed,
)

LOGGER = "consumer.pipeline.decode"


@pytest.fixture(scope="module")
def clip_fragments():
    """Three 1 s fragments of 320x240 H.264 (10 frames each), numbered 1-3."""
    return numbered_clip_fragments(3)


@pytest.fixture(scope="module")
def cuda_opens() -> str | None:
    """Why a CUDA decoder opens here (None: it does not, the fallback applies)."""
    try:
        nvdec.open_cuda("h264", "cuda")
    except nvdec.GpuUnavailable:
        return None
    return "a CUDA device opened here: the CPU fallback does not apply"


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test is a process that has not warned yet."""
    monkeypatch.setattr(nvdec, "_warned", False)


def decoder(device: str = "cpu", mode: SamplingMode = SamplingMode.ALL,
            name: str = "cam") -> StreamDecoder:
    return StreamDecoder(name, f"arn:{name}", Sampling(mode=mode, fps=3.0), device=device)


def run(ours: StreamDecoder, fragments_) -> list[tuple]:
    """(source, keyframe, pixels) of every frame, and str(damage), fragment by fragment."""
    out = []
    for fragment in fragments_:
        frames = ours.decode(fragment)
        out.append(([(f.source, f.keyframe, f.image) for f in frames], str(ours.damage)))
    return out


def assert_same(got, expected):
    assert len(got) == len(expected)
    for (frames, damage), (want, want_damage) in zip(got, expected):
        assert damage == want_damage
        assert [(s, k) for s, k, _ in frames] == [(s, k) for s, k, _ in want]
        if damage != "None":
            # FFmpeg's frame threads conceal a damaged fragment's errors as their timing goes:
            # which frames come out is the same, their concealed pixels may not be
            continue
        for (_, _, image), (_, _, reference) in zip(frames, want):
            assert image.shape == reference.shape and np.array_equal(image, reference)


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.mark.parametrize("mode", [SamplingMode.ALL, SamplingMode.FPS])
def test_cuda_without_a_gpu_falls_back_with_one_warning_for_all_streams(
        clip_fragments, cuda_opens, caplog, mode):
    if cuda_opens:
        pytest.skip(cuda_opens)
    broken = damaged(clip_fragments[1], {3: cut_short, 6: zeroed})
    stream = [clip_fragments[0], broken, clip_fragments[2]]
    expected = {name: run(decoder("cpu", mode, name), stream) for name in ("cam-1", "cam-2")}
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    first, second = decoder("cuda", mode, "cam-1"), decoder("cuda:0", mode, "cam-2")
    assert_same(run(first, stream), expected["cam-1"])
    assert_same(run(second, stream), expected["cam-2"])
    assert first.decoding_on == second.decoding_on == "cpu"
    (warning,) = warnings_of(caplog)  # one per process, not one per stream
    assert "cuda" in warning and "h264" in warning and "cam-1" in warning
    assert "cannot open CUDA device" in warning or "no CUDA" in warning  # the reason
    assert "once per process" in warning
    assert any("cam-2" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


def test_a_cpu_decoder_never_tries_the_gpu(clip_fragments, caplog, monkeypatch):
    monkeypatch.setattr("consumer.pipeline.decode.open_cuda", pytest.fail)
    ours = decoder("cpu")
    assert len(ours.decode(clip_fragments[0])) == GOP and ours.decoding_on == "cpu"
    assert warnings_of(caplog) == []


def test_gpu_frames_are_the_cpus_where_a_gpu_opens(clip_fragments, cuda_opens, caplog):
    if not cuda_opens:
        pytest.skip("no CUDA device opens here (the fallback tests cover this machine)")
    gpu, cpu = decoder("cuda"), decoder("cpu")
    assert_same(run(gpu, clip_fragments), run(cpu, clip_fragments))
    assert gpu.decoding_on == "cuda" and warnings_of(caplog) == []
    # on damaged video which frames decode is the codec's (NVDEC conceals differently), but
    # a frame that does comes with the same source (record id) as on the CPU
    clean = {f.source for f in decoder("cpu").decode(clip_fragments[1])}
    broken = damaged(clip_fragments[1], {6: zeroed})
    assert {f.source for f in decoder("cuda").decode(broken)} <= clean


class GpuProxy:
    """Plays an NVDEC decoder that opened: a real decoder of `codec` reporting is_hwaccel."""

    is_hwaccel = True

    def __init__(self, codec: str):
        object.__setattr__(self, "_real", av.CodecContext.create(codec, "r"))

    def __getattr__(self, name):
        return getattr(self._real, name)

    def __setattr__(self, name, value):
        setattr(self._real, name, value)


def test_a_gpu_that_opens_but_decodes_nothing_hands_the_stream_to_the_cpu(
        clip_fragments, caplog, monkeypatch):
    # an MJPEG decoder fed H.264 rejects every packet, as NVDEC does a stream it cannot decode
    monkeypatch.setattr("consumer.pipeline.decode.open_cuda", lambda codec, device:
                        GpuProxy("mjpeg"))
    expected = run(decoder("cpu"), clip_fragments)
    ours = decoder("cuda")
    assert_same(run(ours, clip_fragments), expected)  # the first fragment too: decoded again
    assert ours.decoding_on == "cpu"
    (warning,) = warnings_of(caplog)
    assert "NVDEC decoded nothing of a fragment the CPU decodes" in warning


def test_damage_on_a_gpu_that_decoded_before_is_damage_not_a_fallback(
        clip_fragments, caplog, monkeypatch):
    monkeypatch.setattr("consumer.pipeline.decode.open_cuda", lambda codec, device:
                        GpuProxy(codec))
    first, second, third = clip_fragments
    stream = [first, damaged(second, {0: cut_short}), third]  # keyframe lost: nothing decodes
    ours, reference = decoder("cuda"), decoder("cpu")
    for fragment in stream:
        outcomes = []
        for each in (ours, reference):
            try:
                outcomes.append([f.source for f in each.decode(fragment)])
            except Exception as err:  # noqa: BLE001 - compared below
                outcomes.append(f"{type(err).__name__}: {err}")
        assert outcomes[0] == outcomes[1]
    assert ours.decoding_on == "cuda" and warnings_of(caplog) == []


@pytest.mark.parametrize("encoded", ["yuv420p", "yuvj420p"])
def test_an_nv12_picture_gives_the_cpus_pixels(encoded):
    """NVDEC's pictures come back as nv12; converted straight to RGB they differ from the CPU's
    (another swscale path); through `planar` they are equal, limited and full range alike."""
    clip = encode_clip("libx264", 320, 240, 2)
    context = av.CodecContext.create("h264", "r")
    context.extradata = clip.track.codec_private
    if encoded == "yuvj420p":  # a full-range stream: the CPU decoder gives yuvj420p
        picture = _decode_one(context, clip).reformat(format="yuvj420p")
    else:
        picture = _decode_one(context, clip)
    reference = picture.to_ndarray(format="rgb24")
    gpu_like = _as_nv12(picture)
    assert gpu_like.format.name == "nv12"
    assert np.array_equal(nvdec.planar(gpu_like).to_ndarray(format="rgb24"), reference)
    assert nvdec.planar(picture) is picture  # a CPU picture is left alone


def _decode_one(context, clip) -> av.VideoFrame:
    pictures = []
    for packet in clip.packets:
        pictures += context.decode(av.Packet(packet.data))
    return (pictures + context.decode(None))[0]


def _as_nv12(picture: av.VideoFrame) -> av.VideoFrame:
    """The picture's own samples with chroma interleaved, tagged as NVDEC tags it."""
    y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width]
               for p in picture.planes)
    uv = np.empty((u.shape[0], u.shape[1] * 2), np.uint8)
    uv[:, 0::2], uv[:, 1::2] = u, v
    out = av.VideoFrame.from_ndarray(np.vstack([y, uv]), format="nv12")
    out.color_range = 2 if picture.format.name.startswith("yuvj") else picture.color_range
    out.colorspace = picture.colorspace
    return out


BASE = {"streams": {"names": ["cam"]}, "outputs": {"kinesis": {"stream": "records"}}}


def test_decode_device_is_validated_naming_the_key():
    assert load_config(data=BASE, environ={}).processing.decode.device == "cpu"
    data = BASE | {"processing": {"decode": {"device": "cuda:1"}}}
    assert load_config(data=data, environ={}).processing.decode.device == "cuda:1"
    with pytest.raises(ConfigError, match=r"processing\.decode\.device: .*'gpu': expected cpu, "
                                          r"cuda or cuda:N"):
        load_config(data=BASE | {"processing": {"decode": {"device": "gpu"}}}, environ={})


def test_decode_device_has_its_environment_override():
    config = load_config(data=BASE, environ={"KVSA_PROCESSING__DECODE__DEVICE": "cuda"})
    assert config.processing.decode.device == "cuda"
    with pytest.raises(ConfigError, match="processing.decode.device"):
        load_config(data=BASE, environ={"KVSA_PROCESSING__DECODE__DEVICE": "gpu"})
