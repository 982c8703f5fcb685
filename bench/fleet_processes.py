"""The processes part of `python -m bench.fleet`: cameras sustained at S analysed frames/s per
camera by `python -m consumer run --processes N` for each N (default 1 and 2), in one run.

The harness is `python -m bench`'s: the same local stack, clip, probes (bench.scenario.run_probe
with Probe.processes), capacity sweep (bench.sweep.Runner: K doubles until the lag is not
bounded, then one bisection step) and metrics (bench.metrics.summarise). Besides the consumer
group's total CPU (the probe's sampler), a side sampler reads the CPU of each process of the
consumer's tree (the `--processes` parent and its children) once a second.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from bench.procstat import cpu_seconds, process_tree

REPO = Path(__file__).resolve().parents[1]


def processes_option_available() -> bool:
    done = subprocess.run([sys.executable, "-m", "consumer", "run", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
    return "--processes" in done.stdout


class TreeSampler(threading.Thread):
    """CPU seconds of each process of every `consumer run --config <folder>/...` tree."""

    def __init__(self, folder: Path):
        super().__init__(name="tree-sampler", daemon=True)
        self.folder = str(folder)
        self.first: dict[int, tuple[float, float]] = {}  # pid -> (time, cpu)
        self.last: dict[int, tuple[float, float]] = {}
        self.names: dict[int, str] = {}
        self.stopped = threading.Event()

    def _roots(self) -> list[int]:
        roots = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            text = " ".join(a.decode(errors="replace") for a in args)
            if "consumer" in text and " run " in f" {text} " and self.folder in text:
                roots.append(int(entry.name))
        return roots

    def sample(self) -> None:
        now = time.monotonic()
        for root in self._roots():
            for pid in process_tree(root):
                cpu = cpu_seconds(pid)
                self.first.setdefault(pid, (now, cpu))
                self.last[pid] = (now, cpu)
                self.names.setdefault(pid, "parent" if pid == root else "child")

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.sample()

    def cores(self) -> list[dict]:
        """Per process: mean cores between its first and last reading (parents first)."""
        rows = []
        for pid, (t1, c1) in self.last.items():
            t0, c0 = self.first[pid]
            if t1 - t0 >= 2.0:
                rows.append({"pid": pid, "role": self.names[pid],
                             "cores": (c1 - c0) / (t1 - t0), "seconds": t1 - t0})
        roots = {r["pid"] for r in rows if r["role"] == "parent"}
        return sorted(rows, key=lambda r: (r["pid"] not in roots, -r["cores"]))


def run_process_part(args, out: Path, log) -> dict:
    if not processes_option_available():
        log("processes: `python -m consumer run` has no --processes option yet: part skipped")
        return {"skipped": "`python -m consumer run --help` lists no --processes option"}
    if not (args.models_dir / "pose_landmarker_full.task").is_file():
        log(f"processes: pose_landmarker_full.task not in {args.models_dir}: part skipped")
        return {"skipped": f"pose_landmarker_full.task not found in {args.models_dir}"}

    from bench import clip as clips
    from bench.metrics import summarise
    from bench.scenario import Environment, Probe, run_probe
    from bench.sweep import Runner
    from infra.local.stack import LocalStack

    began = time.monotonic()
    clip = clips.prepare_clip()
    count = 0
    kinds = {f"ours-p{n}": n for n in args.processes}
    with LocalStack(retention_seconds=120) as stack:
        logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
        env = Environment(stack, clip, args.models_dir.resolve(), out / "probes")

        def probe(p: Probe) -> dict:
            nonlocal count
            count += 1
            real = Probe("ours", p.cameras, p.fps, p.duration, processes=kinds[p.kind])
            sampler = TreeSampler(env.workdir / f"p{count:02d}-ours")
            sampler.start()
            try:
                raw = run_probe(env, real, count)
            except Exception as err:  # noqa: BLE001 - a failed probe is an unbounded one
                traceback.print_exc()
                return {"kind": p.kind, "cameras": p.cameras, "fps": p.fps, "bounded": False,
                        "errors": [f"{type(err).__name__}: {err}"], "analysed_fps": 0.0,
                        "analysed_fps_target": p.cameras * p.fps, "delivered_ratio": 0.0,
                        "latency_s": {"p50": None}, "cores": {"consumer": None},
                        "process_cores": sampler.cores()}
            finally:
                sampler.stopped.set()
            summary = summarise(raw, clips.GOP / clips.FPS)
            summary["kind"] = p.kind
            summary["processes"] = real.processes
            summary["process_cores"] = sampler.cores()
            summary["consumer_exit"] = [c["exit_status"] for c in raw["consumers"]]
            return summary

        runner = Runner(probe, args.duration, args.max_cameras,
                        deadline=began + args.budget - 15, log=log)
        sweeps = [s.as_dict() for s in runner.run(list(kinds), [args.fps])]
    rows = []
    for sweep in sweeps:
        cap = [p for p in sweep["probes"] if p["bounded"] and p["cameras"] == sweep["capacity"]]
        best = cap[-1] if cap else None
        rows.append({"kind": sweep["kind"], "processes": kinds[sweep["kind"]],
                     "fps": sweep["fps"], "capacity": sweep["capacity"],
                     "at_cap": sweep["at_cap"], "skipped": sweep["skipped"],
                     "consumer_cores": best and best["cores"].get("consumer"),
                     "process_cores": best and best.get("process_cores"),
                     "latency_p50_s": best and best["latency_s"].get("p50")})
    base = rows[0]["capacity"] if rows else 0
    ratios = {r["kind"]: (r["capacity"] / base if base else None) for r in rows}
    return {"fps": args.fps, "sweeps": sweeps, "rows": rows, "capacity_ratio_to_first": ratios,
            "probes_run": count, "wall_seconds": time.monotonic() - began}


def markdown_lines(part: dict) -> list[str]:
    if part.get("skipped"):
        return ["## processes", "", f"skipped: {part['skipped']}"]
    lines = [(f"## processes: cameras sustained at S = {part['fps']:g} analysed frames/s per "
             "camera"), "",
             ("| consumer | capacity K | vs first | consumer cores (all processes) | "
             "cores per process | latency p50 |"), "|---|---|---|---|---|---|"]
    for row in part["rows"]:
        per = ", ".join(f"{p['role']} {p['cores']:.2f}" for p in row["process_cores"] or [])
        cap = f"{row['capacity']}{' (at the cap)' if row['at_cap'] else ''}"
        ratio = part["capacity_ratio_to_first"].get(row["kind"])
        cores = row["consumer_cores"]
        p50 = row["latency_p50_s"]
        lines.append(f"| `consumer run --processes {row['processes']}` | {cap} | "
                     f"{'-' if ratio is None else f'x{ratio:.2f}'} | "
                     f"{'-' if cores is None else f'{cores:.2f}'} | {per or '-'} | "
                     f"{'-' if p50 is None else f'{p50:.2f} s'} |")
    return lines
