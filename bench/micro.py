"""Micro-benchmarks the benchmark harness (`python -m bench`) calls and records.

Each function returns plain JSON-serialisable numbers, units in the key names; nothing is printed
or asserted here. "Per core" figures divide by the process's CPU time (`time.process_time`: all
its threads, user + system), so a decoder using two threads for one second counts two
CPU-seconds; wall-clock figures are given beside them.

  decode_fps(clip)            frames decoded per second, every frame (Sampling all: each frame is
                              decoded and converted to RGB) vs keyframes only (other frames never
                              decoded), with consumer.pipeline.decode.StreamDecoder over the fragments a
                              camera would send of `clip`
  reader_throughput()         the fragment reader's MB/s on the real GetMedia captures
                              (bench/reader_throughput.py's measurement)
  pose_sequence_bytes()       Parquet pose-sequence bytes per frame against gzip(pickle) of the
                              same results, per fragment and per window (bench/pose_sequence_size)
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consumer.config import Sampling, SamplingMode
from consumer.media.fragmenter import encode_cluster, fragment_packets
from consumer.media.sources import FileSource
from consumer.pipeline.decode import StreamDecoder
from consumer.wire import Fragment, read_fragments, writer

from . import reader_throughput as rt

ARN = "arn:aws:kinesisvideo:us-east-1:123456789012:stream/bench/1700000000000"
BASE_MS = 1_700_000_000_000  # ABSOLUTE producer timecodes, as the simulator sends


def clip_fragments(clip: Path, fragment_seconds: float = 2.0) -> tuple[list[Fragment], int]:
    """The fragments a camera sends of `clip` (H.264 re-muxed, cut at the first keyframe after
    `fragment_seconds`, as producer_sim does), serialised as a producer's MKV and read back with
    consumer.wire.read_fragments. Returns them and the MKV's size in bytes."""
    source = FileSource(clip)
    try:
        fragments = fragment_packets(source, fragment_duration_ms=round(fragment_seconds * 1000),
                                     base_ms=BASE_MS)
    finally:
        source.close()
    if not fragments:
        raise ValueError(f"{clip}: no video frames")
    data = writer.stream_header(fragments[0].tracks) + b"".join(map(encode_cluster, fragments))
    return read_fragments(data), len(data)


def _decode_run(fragments: Sequence[Fragment], mode: SamplingMode, threads: str,
                video_seconds: float) -> dict[str, float]:
    decoder = StreamDecoder("bench", ARN, Sampling(mode=mode), threads=threads)
    returned = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for fragment in fragments:
        returned += len(decoder.decode(fragment))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    decoder.close()
    decoded = decoder.frames_decoded
    return {
        "frames_decoded": decoded,
        "frames_rgb": returned,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "frames_per_wall_second": decoded / wall if wall else 0.0,
        "frames_per_cpu_second": decoded / cpu if cpu else 0.0,
        # seconds of video per CPU-second: how many such cameras one core keeps up with
        "cameras_per_core": video_seconds / cpu if cpu else 0.0,
    }


def decode_fps(clip: Path, threads: str = "AUTO", repeat: int = 1) -> dict[str, Any]:
    """Decode speed on `clip`, every frame vs keyframes only; the best (least CPU) of `repeat`.

    `threads` is the decoder's thread_type ("AUTO", as the consumer runs it, or "NONE").
    """
    fragments, size = clip_fragments(Path(clip))
    video = [f for frag in fragments for f in frag.video_frames()]
    first, last = fragments[0], fragments[-1]
    # the span from the first frame to one frame after the last, i.e. the clip's duration
    span = (last.frame_time(last.video_frames()[-1]) - first.frame_time(first.video_frames()[0]))
    video_seconds = span * len(video) / max(1, len(video) - 1)
    track = first.video_track
    result: dict[str, Any] = {
        "clip": Path(clip).name,
        "width_px": track.width if track else None,
        "height_px": track.height if track else None,
        "video_seconds": video_seconds,
        "video_fps": len(video) / video_seconds if video_seconds else 0.0,
        "fragments": len(fragments),
        "frames": len(video),
        "keyframes": sum(f.keyframe for f in video),
        "bytes": size,
        "decoder_threads": threads,
    }
    for label, mode in (("every_frame", SamplingMode.ALL), ("keyframes_only",
                                                             SamplingMode.KEYFRAMES)):
        runs = [_decode_run(fragments, mode, threads, video_seconds) for _ in range(repeat)]
        result[label] = min(runs, key=lambda r: r["cpu_seconds"])
    return result


