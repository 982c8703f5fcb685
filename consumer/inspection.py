"""`python -m consumer inspect`: one row per fragment of a saved GetMedia response (or any KVS MKV).

The file is parsed incrementally, so rows appear as fragments complete (a pipe from a live
GetMedia call works) and a damaged file still shows every fragment before the damage.

Exit status: 0 when the input parsed to its end; 1 when it is not MKV (it does not start with an
EBML header, or is empty; with --resync: no fragment was found in it), is truncated or invalid;
2 when it cannot be opened or read (a missing file, a refused GetMedia call).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from .wire import Fragment, FragmentReader, InvalidMkvError, MkvError, Track, ebml, iter_fragments
from .wire.reader import _reader_of as reader_of

# Every MKV (a GetMedia response, a producer's upload, a saved file) starts with the EBML header;
# the reader also takes a bare Segment (an MKV cut after its header).
MKV_STARTS = (ebml.EBML.to_bytes(4, "big"), ebml.SEGMENT.to_bytes(4, "big"))

# The JSON keys, in order; the table shows the same fields.
KEYS = ("fragment_number", "server_timestamp", "producer_timestamp", "millis_behind_now",
        "continuation_token", "frames", "keyframes", "codec", "width", "height", "tags")

# Table columns: (key, heading, width, right-aligned). Fixed widths let rows print as they are
# parsed; a longer value widens its own row only. KVS fragment numbers have 47 digits.
COLUMNS = (
    ("fragment_number", "fragment_number", 47, False),
    ("server_timestamp", "server_ts", 14, True),
    ("producer_timestamp", "producer_ts", 14, True),
    ("millis_behind_now", "behind_ms", 9, True),
    ("continuation_token", "token", 5, False),
    ("frames", "frames", 6, True),
    ("keyframes", "keys", 4, True),
    ("codec", "codec", 15, False),
    ("width", "width", 5, True),
    ("height", "height", 6, True),
)
SAME_AS_NUMBER = "="  # the token column when it repeats the fragment number, as KVS does


def _main_track(fragment: Fragment) -> Track | None:
    """The video track, or the first track for a stream without video."""
    return fragment.video_track or (fragment.tracks[0] if fragment.tracks else None)


def summarize(fragment: Fragment) -> dict[str, Any]:
    """The row of one fragment, keyed by KEYS; JSON-ready (the 47-digit number is a string)."""
    track = _main_track(fragment)
    frames = [f for f in fragment.frames if track is not None and f.track == track.number]
    number = fragment.fragment_number
    return {
        "fragment_number": None if number is None else str(number),
        "server_timestamp": fragment.server_timestamp,
        "producer_timestamp": fragment.producer_timestamp,
        "millis_behind_now": fragment.millis_behind_now,
        "continuation_token": fragment.continuation_token,
        "frames": len(frames),
        "keyframes": sum(1 for f in frames if f.keyframe),
        "codec": track.codec_id if track else None,
        "width": track.width if track else None,
        "height": track.height if track else None,
        "tags": dict(fragment.tags),
    }


def _cell(key: str, row: dict[str, Any]) -> str:
    value = row[key]
    if value is None:
        return "-"
    if key in ("server_timestamp", "producer_timestamp"):
        return f"{value:.3f}"
    if key == "continuation_token" and value == row["fragment_number"]:
        return SAME_AS_NUMBER
    return str(value)


def _line(cells: list[tuple[str, int, bool]], tail: str) -> str:
    text = "  ".join(c.rjust(w) if right else c.ljust(w) for c, w, right in cells)
    return f"{text}  {tail}".rstrip()


def table_header() -> str:
    return _line([(heading, width, right) for _, heading, width, right in COLUMNS], "tags")


def table_row(row: dict[str, Any], note: str = "") -> str:
    tags = ", ".join(f"{name}={value}" for name, value in row["tags"].items())
    tail = "  ".join(part for part in (tags, note) if part)
    return _line([(_cell(key, row), width, right) for key, _, width, right in COLUMNS], tail)


class _Printer:
    """Writes rows as table lines or JSON lines; flushes each so a pipe shows them at once."""

    def __init__(self, out: IO[str], err: IO[str], as_json: bool):
        self.out, self.err, self.as_json = out, err, as_json
        self.fragments = self.frames = self.size = 0

    def header(self) -> None:
        if not self.as_json:
            print(table_header(), file=self.out, flush=True)

    def fragment(self, fragment: Fragment) -> None:
        row = summarize(fragment)
        self.fragments += 1
        self.frames += row["frames"]
        self.size += fragment.size
        error = fragment.error
        if self.as_json:
            print(json.dumps(row), file=self.out, flush=True)
            if error is not None:  # the JSON keys stay fixed: the error goes to stderr
                print(f"fragment {row['fragment_number'] or '-'}: {error}", file=self.err)
        else:
            print(table_row(row, f"!! {error}" if error else ""), file=self.out, flush=True)

    def footer(self, skipped: int) -> None:
        if not self.as_json:
            print(f"{_count(self.fragments, 'fragment')}, {_count(self.frames, 'frame')}, "
                  f"{_count(self.size, 'byte')}", file=self.out, flush=True)
        if skipped:
            print(f"skipped {skipped} invalid bytes (--resync)", file=self.err)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class _Peeked:
    """A byte stream whose first bytes are read ahead (to check the magic) and then read again."""

    def __init__(self, stream, size: int):
        self._read = reader_of(stream)
        self.head = b""
        while len(self.head) < size:
            chunk = self._read(size - len(self.head))
            if not chunk:
                break
            self.head += chunk
        self._pending = self.head

    def read1(self, size: int) -> bytes:
        if self._pending:
            chunk, self._pending = self._pending[:size], self._pending[size:]
            return chunk
        return self._read(size)


def _not_mkv(name: str, head: bytes, resync: bool) -> str:
    why = ("it is empty" if not head else
           "with --resync, no fragment was found in it" if resync else
           "it does not start with an EBML header")
    return f"inspect: {name}: not an MKV file ({why})"


@contextmanager
def _open(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    with open(path, "rb") as stream:
        yield stream


def inspect_file(path: str, as_json: bool = False, resync: bool = False,
                 out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Print the fragments of `path` ('-' for stdin); returns the exit status (0, 1 or 2)."""
    name = "<stdin>" if path == "-" else path
    return _inspect(name, lambda: _open(path), as_json, resync, out, err, empty_is_mkv=False)


