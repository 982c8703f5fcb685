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
    limit(S) = cores / cost(S)                         cameras (CPU seconds per second)

The limit leaves out what every consumer needs besides (reading, parsing, records, API calls,
the GIL) and, on the benchmark's machine, the cores the simulated cameras and the local stack
take: a consumer reaching it would have made that work free. capacity / limit says how close a
consumer comes.
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


def limit(units: dict | None, sampling_fps: float, cores: float) -> dict | None:
    """{"cameras", "camera_second_cpu_s", "cores"}; None without unit costs."""
    if not units or "cpu_seconds" not in units:
        return None
    cost = camera_second_cost(units, sampling_fps)
    return {"cameras": cores / cost if cost > 0 else None, "camera_second_cpu_s": cost,
            "cores": cores}
