"""EBML primitives and the Matroska element ids that Kinesis Video Streams uses.

Reading and writing of variable-length integers live here so that the reader, the writer, the
simulator and the local service share one definition of the wire format.
"""

from __future__ import annotations

import struct

# Top level
EBML = 0x1A45DFA3
DOC_TYPE = 0x4282
SEGMENT = 0x18538067

# Segment children
SEEK_HEAD = 0x114D9B74
INFO = 0x1549A966
TRACKS = 0x1654AE6B
CUES = 0x1C53BB6B
CHAPTERS = 0x1043A770
ATTACHMENTS = 0x1941A469
TAGS = 0x1254C367
CLUSTER = 0x1F43B675

# Global elements, legal anywhere
VOID = 0xEC
CRC32 = 0xBF

# Info
TIMECODE_SCALE = 0x2AD7B1
MUXING_APP = 0x4D80
WRITING_APP = 0x5741

# Tracks
TRACK_ENTRY = 0xAE
TRACK_NUMBER = 0xD7
TRACK_UID = 0x73C5
TRACK_TYPE = 0x83
TRACK_NAME = 0x536E
CODEC_ID = 0x86
CODEC_PRIVATE = 0x63A2
DEFAULT_DURATION = 0x23E383
VIDEO = 0xE0
PIXEL_WIDTH = 0xB0
PIXEL_HEIGHT = 0xBA
AUDIO = 0xE1
SAMPLING_FREQUENCY = 0xB5
CHANNELS = 0x9F

# Cluster
TIMECODE = 0xE7
SILENT_TRACKS = 0x5854
POSITION = 0xA7
PREV_SIZE = 0xAB
SIMPLE_BLOCK = 0xA3
BLOCK_GROUP = 0xA0
ENCRYPTED_BLOCK = 0xAF
BLOCK = 0xA1
REFERENCE_BLOCK = 0xFB
BLOCK_DURATION = 0x9B

# Tags
TAG = 0x7373
TARGETS = 0x63C0
SIMPLE_TAG = 0x67C8
TAG_NAME = 0x45A3
TAG_STRING = 0x4487
TAG_BINARY = 0x4485

TRACK_TYPE_VIDEO = 1
TRACK_TYPE_AUDIO = 2

SEGMENT_CHILDREN = frozenset(
    {SEEK_HEAD, INFO, TRACKS, CUES, CHAPTERS, ATTACHMENTS, TAGS, CLUSTER, VOID, CRC32}
)
CLUSTER_CHILDREN = frozenset(
    {TIMECODE, SILENT_TRACKS, POSITION, PREV_SIZE, SIMPLE_BLOCK, BLOCK_GROUP, ENCRYPTED_BLOCK,
     VOID, CRC32}
)

UNKNOWN_SIZE = -1


class NeedMoreData(Exception):
    """Raised by the primitives when the buffer ends inside a header."""


def read_element_id(buf, pos: int) -> tuple[int, int]:
    """Return (id, length) of the element id at buf[pos]. Ids keep their marker bits."""
    if pos >= len(buf):
        raise NeedMoreData
    first = buf[pos]
    if first & 0x80:
        length = 1
    elif first & 0x40:
        length = 2
    elif first & 0x20:
        length = 3
    elif first & 0x10:
        length = 4
    else:
        raise ValueError(f"invalid element id byte 0x{first:02x}")
    if pos + length > len(buf):
        raise NeedMoreData
    return int.from_bytes(buf[pos:pos + length], "big"), length


def read_size(buf, pos: int) -> tuple[int, int]:
    """Return (size, length) of the data-size vint at buf[pos]; size is UNKNOWN_SIZE when all ones."""
    if pos >= len(buf):
        raise NeedMoreData
    first = buf[pos]
    if first == 0:
        raise ValueError("invalid element size: vint longer than 8 bytes")
    length = 9 - first.bit_length()
    if pos + length > len(buf):
        raise NeedMoreData
    value = int.from_bytes(buf[pos:pos + length], "big") & ((1 << (7 * length)) - 1)
    if value == (1 << (7 * length)) - 1:
        return UNKNOWN_SIZE, length
    return value, length


def read_uint(data) -> int:
    return int.from_bytes(data, "big")


def read_float(data) -> float:
    if len(data) == 4:
        return struct.unpack(">f", data)[0]
    if len(data) == 8:
        return struct.unpack(">d", data)[0]
    if len(data) == 0:
        return 0.0
    raise ValueError(f"invalid float element of {len(data)} bytes")


def read_string(data) -> str:
    return bytes(data).rstrip(b"\x00").decode("utf-8", errors="replace")


def iter_children(data):
    """Yield (id, payload memoryview) for the children of a complete master element payload."""
    view = memoryview(data)
    pos = 0
    end = len(view)
    while pos < end:
        try:
            element_id, id_len = read_element_id(view, pos)
            size, size_len = read_size(view, pos + id_len)
        except NeedMoreData:
            raise ValueError("master element ends inside a child header") from None
        start = pos + id_len + size_len
        if size == UNKNOWN_SIZE or start + size > end:
            raise ValueError(f"child 0x{element_id:x} overruns its parent")
        yield element_id, view[start:start + size]
        pos = start + size


# --- writing ---------------------------------------------------------------------------------

def encode_size(size: int) -> bytes:
    """Shortest data-size vint for size (never the reserved all-ones value)."""
    for length in range(1, 9):
        if size < (1 << (7 * length)) - 1:
            return (size | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError(f"element size {size} too large for EBML")


UNKNOWN_SIZE_BYTES = b"\x01\xff\xff\xff\xff\xff\xff\xff"


def encode_id(element_id: int) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def element(element_id: int, payload: bytes) -> bytes:
    return encode_id(element_id) + encode_size(len(payload)) + payload


def uint_element(element_id: int, value: int) -> bytes:
    return element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def float_element(element_id: int, value: float) -> bytes:
    return element(element_id, struct.pack(">d", value))


def string_element(element_id: int, value: str) -> bytes:
    return element(element_id, value.encode("utf-8"))


def unknown_size_header(element_id: int) -> bytes:
    return encode_id(element_id) + UNKNOWN_SIZE_BYTES
