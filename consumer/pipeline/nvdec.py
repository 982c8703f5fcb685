"""Decoding on an NVIDIA GPU (NVDEC) through PyAV's hardware acceleration, for StreamDecoder.

    context = open_cuda("h264", "cuda:0")   # or raises GpuUnavailable, saying why
    rgb = planar(picture).to_ndarray(format="rgb24")
    warn_fallback(...)                      # once per process, DEBUG after that

Contract:
- `open_cuda` gives a decoder whose pictures PyAV has already brought back to system memory
  (`is_hw_owned` off), in NVDEC's interleaved formats (nv12, p010le). It never quietly gives a
  software decoder: PyAV opens one when the codec has no CUDA config, and FFmpeg switches to one
  when the GPU cannot decode the stream (`allow_software_fallback`); the first is reported as
  GpuUnavailable, the second is turned off, so the decode fails and the caller's fallback (with
  its warning) applies.
- `planar` makes the RGB of a GPU picture equal to the CPU's, pixel for pixel (see _PLANAR).
- `warn_fallback` logs one WARNING per process, whatever the number of streams falling back.
"""

from __future__ import annotations

import logging
import threading

import av
from av.codec.hwaccel import HWAccel, hwdevices_available

log = logging.getLogger("consumer.pipeline.decode")

# NVDEC gives chroma interleaved, FFmpeg's software decoders planar; swscale turns the two into
# RGB by different paths (up to 62 levels apart at 8 bits), so a GPU picture is first made planar,
# a lossless reshuffle, and then converted as a CPU one is: the same pixels whatever the device.
_PLANAR = {"nv12": "yuv420p", "nv16": "yuv422p", "p010le": "yuv420p10le"}
_FULL_RANGE = {"yuv420p": "yuvj420p", "yuv422p": "yuvj422p"}  # software decoders' full range
AVCOL_RANGE_JPEG = 2
_lock = threading.Lock()
_warned = False


class GpuUnavailable(Exception):
    """A decoder cannot be had on the GPU; the message says why."""


def open_cuda(codec: str, device: str) -> av.CodecContext:
    """A decoder of `codec` on NVDEC, `device` cuda or cuda:N; raises GpuUnavailable.

    Each decoder has its own CUDA context (FFmpeg's default): the shared primary context
    (`primary_ctx`) cannot be had once torch has made it with other flags, as YOLO on the GPU
    does at start.
    """
    if "cuda" not in hwdevices_available():
        raise GpuUnavailable("this PyAV's FFmpeg has no CUDA support")
    index = device.partition(":")[2] or None
    accel = HWAccel("cuda", device=index, allow_software_fallback=False)
    try:
        context = av.CodecContext.create(codec, "r", hwaccel=accel)
    except (av.error.FFmpegError, NotImplementedError, RuntimeError) as err:
        raise GpuUnavailable(f"cannot open CUDA device {index or 0} ({err}); is there an "
                             "NVIDIA GPU and driver?") from None
    if not context.is_hwaccel:  # PyAV quietly opened the software decoder instead
        raise GpuUnavailable(f"this FFmpeg has no CUDA decoder for {codec}")
    return context


def planar(picture: av.VideoFrame) -> av.VideoFrame:
    """A GPU picture in the planar format a CPU decoder gives (others as they are), its range
    kept as it is (no conversion: full-range video stays full range)."""
    target = _PLANAR.get(picture.format.name)
    if target is None:
        return picture
    full = picture.color_range == AVCOL_RANGE_JPEG
    target = _FULL_RANGE.get(target, target) if full else target
    same = "JPEG" if full else None
    return picture.reformat(format=target, src_color_range=same, dst_color_range=same)


def warn_fallback(device: str, stream: str, codec: str, reason: str) -> None:
    """Say that `stream` is decoded on the CPU instead of `device`: WARNING the first time in
    this process, DEBUG after (a fleet's hundreds of streams would otherwise say it hundreds of
    times)."""
    global _warned
    with _lock:
        first, _warned = not _warned, True
    (log.warning if first else log.debug)(
        "decode.device %s: stream %s: %s cannot be decoded on the GPU: %s; decoding it on the "
        "CPU%s", device, stream, codec, reason,
        " (warned once per process; other streams falling back are logged at DEBUG)"
        if first else "")
