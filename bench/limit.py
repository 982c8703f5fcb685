"""The physical limit: how many cameras the cores could serve if they did nothing but the work a
camera needs, from the per-unit costs measured in the same run (bench.unit_costs).

One camera-second at S analysed frames per second, fps sampling, frames: persons:
    cost(S) = decoded(S) x decode_frame                the frames of each fragment up to its
                                                       last sampled one (earlier frames are
                                                       referenced by it; later ones are not
                                                       needed), per second
            + S' x (rgb_frame + pose_frame)            S' = min(S, clip_fps) conversions and
                                                       pose calls
            + S' x person_fraction x jpeg_frame        a JPEG for each analysed frame with a
                                                       person in it
    alone(S) = cores / cost(S)                         cameras, on cores of its own

On the benchmark's machine the simulated cameras, the local stack and the record poller take
their share of the same cores, more with more cameras: measured in the run's probes at that S
(both consumers), their CPU fits a line shared(K) = a + b x K, and the cores left to a consumer
at K cameras are cores - shared(K). The limit is where the work of K cameras fills them:
    limit(S) = (cores - a) / (cost(S) + b)             cameras

The limit leaves out what every consumer needs besides (reading, parsing, records, API calls,
the GIL): a consumer reaching it would have made that work free. capacity / limit says how
close a consumer comes.
"""

from __future__ import annotations

import math


def decoded_per_second(units: dict, sampling_fps: float) -> float:
    """Frames a camera-second needs decoded: each fragment up to its last sampled frame (the
    fps schedule restarts at each fragment's first frame); every frame without fragment size."""
    clip_fps = units["clip_fps"]
    per_fragment = units.get("frames_per_fragment")
    if not per_fragment or sampling_fps >= clip_fps:
        return clip_fps
    seconds = per_fragment / clip_fps
    samples = math.ceil(seconds * sampling_fps - 1e-9)  # at 0, 1/S, 2/S, ... < seconds
    last_index = math.floor((samples - 1) / sampling_fps * clip_fps + 1e-9)
    return (last_index + 1) / seconds


def camera_second_cost(units: dict, sampling_fps: float) -> float:
    """CPU seconds one camera needs per second of video at `sampling_fps` (see module doc)."""
    cpu = units["cpu_seconds"]
    clip_fps = units["clip_fps"]
    analysed = min(sampling_fps, clip_fps)
    return (decoded_per_second(units, sampling_fps) * cpu["decode_frame"]
            + analysed * (cpu["rgb_frame"] + cpu["pose_frame"])
            + analysed * units["person_fraction"] * cpu["jpeg_frame"])


def shared_line(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """(a, b) of the least-squares line cores = a + b x K through (K, cores of the cameras and
    the local stack) points; with one K, a line through the origin; None without points."""
    if not points:
        return None
    ks = {k for k, _ in points}
    if len(ks) == 1:
        k = next(iter(ks))
        return 0.0, sum(c for _, c in points) / len(points) / k
    n = len(points)
    mean_k = sum(k for k, _ in points) / n
    mean_c = sum(c for _, c in points) / n
    slope = (sum((k - mean_k) * (c - mean_c) for k, c in points)
             / sum((k - mean_k) ** 2 for k, _ in points))
    return max(0.0, mean_c - slope * mean_k), max(0.0, slope)


def limit(units: dict | None, sampling_fps: float, cores: float,
          shared: tuple[float, float] | None = None) -> dict | None:
    """{"cameras", "alone", "camera_second_cpu_s", "cores", "shared"}: the limit with the
    cameras' and the local stack's share (`shared` = (a, b), see the module doc; none: the
    cores are the consumer's alone); None without unit costs."""
    if not units or "cpu_seconds" not in units:
        return None
    cost = camera_second_cost(units, sampling_fps)
    if cost <= 0:
        return None
    fixed, per_camera = shared or (0.0, 0.0)
    return {"cameras": max(0.0, cores - fixed) / (cost + per_camera), "alone": cores / cost,
            "camera_second_cpu_s": cost, "cores": cores,
            "shared": None if shared is None else {"cores": fixed, "per_camera": per_camera}}
