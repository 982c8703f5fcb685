"""The capacity sweep: the largest number of cameras K whose lag stays bounded, per consumer and
sampling rate S.

For each S, highest first, and each consumer in turn: K doubles (1, 2, 4, ...; the last step
clipped to `max_cameras`) until a probe is not bounded (bench.metrics), then a bisection between
the largest bounded K and the smallest unbounded one until they are 1 apart. Capacity = the
largest bounded K (0 when even one camera is not; "at the cap" when `max_cameras` was bounded),
exact to one camera unless the time budget cut the search short.

Two shortcuts keep the run short, both stated in the results:
- a K bounded at a higher S is taken as bounded at a lower one (analysing fewer frames per
  camera costs less), so at a lower S the doubling continues from the capacity C found at the
  higher S (2C, 4C, ...; the smaller K are marked "inferred"). Every capacity gets a probe of
  its own at its S: when no larger K is bounded, C itself is probed, and if, unexpectedly, it is
  not bounded, the search goes on below it (between the largest inferred K under C, or 0, and
  C), so one unlucky probe costs a bisection step, not half the capacity;
- a time budget: a probe whose estimated time would end the sweep after `deadline` is skipped
  (marked "skipped: time budget"), and the search stops there: the capacity is the largest K
  bounded so far (marked as such in the report).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.scenario import Probe

OVERHEAD_SECONDS = 14.0  # per probe besides its duration: start-up, grace, shutdown, clean-up
NAIVE_START_SECONDS = 1.0  # per naive process: each loads Python, PyAV and the model


@dataclass
class Sweep:
    kind: str
    fps: float
    probes: list[dict] = field(default_factory=list)  # summaries, in the order run
    inferred: list[int] = field(default_factory=list)  # K taken as bounded from a higher S
    skipped: list[int] = field(default_factory=list)  # K not run: time budget
    capacity: int = 0
    at_cap: bool = False

    def as_dict(self) -> dict:
        return {"kind": self.kind, "fps": self.fps, "capacity": self.capacity,
                "at_cap": self.at_cap, "inferred": self.inferred, "skipped": self.skipped,
                "probes": self.probes}


def doubling(start: int, max_cameras: int) -> list[int]:
    """start, 2*start, ... with the last step clipped to max_cameras."""
    steps, k = [], start
    while k < max_cameras:
        steps.append(k)
        k *= 2
    return steps + [max_cameras]


def estimate_seconds(kind: str, cameras: int, duration: float) -> float:
    return duration + OVERHEAD_SECONDS + (NAIVE_START_SECONDS * cameras if kind == "naive" else 0)


class Runner:
    """Runs the sweeps with a probe function (Probe -> summary dict) under a deadline."""

    def __init__(self, run_probe: Callable[[Probe], dict], duration: float, max_cameras: int,
                 deadline: float, log: Callable[[str], None] = print):
        self.run_probe = run_probe
        self.duration = duration
        self.max_cameras = max_cameras
        self.deadline = deadline  # time.monotonic() value
        self.log = log

    def _try(self, sweep: Sweep, cameras: int) -> bool | None:
        """Bounded? None when skipped for the time budget."""
        if time.monotonic() + estimate_seconds(sweep.kind, cameras, self.duration) > self.deadline:
            sweep.skipped.append(cameras)
            self.log(f"  {sweep.kind:5} S={sweep.fps:g} K={cameras:2}: skipped (time budget)")
            return None
        began = time.monotonic()
        summary = self.run_probe(Probe(sweep.kind, cameras, sweep.fps, self.duration))
        summary["wall_seconds"] = time.monotonic() - began
        sweep.probes.append(summary)
        lat = summary["latency_s"]["p50"]
        self.log(f"  {sweep.kind:5} S={sweep.fps:g} K={cameras:2}: "
                 f"{'bounded' if summary['bounded'] else 'NOT bounded'}; "
                 f"{summary['analysed_fps']:.1f}/{summary['analysed_fps_target']:g} fps, "
                 f"delivered {summary['delivered_ratio']:.0%}, latency p50 "
                 f"{'-' if lat is None else f'{lat:.2f} s'}, consumer "
                 f"{summary['cores']['consumer'] or 0:.2f} cores "
                 f"({summary['wall_seconds']:.0f} s)")
        return summary["bounded"]

    def sweep(self, kind: str, fps: float, known_capacity: int = 0) -> Sweep:
        """Capacity of `kind` at `fps`; `known_capacity`: capacity at a higher S (0: none)."""
        result = Sweep(kind, fps)
        measured: set[int] = set()  # K bounded at this S by a probe of its own
        lower, upper = known_capacity, None  # largest bounded K, smallest unbounded K
        steps = doubling(1, self.max_cameras)
        if known_capacity:
            result.inferred = [k for k in steps if k < known_capacity] + [known_capacity]
            steps = [k for k in doubling(known_capacity, self.max_cameras) if k > known_capacity]
        for cameras in steps:  # grow until a K is not bounded
            bounded = self._try(result, cameras)
            if bounded is None:
                return self._done(result, lower, upper, measured)
            if not bounded:
                upper = cameras
                break
            lower = cameras
            measured.add(cameras)
        while True:
            while upper is not None and upper - lower > 1:  # bisect
                middle = (lower + upper) // 2
                bounded = self._try(result, middle)
                if bounded is None:
                    return self._done(result, lower, upper, measured)
                if bounded:
                    lower = middle
                    measured.add(middle)
                else:
                    upper = middle
            if lower == 0 or lower in measured:
                return self._done(result, lower, upper, measured)
            # the capacity was inferred from a higher S: it gets a probe of its own
            bounded = self._try(result, lower)
            if bounded is None:
                return self._done(result, lower, upper, measured)
            if bounded:
                measured.add(lower)
            else:  # unexpectedly not: search below it, from the next inferred K
                upper = lower
                lower = max((k for k in result.inferred if k < upper), default=0)

    def _done(self, result: Sweep, lower: int, upper: int | None, measured: set[int]) -> Sweep:
        result.inferred = [k for k in result.inferred if k not in measured and k <= lower]
        result.capacity = lower
        result.at_cap = upper is None and lower == self.max_cameras
        return result

    def run(self, kinds: list[str], fps_values: list[float]) -> list[Sweep]:
        """Every consumer at every S, highest S first, consumers alternating."""
        sweeps, known = [], {}
        for fps in sorted(fps_values, reverse=True):
            for kind in kinds:
                self.log(f"sweep {kind} at S={fps:g} analysed frames/s per camera")
                done = self.sweep(kind, fps, known.get(kind, 0))
                known[kind] = done.capacity
                sweeps.append(done)
        return sweeps
