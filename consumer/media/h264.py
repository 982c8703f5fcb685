"""H.264 bitstream plumbing: Annex B (start codes) to the AVCC form that MKV carries.

Matroska's V_MPEG4/ISO/AVC wants CodecPrivate as an AVCDecoderConfigurationRecord (avcC) and
every frame as length-prefixed NAL units. Encoders (libx264) and live sources (RTSP, webcams) give
Annex B with start codes; files demuxed from MP4/MKV are AVCC already. These helpers convert the
first into the second and leave the second alone.
"""

from __future__ import annotations

NAL_SPS = 7
NAL_PPS = 8
NAL_IDR = 5
START_CODE = b"\x00\x00\x01"


def is_avcc_config(extradata: bytes | None) -> bool:
    """An avcC record begins with configurationVersion 1; Annex B begins with a start code."""
    return bool(extradata) and extradata[0] == 1


def split_annexb(data) -> list[bytes]:
    """The NAL units of an Annex B byte string (start codes and trailing zero bytes removed)."""
    data = bytes(data)
    units = []
    pos = data.find(START_CODE)
    while pos >= 0:
        start = pos + 3
        nxt = data.find(START_CODE, start)
        end = len(data) if nxt < 0 else nxt
        unit = data[start:end].rstrip(b"\x00") if nxt >= 0 else data[start:end]
        if unit:
            units.append(unit)
        pos = nxt
    return units


def annexb_to_avcc(data) -> bytes:
    """One access unit: Annex B to 4-byte length-prefixed NAL units."""
    return b"".join(len(unit).to_bytes(4, "big") + unit for unit in split_annexb(data))


def avcc_config(sps_list: list[bytes], pps_list: list[bytes]) -> bytes:
    """An AVCDecoderConfigurationRecord with 4-byte NAL lengths."""
    if not sps_list or not pps_list:
        raise ValueError("an avcC record needs at least one SPS and one PPS")
    sps = sps_list[0]
    if len(sps) < 4:
        raise ValueError("SPS too short")
    out = bytearray([1, sps[1], sps[2], sps[3], 0xFF, 0xE0 | len(sps_list)])
    for unit in sps_list:
        out += len(unit).to_bytes(2, "big") + unit
    out.append(len(pps_list))
    for unit in pps_list:
        out += len(unit).to_bytes(2, "big") + unit
    return bytes(out)


def avcc_config_from_annexb(data) -> bytes | None:
    """The avcC record for the SPS/PPS found in Annex B data (extradata or a keyframe), if any."""
    units = split_annexb(data)
    sps = [u for u in units if u[0] & 0x1F == NAL_SPS]
    pps = [u for u in units if u[0] & 0x1F == NAL_PPS]
    if not sps or not pps:
        return None
    return avcc_config(sps, pps)


def iter_avcc_units(data, length_size: int = 4):
    """The NAL units of a length-prefixed access unit."""
    data = bytes(data)
    pos = 0
    while pos + length_size <= len(data):
        size = int.from_bytes(data[pos:pos + length_size], "big")
        pos += length_size
        yield data[pos:pos + size]
        pos += size


def avcc_length_size(config: bytes) -> int:
    return (config[4] & 0x03) + 1 if len(config) > 4 else 4


def is_disposable(data, length_size: int = 4) -> bool:
    """Whether no other picture can reference this access unit: it has slices, and every one has
    nal_ref_idc 0 (a non-reference B or P frame). A decoder may skip it without harm to any other
    frame. Reads the NAL headers only."""
    view = memoryview(data)
    pos = slices = 0
    while pos + length_size < len(view):
        size = int.from_bytes(view[pos:pos + length_size], "big")
        pos += length_size
        if size == 0 or pos >= len(view):
            break
        header = view[pos]
        if 1 <= header & 0x1F <= NAL_IDR:  # a slice (coded picture data)
            if header & 0x60:  # nal_ref_idc > 0: a reference
                return False
            slices += 1
        pos += size
    return slices > 0
