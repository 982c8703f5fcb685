"""How fast the fragment reader parses real GetMedia captures: `python -m bench.reader_throughput`.

Three figures per capture, each the best of --repeat runs (the least disturbed by other work):
  whole     the capture parsed as one buffer (read_fragments)
  64 KiB    fed in 64 KiB chunks, as a network read delivers them (the chunks are cut beforehand,
            so only the reader is timed)
  latency   the time of the feed() call that completes a fragment: how long after its last
            byte arrives a fragment is handed over, for a final chunk of 1 byte and of 64 KiB
Throughput is also shown as a multiple of a typical camera's 2 Mbit/s: the number of such cameras
one core could keep up with while doing nothing else. The cost is mostly per block (frame), so a
capture with many small audio frames parses fewer MB/s. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from consumer.wire import FragmentReader, read_fragments

REPO = Path(__file__).resolve().parents[1]
CAPTURES = Path(os.environ.get("KVS_SHARED_DIR", REPO.parent / "shared")) / "kvs-captures"
CHUNK = 64 * 1024
CAMERA_BYTES_PER_S = 2_000_000 / 8  # 2 Mbit/s
MB = 1e6


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """Fastest wall time of `repeat` runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def feed_chunks(chunks: list[bytes]) -> int:
    reader = FragmentReader()
    count = 0
    for chunk in chunks:
        count += len(reader.feed(chunk))
    return count + len(reader.close())


def completion_latency(data: bytes, final_chunk: int, repeat: int) -> list[float]:
    """Per fragment: seconds spent in the feed() call that delivers its last `final_chunk` bytes.

    Only GetMedia fragments count: their closing tags complete them, where a producer-side
    cluster waits for the next one to begin.
    """
    ends = [f.stream_offset + f.size for f in read_fragments(data)
            if f.continuation_token is not None]
    latencies = []
    for end in ends:
        start = max(0, end - final_chunk)
        best = float("inf")
        for _ in range(repeat):
            reader = FragmentReader()
            reader.feed(data[:start])  # everything before the final chunk has arrived
            tail = data[start:end]
            began = time.perf_counter()
            done = reader.feed(tail)
            if done:  # always, for a fragment with closing tags
                best = min(best, time.perf_counter() - began)
        if best < float("inf"):
            latencies.append(best)
    return latencies


@dataclass
class CaptureFigures:
    """One capture's measurements (seconds are the best of `repeat` runs)."""

    name: str
    bytes: int
    fragments: int
    frames: int
    whole_seconds: float  # parsed as one buffer
    chunked_seconds: float  # fed in 64 KiB chunks
    latency_1: list[float]  # per fragment: seconds of the feed() of its last byte
    latency_64k: list[float]  # same, for a final chunk of 64 KiB


def capture_files(folder: Path = CAPTURES) -> list[Path]:
    """The captures worth timing (over 100 kB), by name."""
    return sorted(p for p in folder.glob("*.mkv") if p.stat().st_size > 100_000)


def measure_capture(path: Path, repeat: int, latency: bool = True) -> CaptureFigures:
    """Time the reader on one capture; `latency=False` skips the per-fragment latency runs."""
    data = path.read_bytes()
    parsed = read_fragments(data)
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    whole = best_of(repeat, lambda: read_fragments(data))
    chunked = best_of(repeat, lambda: feed_chunks(chunks))
    return CaptureFigures(
        path.name, len(data), len(parsed), sum(len(f.frames) for f in parsed), whole, chunked,
        completion_latency(data, 1, repeat) if latency else [],
        completion_latency(data, CHUNK, repeat) if latency else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reader_throughput",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="runs per figure (default 20)")
    args = parser.parse_args(argv)
    files = capture_files()
    if not files:
        print(f"no captures in {CAPTURES} (set KVS_SHARED_DIR)", file=sys.stderr)
        return 1

    print(f"reader throughput, best of {args.repeat}; MB = 10^6 bytes; "
          f"camera = 2 Mbit/s = {CAMERA_BYTES_PER_S / MB:.2f} MB/s")
    print(f"{'capture':<44}{'MB':>6}{'frags':>7}{'whole MB/s':>12}{'64KiB MB/s':>12}"
          f"{'cameras':>9}{'ms/frag':>9}{'kframe/s':>10}")
    total_bytes = total_whole = total_chunked = 0.0
    total_fragments = total_frames = 0
    latency_1: list[float] = []
    latency_64k: list[float] = []
    for path in files:
        f = measure_capture(path, args.repeat)
        total_bytes += f.bytes
        total_whole += f.whole_seconds
        total_chunked += f.chunked_seconds
        total_fragments += f.fragments
        total_frames += f.frames
        latency_1 += f.latency_1
        latency_64k += f.latency_64k
        rate = f.bytes / f.chunked_seconds / MB
        print(f"{f.name:<44}{f.bytes / MB:>6.2f}{f.fragments:>7}"
              f"{f.bytes / f.whole_seconds / MB:>12.0f}"
              f"{rate:>12.0f}{rate * MB / CAMERA_BYTES_PER_S:>9.0f}"
              f"{f.chunked_seconds / f.fragments * 1e3:>9.3f}"
              f"{f.frames / f.chunked_seconds / 1e3:>10.0f}")
    rate = total_bytes / total_chunked
    print(f"{'all':<44}{total_bytes / MB:>6.2f}{total_fragments:>7}"
          f"{total_bytes / total_whole / MB:>12.0f}{rate / MB:>12.0f}"
          f"{rate / CAMERA_BYTES_PER_S:>9.0f}{total_chunked / total_fragments * 1e3:>9.3f}"
          f"{total_frames / total_chunked / 1e3:>10.0f}")
    for label, values in (("1 B", latency_1), ("64 KiB", latency_64k)):
        print(f"fragment completion latency, final chunk {label:>6}: median "
              f"{statistics.median(values) * 1e6:7.1f} us, max {max(values) * 1e6:7.1f} us "
              f"over {len(values)} fragments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
