"""Incremental fragment reader: MKV bytes in, complete `Fragment`s out.

Feed it chunks of any size (a botocore StreamingBody, a file, a socket); each fragment is returned
as soon as it is complete: its closing tags (MILLIS_BEHIND_NOW / CONTINUATION_TOKEN) arrived, the
next cluster or segment began, or the stream ended. Bytes are parsed once: the reader descends into
Segment and Cluster and reads every other element whole, so it buffers at most one element, and
memory is bounded by the fragment being assembled. Frame payloads are one copy of the wire bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from . import ebml
from .elements import parse_tags, parse_tracks, unlace
from .model import (
    CLOSING_TAGS,
    Fragment,
    Frame,
    InvalidMkvError,
    MkvError,
    Track,
    TruncatedMkvError,
)

log = logging.getLogger(__name__)

# Larger than any legal KVS fragment (50 MB): a bigger element is corruption, not video.
MAX_ELEMENT_SIZE = 64 * 1024 * 1024
EBML_MAGIC = ebml.EBML.to_bytes(4, "big")
_DESCEND = (ebml.SEGMENT, ebml.CLUSTER)
_CHILDREN = {ebml.SEGMENT: ebml.SEGMENT_CHILDREN, ebml.CLUSTER: ebml.CLUSTER_CHILDREN}
_TOP_LEVEL = frozenset({ebml.EBML, ebml.SEGMENT, ebml.VOID})
_COMPACT_AT = 1 << 20


class FragmentReader:
    """Push parser. `feed()` returns the fragments completed by the new bytes; `close()` the last.

    On bytes that cannot be MKV, `feed()` raises InvalidMkvError whose `fragments` attribute holds
    the fragments completed before the bad bytes; the partial fragment is dropped. Call `resync()`
    to continue from the next EBML header.

    `cluster_ends_fragment` is for producer-side MKV (PutMedia bodies): a fragment is complete as
    soon as its cluster ends, instead of when the next cluster begins, so a camera's fragment is
    acknowledged without waiting for the next one; Tags after a cluster then go to the next one.
    """

    def __init__(self, max_element_size: int = MAX_ELEMENT_SIZE,
                 cluster_ends_fragment: bool = False):
        self.max_element_size = max_element_size
        self.cluster_ends_fragment = cluster_ends_fragment
        self.bytes_skipped = 0
        self._buf = bytearray()
        self._pos = 0  # next unparsed byte in _buf
        self._base = 0  # stream offset of _buf[0]
        self._header: tuple[int, int, int] | None = None  # parsed header of the element at _pos
        self._stack: list[tuple[int, int | None]] = []  # open Segment/Cluster: (id, end offset)
        self._timecode_scale = 1_000_000
        self._tracks: tuple[Track, ...] = ()
        self._pending: Fragment | None = None
        # Where the current segment's EBML header began: a GetMedia fragment starts there, so that
        # its stream_offset/size span a standalone MKV and consecutive fragments tile the stream.
        self._segment_start: int | None = None
        self._cluster_done = False
        self._ready: list[Fragment] = []
        self._broken: InvalidMkvError | None = None
        self._resyncing = False

    # --- public API ------------------------------------------------------------------------

    @property
    def offset(self) -> int:
        """Stream offset of the next byte to parse."""
        return self._base + self._pos

    @property
    def fragment_in_progress(self) -> bool:
        """True while a cluster has begun and its fragment is not complete yet."""
        return self._pending is not None and self._pending.cluster_timecode is not None

    @property
    def pending_timecode(self) -> int | None:
        """Cluster timecode of the fragment being assembled, once its Timecode element arrived."""
        return self._pending.cluster_timecode if self._pending is not None else None

    @property
    def pending_offset(self) -> int | None:
        """Stream offset where the fragment being assembled began, if one has begun."""
        return self._pending.stream_offset if self._pending is not None else None

    def feed(self, data) -> list[Fragment]:
        if self._broken is not None:
            raise InvalidMkvError("reader stopped at invalid data; call resync() to continue",
                                  self._broken.offset)
        if data:
            self._buf += data
        try:
            self._parse()
        except InvalidMkvError as err:
            err.fragments = self._take_ready()  # type: ignore[attr-defined]
            raise
        self._compact()
        return self._take_ready()

    def resync(self) -> None:
        """After an InvalidMkvError: skip to the next EBML header and go on from there."""
        if self._broken is None:
            return
        self._broken = None
        self._resyncing = True
        self._pos += 1
        self.bytes_skipped += 1

    def close(self) -> list[Fragment]:
        """End of stream: returns the last fragment, or raises TruncatedMkvError if it was cut."""
        if self._broken is not None or self._resyncing:
            self.bytes_skipped += len(self._buf) - self._pos
            self._reset_buffer()
            return self._take_ready()
        offset = self.offset
        if self._header is not None or self._pos < len(self._buf):
            self._drop_partial()
            raise TruncatedMkvError("stream ended inside an element", offset)
        while self._stack:
            element_id, end = self._stack.pop()
            if end is not None and end > offset:
                self._drop_partial()
                raise TruncatedMkvError(
                    f"stream ended {end - offset} bytes before the end of element 0x{element_id:X}",
                    offset)
            self._close_master(element_id, offset)
        return self._take_ready()

    # --- parsing ---------------------------------------------------------------------------

    def _parse(self) -> None:
        buf = self._buf
        while True:
            if self._resyncing and not self._find_ebml_header():
                return
            offset = self._base + self._pos
            while self._stack and self._stack[-1][1] is not None and offset >= self._stack[-1][1]:
                element_id, end = self._stack.pop()
                if offset > end:
                    self._invalid(f"element overruns its parent 0x{element_id:X}", offset)
                self._close_master(element_id, offset)
            if self._header is None:
                try:
                    element_id, id_len = ebml.read_element_id(buf, self._pos)
                    size, size_len = ebml.read_size(buf, self._pos + id_len)
                except ebml.NeedMoreData:
                    return
                except ValueError as err:
                    self._invalid(str(err), offset)
                self._header = (element_id, size, id_len + size_len)
            element_id, size, header_len = self._header
            self._close_unknown_size_parents(element_id, offset)
            if element_id in _DESCEND:
                end = None if size == ebml.UNKNOWN_SIZE else offset + header_len + size
                self._pos += header_len
                self._header = None
                self._stack.append((element_id, end))
                self._open_master(element_id, offset)
                continue
            if size == ebml.UNKNOWN_SIZE:
                self._invalid(f"element 0x{element_id:X} has an unknown size", offset)
            if size > self.max_element_size:
                self._invalid(f"element 0x{element_id:X} claims {size} bytes", offset)
            start = self._pos + header_len
            if len(buf) < start + size:
                return
            self._pos = start + size
            self._header = None
            self._element(element_id, start, start + size, offset)

    def _close_unknown_size_parents(self, element_id: int, offset: int) -> None:
        while self._stack:
            parent_id, parent_end = self._stack[-1]
            if element_id in _CHILDREN[parent_id]:
                return
            if parent_end is not None:
                self._invalid(f"element 0x{element_id:X} is not allowed in 0x{parent_id:X}", offset)
            self._stack.pop()
            self._close_master(parent_id, offset)
        if element_id not in _TOP_LEVEL:
            self._invalid(f"expected an EBML header or Segment, found element 0x{element_id:X}",
                          offset)

    def _open_master(self, element_id: int, offset: int) -> None:
        if element_id == ebml.SEGMENT:
            self._timecode_scale = 1_000_000
            self._tracks = ()
            if self._segment_start is None:
                self._segment_start = offset
            return
        # A cluster after a finished cluster starts the next fragment (producer-side MKV).
        if self._pending is not None and self._cluster_done:
            self._emit(offset)
        if self._pending is None:
            self._pending = self._new_fragment(offset)
        self._pending.cluster_timecode = None
        self._cluster_done = False

    def _close_master(self, element_id: int, offset: int) -> None:
        if element_id == ebml.CLUSTER:
            self._cluster_done = True
            if self.cluster_ends_fragment:
                self._emit(offset)
        elif self._pending is not None:  # end of segment ends its fragment
            self._emit(offset)

    def _element(self, element_id: int, start: int, end: int, offset: int) -> None:
        # Parse a copy: a view into _buf that outlives this call (one held by an exception's
        # traceback) would make the next resize of _buf raise BufferError.
        with memoryview(self._buf) as view:
            payload = bytes(view[start:end])
        try:
            self._dispatch(element_id, payload, offset, end + self._base)
        except MkvError:
            raise
        except (ValueError, ebml.NeedMoreData) as err:
            # A malformed payload is invalid data like any other: the reader stops (or resyncs).
            reason = str(err) or "payload too short"
            self._invalid(f"malformed element 0x{element_id:X}: {reason}", offset)

    def _dispatch(self, element_id: int, payload: bytes, offset: int, end: int) -> None:
        if element_id == ebml.SIMPLE_BLOCK:
            self._add_block(payload, keyframe=None)
        elif element_id == ebml.BLOCK_GROUP:
            self._add_block_group(payload)
        elif element_id == ebml.TIMECODE:
            self._cluster().cluster_timecode = ebml.read_uint(payload)
        elif element_id == ebml.TAGS:
            self._add_tags(payload, offset, end)
        elif element_id == ebml.TRACKS:
            self._tracks = parse_tracks(payload)
        elif element_id == ebml.INFO:
            for child_id, value in ebml.iter_children(payload):
                if child_id == ebml.TIMECODE_SCALE:
                    self._timecode_scale = ebml.read_uint(value)
        elif element_id == ebml.EBML:
            self._segment_start = offset
            self._check_ebml_header(payload, offset)

    def _check_ebml_header(self, payload, offset: int) -> None:
        for child_id, value in ebml.iter_children(payload):
            if child_id == ebml.DOC_TYPE:
                doc_type = ebml.read_string(value)
                if doc_type not in ("matroska", "webm"):
                    self._invalid(f"EBML document type {doc_type!r} is not matroska", offset)

    def _cluster(self) -> Fragment:
        if self._pending is None:  # a block outside a cluster cannot happen: parents are checked
            raise AssertionError("cluster element outside a fragment")
        return self._pending

    def _add_tags(self, payload, offset: int, end: int) -> None:
        tags = parse_tags(payload)
        if self._pending is None:
            self._pending = self._new_fragment(offset)
        self._pending.apply_tags(tags)
        if CLOSING_TAGS.intersection(tags):
            self._emit(end)

    def _add_block(self, block: bytes, keyframe: bool | None, duration: int | None = None) -> None:
        fragment = self._cluster()
        track, track_len = ebml.read_size(block, 0)
        if len(block) < track_len + 3:
            raise ValueError("block shorter than its header")
        relative = int.from_bytes(block[track_len:track_len + 2], "big", signed=True)
        flags = block[track_len + 2]
        timecode = (fragment.cluster_timecode or 0) + relative
        is_key = bool(flags & 0x80) if keyframe is None else keyframe
        payload = memoryview(block)[track_len + 3:]
        lacing = (flags >> 1) & 3
        if lacing == 0:
            fragment.frames.append(Frame(track, timecode, is_key, payload, duration))
            return
        try:
            laced = unlace(payload, lacing)
        except (ValueError, IndexError, ebml.NeedMoreData) as err:
            raise ValueError(f"bad lacing in block: {err}") from None
        for frame_data in laced:
            fragment.frames.append(Frame(track, timecode, is_key, frame_data))

    def _add_block_group(self, payload) -> None:
        block = None
        keyframe = True
        duration = None
        for child_id, value in ebml.iter_children(payload):
            if child_id == ebml.BLOCK:
                block = bytes(value)
            elif child_id == ebml.REFERENCE_BLOCK:
                keyframe = False
            elif child_id == ebml.BLOCK_DURATION:
                duration = ebml.read_uint(value)
        if block is not None:
            self._add_block(block, keyframe, duration)

    # --- state -----------------------------------------------------------------------------

    def _new_fragment(self, offset: int) -> Fragment:
        # The segment's first fragment owns its headers; later clusters begin where they begin.
        start = offset if self._segment_start is None else self._segment_start
        self._segment_start = None
        return Fragment(stream_offset=start)

    def _emit(self, end: int) -> None:
        fragment = self._pending
        if fragment is None:
            return
        fragment.tracks = self._tracks
        fragment.timecode_scale = self._timecode_scale
        fragment.size = end - fragment.stream_offset
        self._ready.append(fragment)
        self._pending = None
        self._cluster_done = False

    def _take_ready(self) -> list[Fragment]:
        ready, self._ready = self._ready, []
        return ready

    def _invalid(self, message: str, offset: int):
        self._broken = InvalidMkvError(message, offset)
        self._drop_partial()
        self._pos = offset - self._base
        raise self._broken

    def _drop_partial(self) -> None:
        self._pending = None
        self._segment_start = None
        self._cluster_done = False
        self._header = None
        self._stack.clear()

    def _find_ebml_header(self) -> bool:
        index = self._buf.find(EBML_MAGIC, self._pos)
        if index < 0:
            keep = max(self._pos, len(self._buf) - (len(EBML_MAGIC) - 1))
            self.bytes_skipped += keep - self._pos
            self._pos = keep
            return False
        self.bytes_skipped += index - self._pos
        self._pos = index
        self._resyncing = False
        log.warning("resynchronised at byte %d after skipping invalid data", self.offset)
        return True

    def _compact(self) -> None:
        if self._pos and (self._pos >= _COMPACT_AT or self._pos * 2 >= len(self._buf)):
            del self._buf[:self._pos]
            self._base += self._pos
            self._pos = 0

    def _reset_buffer(self) -> None:
        self._base += len(self._buf)
        self._buf.clear()
        self._pos = 0
        self._resyncing = False
        self._broken = None


def _reader_of(stream) -> Callable[[int], bytes]:
    # botocore's StreamingBody.read(n) blocks until n bytes arrive, which would hold a live
    # fragment back; the urllib3 response under it returns what has arrived.
    raw = getattr(stream, "_raw_stream", None)
    if raw is not None and hasattr(raw, "read1"):
        return raw.read1
    for name in ("read1", "read", "recv"):
        method = getattr(stream, name, None)
        if method is not None:
            return method
    raise TypeError(f"cannot read bytes from {type(stream).__name__}: expected read() or recv()")


def iter_fragments(stream, chunk_size: int = 256 * 1024, resync: bool = False,
                   reader: FragmentReader | None = None) -> Iterator[Fragment]:
    """Yield fragments from a readable byte stream until it ends.

    With `resync`, invalid bytes are logged and skipped up to the next EBML header instead of
    raising. `read1` is preferred so a live stream yields each fragment without waiting for a
    full chunk.
    """
    reader = reader or FragmentReader()
    read = _reader_of(stream)
    while True:
        chunk = read(chunk_size)
        if not chunk:
            break
        yield from _feed(reader, chunk, resync)
    yield from reader.close()


def _feed(reader: FragmentReader, chunk, resync: bool) -> Iterator[Fragment]:
    try:
        yield from reader.feed(chunk)
    except MkvError as err:
        yield from getattr(err, "fragments", [])
        if not resync:
            raise
        log.warning("skipping invalid MKV data: %s", err)
        reader.resync()
        yield from _feed(reader, b"", resync)


def read_fragments(data: bytes, resync: bool = False) -> list[Fragment]:
    """Parse a complete byte string (a saved GetMedia response, a file) into fragments."""
    reader = FragmentReader()
    fragments = list(_feed(reader, data, resync))
    fragments.extend(reader.close())
    return fragments
