"""The physical limit: how many cameras the cores could serve if they did nothing but the work a
camera needs, from the per-unit costs measured in the same run (bench.unit_costs).

One camera-second at S analysed frames per second, fps sampling, frames: persons:
    cost(S) = clip_fps x decode_frame                  every frame is decoded (later frames
                                                       reference it), sampled or not
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


def camera_second_cost(units: dict, sampling_fps: float) -> float:
    """CPU seconds one camera needs per second of video at `sampling_fps` (see module doc)."""
    cpu = units["cpu_seconds"]
    clip_fps = units["clip_fps"]
    analysed = min(sampling_fps, clip_fps)
    return (clip_fps * cpu["decode_frame"]
            + analysed * (cpu["rgb_frame"] + cpu["pose_frame"])
            + analysed * units["person_fraction"] * cpu["jpeg_frame"])


def limit(units: dict | None, sampling_fps: float, cores: float) -> dict | None:
    """{"cameras", "camera_second_cpu_s", "cores"}; None without unit costs."""
    if not units or "cpu_seconds" not in units:
        return None
    cost = camera_second_cost(units, sampling_fps)
    return {"cameras": cores / cost if cost > 0 else None, "camera_second_cpu_s": cost,
            "cores": cores}