def reader_throughput(paths: Sequence[Path] | None = None, repeat: int = 5,
                      latency: bool = True) -> dict[str, Any]:
    """The fragment reader over `paths` (default: the captures in ../shared/kvs-captures),
    whole buffer and 64 KiB chunks, best of `repeat`; MB = 10^6 bytes."""
    files = list(paths) if paths is not None else rt.capture_files()
    if not files:
        raise FileNotFoundError(f"no captures in {rt.CAPTURES} (set KVS_SHARED_DIR)")
    figures = [rt.measure_capture(Path(p), repeat, latency) for p in files]
    total = sum(f.bytes for f in figures)
    whole = sum(f.whole_seconds for f in figures)
    chunked = sum(f.chunked_seconds for f in figures)
    lat_1 = [x for f in figures for x in f.latency_1]
    lat_64k = [x for f in figures for x in f.latency_64k]
    chunked_rate = total / chunked
    return {
        "captures": [f.name for f in figures],
        "bytes": total,
        "fragments": sum(f.fragments for f in figures),
        "frames": sum(f.frames for f in figures),
        "whole_mb_per_s": total / whole / rt.MB,
        "chunked_64kib_mb_per_s": chunked_rate / rt.MB,
        "cameras_2mbit_per_core": chunked_rate / rt.CAMERA_BYTES_PER_S,
        "ms_per_fragment": chunked / sum(f.fragments for f in figures) * 1e3,
        "completion_latency_1b_median_us": statistics.median(lat_1) * 1e6 if lat_1 else None,
        "completion_latency_64kib_median_us": (statistics.median(lat_64k) * 1e6
                                               if lat_64k else None),
        "per_capture_64kib_mb_per_s": {f.name: f.bytes / f.chunked_seconds / rt.MB
                                       for f in figures},
    }


def _sampled_frames(capture: Path, frames: int, fps: float) -> list[tuple[Any, float, bool]]:
    """(rgb, seconds, starts a fragment) for `frames` frames sampled at `fps` from `capture`.

    Every frame is decoded (to find keyframes); only the sampled ones are kept. A sampled frame
    starts a new fragment when a keyframe came since the previous sampled one, so the groups cut
    from this list are the consumer's fragments at that sampling."""
    import av

    out: list[tuple[Any, float, bool]] = []
    due = None
    keyframe_seen = False
    with av.open(str(capture)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            t = float(frame.time)
            keyframe_seen = keyframe_seen or frame.key_frame
            if due is not None and t + 1e-6 < due:
                continue
            due = t + 1.0 / fps
            out.append((frame.to_ndarray(format="rgb24"), t, keyframe_seen))
            keyframe_seen = False
            if len(out) >= frames:
                break
    return out


def pose_sequence_bytes(capture: Path | None = None, models_dir: Path | None = None,
                        frames: int = 60, fps: float = 2.0) -> dict[str, Any]:
    """Pose-sequence bytes per frame, Parquet (what the consumer writes) vs gzip(pickle) (what a
    naive script writes), for `frames` frames sampled at `fps` from `capture` (default
    vogels_330.mkv) through the real pose model: one file per fragment, and one window (one file
    for all of them; 60 frames at 2 fps fit one 60 s window)."""
    from consumer.config import Pose
    from processors.pose import PoseProcessor

    from . import pose_sequence_size as pss

    capture = Path(capture or pss.CAPTURE)
    sampled = _sampled_frames(capture, frames, fps)
    groups = pss.fragments(sampled)
    with PoseProcessor(Pose(models_dir=models_dir or pss.SHARED / "models",
                            download=False)) as processor:
        analysed = [list(zip((f.source for f in g), processor.process(g))) for g in groups]
    flat = [item for g in analysed for item in g]
    result: dict[str, Any] = {
        "capture": capture.name, "frames": len(flat), "sampling_fps": fps,
        "persons": sum(len(r.persons) for _, r in flat),
    }
    for label, chosen in (("per_fragment", analysed), ("per_window", [flat])):
        files, count, parquet, pickled = pss.size_figures(chosen)
        result[label] = {
            "files": files,
            "parquet_bytes_per_frame": parquet / count,
            "pickle_gzip_bytes_per_frame": pickled / count,
            "parquet_to_pickle_gzip_ratio": parquet / pickled,
        }
    return result