def inspect_stream(stream_name: str, start_selector: dict, endpoint_url: str | None = None,
                   region: str | None = None, as_json: bool = False, resync: bool = False,
                   out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Print the fragments GetMedia returns for a stream, until the response ends."""
    from contextlib import closing

    from consumer.cloud.aws import AwsContext, open_get_media

    def opener():
        aws = AwsContext(endpoint_url, region)
        return closing(open_get_media(aws, start_selector, stream_name=stream_name))
    return _inspect(f"stream {stream_name}", opener, as_json, resync, out, err)


def _inspect(name: str, opener, as_json: bool, resync: bool, out: IO[str] | None,
             err: IO[str] | None, empty_is_mkv: bool = True) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from consumer.cloud.aws import AwsSetupError

    out = out or sys.stdout
    err = err or sys.stderr
    printer = _Printer(out, err, as_json)
    reader = FragmentReader()
    mkv = True  # whether the input starts like one (an empty GetMedia response is not an error)
    try:
        with opener() as raw:
            stream = _Peeked(raw, 4)
            mkv = stream.head in MKV_STARTS or (empty_is_mkv and not stream.head)
            if not mkv and not resync:
                print(_not_mkv(name, stream.head, resync), file=err)
                return 1
            if mkv:
                printer.header()
            for fragment in iter_fragments(stream, chunk_size=64 * 1024, resync=resync,
                                           reader=reader):
                if not mkv and not printer.fragments:
                    printer.header()  # junk before the first fragment, skipped by --resync
                printer.fragment(fragment)
    except BrokenPipeError:
        raise  # our reader went away (`| head`): not a problem with the input
    except OSError as error:
        print(f"inspect: cannot read {name}: {error.strerror or error}", file=err)
        return 2
    except (AwsSetupError, ClientError, BotoCoreError) as error:
        print(f"inspect: cannot read {name}: {error}", file=err)
        return 2
    except MkvError as error:
        if not mkv and not printer.fragments:
            print(_not_mkv(name, stream.head, resync), file=err)
            return 1
        invalid = isinstance(error, InvalidMkvError)
        hint = " (--resync skips to the next fragment)" if invalid and not resync else ""
        print(f"inspect: {name}: {'invalid' if invalid else 'truncated'} MKV after "
              f"{_count(printer.fragments, 'fragment')}: {error}{hint}", file=err)
        return 1
    if not mkv and not printer.fragments:
        print(_not_mkv(name, stream.head, resync), file=err)
        return 1
    printer.footer(reader.bytes_skipped)
    return 0
