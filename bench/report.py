"""The benchmark's outputs: results.json, report.md and report.png in one folder.

    rows = capacity_rows(sweeps, machine_cores, unit_costs)
    write_outputs(folder, results)      # results: everything `python -m bench` gathered

report.md holds one row per consumer and sampling rate S (the figures of its capacity probe,
i.e. the probe at the largest bounded K, beside the physical limit at that S: bench.limit), the
ratios of this project to the naive consumer at each S, the per-stage latency breakdown of
both (bench.breakdown), and the micro-benchmarks. report.png: the lag over time of every camera in the capacity
probe of each consumer, and capacity against S for both consumers.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path

from bench.breakdown import breakdown_markdown
from bench.limit import limit, shared_line

BILLED = ("kinesis:PutRecords", "kinesis:PutRecord", "s3:PutObject", "dynamodb:PutItem",
          "dynamodb:UpdateItem", "dynamodb:DeleteItem")
LIBRARIES = ("av", "mediapipe", "numpy", "boto3", "moto", "pyarrow", "opencv-contrib-python",
             "matplotlib")


def machine() -> dict:
    """CPU model, cores, memory, OS, Python and library versions."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = next((int(line.split()[1]) * 1024 for line in
                   Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu_model": model, "cores": os.cpu_count(),
            "cores_usable": len(os.sched_getaffinity(0)), "memory_bytes": memory,
            "os": platform.platform(), "python": sys.version.split()[0], "libraries": versions}


def _capacity_probe(sweep: dict) -> dict | None:
    found = [p for p in sweep["probes"] if p["bounded"] and p["cameras"] == sweep["capacity"]]
    return found[-1] if found else None


def capacity_rows(sweeps: list[dict], machine_cores: int,
                  unit_costs: dict | None = None) -> list[dict]:
    """Per consumer and S: capacity, the physical limit (from `unit_costs`, with the machine's
    usable cores) and the figures of its capacity probe."""
    rows = []
    for sweep in sweeps:
        probe = _capacity_probe(sweep)
        bound = limit(unit_costs, sweep["fps"], machine_cores,
                      shared_line(_shared_points(sweeps, sweep["fps"])))
        cameras = bound["cameras"] if bound else None
        row = {"kind": sweep["kind"], "fps": sweep["fps"], "capacity": sweep["capacity"],
               "at_cap": sweep["at_cap"], "complete": not sweep["skipped"], "probe": probe,
               "limit": bound,
               "capacity_to_limit": sweep["capacity"] / cameras if cameras else None}
        if probe is not None:
            cores = probe["cores"]["consumer"]
            calls = probe["api_calls_per_camera_hour"]
            row |= {
                "cameras_per_consumer_core": sweep["capacity"] / cores if cores else None,
                "cameras_per_machine_core": sweep["capacity"] / machine_cores,
                "analysed_fps": probe["analysed_fps"], "latency_s": probe["latency_s"],
                "cores_per_camera": probe["consumer_cores_per_camera"],
                "peak_rss_mb_per_camera": probe["peak_rss_bytes_per_camera"] / 2**20,
                "billed_calls_per_camera_hour": sum(calls.get(op, 0.0) for op in BILLED),
                "calls_per_camera_hour": {op: calls[op] for op in BILLED if op in calls},
                "cost_per_camera_day_usd": probe["cost_per_camera_day_usd"]}
        rows.append(row)
    return rows


def _shared_points(sweeps: list[dict], fps: float) -> list[tuple[int, float]]:
    """(K, cores of the cameras + the harness with the local stack) of every probe at `fps`
    that measured them, both consumers'."""
    points = []
    for sweep in sweeps:
        for probe in sweep["probes"] if sweep["fps"] == fps else ():
            cores = probe.get("cores") or {}
            if cores.get("cameras") is not None and cores.get("harness") is not None:
                points.append((probe["cameras"], cores["cameras"] + cores["harness"]))
    return points


RATIO_KEYS = {  # row key -> (label, higher is better)
    "capacity": ("capacity K", True),
    "cameras_per_consumer_core": ("cameras per consumer core", True),
    "latency_p50": ("latency p50", False),
    "cores_per_camera": ("CPU per camera", False),
    "peak_rss_mb_per_camera": ("peak RSS per camera", False),
    "billed_calls_per_camera_hour": ("billed API calls per camera-hour", False),
    "cost_per_camera_day_usd": ("cost per camera-day", False),
}


def ratios(rows: list[dict]) -> dict[str, dict[str, float | None]]:
    """Per S: this project's figure divided by the naive consumer's."""
    out: dict[str, dict[str, float | None]] = {}
    by = {(r["kind"], r["fps"]): r for r in rows}
    for (kind, fps), ours in by.items():
        naive = by.get(("naive", fps))
        if kind != "ours" or naive is None:
            continue
        figures = {}
        for key in RATIO_KEYS:
            a, b = _value(ours, key), _value(naive, key)
            figures[key] = a / b if a is not None and b else None
        out[f"{fps:g}"] = figures
    return out


def _value(row: dict, key: str) -> float | None:
    if key == "latency_p50":
        return (row.get("latency_s") or {}).get("p50")
    value = row.get(key)
    return float(value) if value is not None else None


def _f(value, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def markdown(results: dict) -> str:
    """The report's Markdown: capacity table, ratios, micro-benchmarks."""
    lines = [("| consumer | S (fps/camera) | capacity K | limit K | capacity / limit | "
              "cameras per consumer core | "
              "K per machine core | analysed fps | latency p50 / p95 / p99 (s) | "
              "CPU per camera (cores) | peak RSS per camera (MB) | billed API calls per "
              "camera-hour | cost per camera-day (USD) |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for row in results["rows"]:
        lat = row.get("latency_s") or {}
        cap = (f"{'≥ ' if row['at_cap'] else ''}{row['capacity']}"
               + ("" if row["complete"] else " (budget)"))
        name = "this project" if row["kind"] == "ours" else "naive"
        lines.append(
            f"| {name} | {row['fps']:g} | {cap} | "
            f"{_f((row.get('limit') or {}).get('cameras'), '.1f')} | "
            f"{_f(row.get('capacity_to_limit'), '.2f')} | "
            f"{_f(row.get('cameras_per_consumer_core'), '.1f')}"
            f" | {_f(row.get('cameras_per_machine_core'), '.1f')} | "
            f"{_f(row.get('analysed_fps'), '.1f')} | {_f(lat.get('p50'))} / "
            f"{_f(lat.get('p95'))} / {_f(lat.get('p99'))} | "
            f"{_f(row.get('cores_per_camera'), '.3f')} | "
            f"{_f(row.get('peak_rss_mb_per_camera'), '.0f')} | "
            f"{_f(row.get('billed_calls_per_camera_hour'), ',.0f')} | "
            f"{_f(row.get('cost_per_camera_day_usd'), '.3f')} |")
    for fps, figures in results["ratios"].items():
        cells = [f"{RATIO_KEYS[k][0]} {_f(v, '.2f', 'x')}" for k, v in figures.items()]
        lines.append(f"\nthis project / naive at S={fps}: " + ", ".join(cells))
    lines += ["", limit_note(results)]
    lines += ["", *breakdown_markdown(results.get("breakdown") or {})]
    lines += [*cost_table(results["rows"]), "", *probe_notes(results["sweeps"])]
    lines += ["", "| micro-benchmark | figure |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in micro_rows(results.get("micro", {}))]
    return "\n".join(lines) + "\n"


def limit_note(results: dict) -> str:
    """What the limit column is, with the per-unit costs it came from."""
    units = (results.get("micro") or {}).get("unit_costs")
    if not units or "cpu_seconds" not in units:
        return "limit K: not measured (the unit-cost micro-benchmark failed; see below)."
    cpu = {k: v * 1000 for k, v in units["cpu_seconds"].items()}
    cores = results["machine"]["cores_usable"]
    shares = []
    for row in results["rows"]:
        bound = row.get("limit") or {}
        shared = bound.get("shared")
        if row["kind"] == "ours" and shared:
            shares.append(f"S={row['fps']:g}: {shared['cores']:.2f} + {shared['per_camera']:.3f}"
                          f" x K cores, limit {bound['cameras']:.1f} (alone "
                          f"{bound['alone']:.1f})")
    return (f"limit K: the physical limit, the cores left to a consumer by the cameras and the "
            f"local stack ({cores} usable cores minus their CPU, a line in K fitted to this "
            f"run's probes at that S: {'; '.join(shares) or 'not measured'}) / the CPU of one "
            f"camera-second at S (bench.limit), measured in this run: decode "
            f"{cpu['decode_frame']:.2f} ms x the frames up to each fragment's last sampled one "
            f"(of {units['clip_fps']:.0f} a second) + S x (RGB {cpu['rgb_frame']:.2f} ms + pose "
            f"{cpu['pose_frame']:.1f} ms + {units['person_fraction']:.0%} x JPEG "
            f"{cpu['jpeg_frame']:.1f} ms) CPU. \"alone\": the limit on cores of its own.")


def cost_table(rows: list[dict]) -> list[str]:
    """API calls per camera-hour by operation and cost per camera-day by service."""
    from bench.prices import SOURCE

    lines = [("| consumer | S | GetMedia | PutRecords / PutRecord | PutObject | DynamoDB writes "
              "| KVS $/day | KDS $/day | S3 $/day | DynamoDB $/day | total $/day |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        probe = row["probe"]
        if probe is None:
            continue
        calls = probe["api_calls_per_camera_hour"]
        usd = probe["cost_per_camera_day_by_service_usd"]
        records = calls.get("kinesis:PutRecords", 0.0) + calls.get("kinesis:PutRecord", 0.0)
        writes = sum(calls.get(f"dynamodb:{op}", 0.0) for op in ("PutItem", "UpdateItem"))
        lines.append(
            f"| {'this project' if row['kind'] == 'ours' else 'naive'} | {row['fps']:g} | "
            f"1.33 | {records:,.0f} | {calls.get('s3:PutObject', 0.0):,.0f} | {writes:,.0f} | "
            + " | ".join(f"{usd.get(s, 0.0):.3f}" for s in
                         ("Kinesis Video Streams", "Kinesis Data Streams", "S3", "DynamoDB"))
            + f" | {probe['cost_per_camera_day_usd']:.3f} |")
    note = ("API calls per camera-hour at each capacity probe. GetMedia: one long-lived "
            "connection per camera, renewed before AWS's 45-minute limit (60/45 per hour; "
            "each probe opened one per camera). KVS is billed per GB ingested and consumed "
            "(2 Mbit/s per camera) and stored (24 h), KDS in provisioned mode per 25 KB PUT "
            "payload unit and shard share, S3 per PUT and GB-month (30 days kept), DynamoDB "
            f"on-demand per write unit. Prices: {SOURCE}.")
    return [*lines, "", note]
    return lines


def probe_notes(sweeps: list[dict]) -> list[str]:
    """One line per probe with errors, and what the sweep inferred or skipped."""
    notes = []
    for sweep in sweeps:
        name = "this project" if sweep["kind"] == "ours" else "naive"
        for probe in sweep["probes"]:
            if probe["errors"]:
                notes.append(f"- {name}, S={sweep['fps']:g}, K={probe['cameras']}: "
                             + "; ".join(probe["errors"]))
        if sweep["inferred"]:
            notes.append(f"- {name}, S={sweep['fps']:g}: K = {sweep['inferred']} taken as "
                         "bounded from the higher S (not run)")
        if sweep["skipped"]:
            notes.append(f"- {name}, S={sweep['fps']:g}: K = {sweep['skipped']} skipped for "
                         "the time budget")
    return notes


def micro_rows(micro: dict) -> list[tuple[str, str]]:
    rows = []
    decode = micro.get("decode") or {}
    if "every_frame" in decode:
        size = f"{decode.get('width_px')}x{decode.get('height_px')}"
        for label in ("every_frame", "keyframes_only"):
            run = decode[label]
            figure = (f"{_f(run.get('frames_per_cpu_second'), '.0f')} frames/s per core "
                      f"(≈ {_f(run.get('cameras_per_core'), '.0f')} cameras per core)")
            rows.append((f"decode {size} 15 fps, {label.replace('_', ' ')}", figure))
    reader = micro.get("reader") or {}
    if "chunked_64kib_mb_per_s" in reader:
        figure = (f"{reader['chunked_64kib_mb_per_s']:.0f} MB/s "
                  f"(≈ {reader['cameras_2mbit_per_core']:.0f} cameras at 2 Mbit/s per core)")
        rows.append(("fragment reader, 64 KiB chunks", figure))
    poses = micro.get("pose_sequence") or {}
    for label in ("per_fragment", "per_window"):
        if label in poses:
            p = poses[label]
            figure = (f"{p['parquet_bytes_per_frame']:.0f} B/frame vs pickle+gzip "
                      f"{p['pickle_gzip_bytes_per_frame']:.0f} B/frame "
                      f"({p['parquet_to_pickle_gzip_ratio']:.2f}x)")
            rows.append((f"pose sequence, Parquet {label.replace('_', ' ')}", figure))
    units = micro.get("unit_costs") or {}
    if "cpu_seconds" in units:
        labels = {"decode_frame": "a frame decoded (no conversion)", "keyframe": "a keyframe "
                  "decoded alone", "rgb_frame": "a frame to RGB", "pose_frame": "pose, one "
                  "frame", "jpeg_frame": "JPEG of a frame (annotated when it has persons)"}
        size = f"{units.get('width_px')}x{units.get('height_px')}"
        for key, label in labels.items():
            rows.append((f"CPU per unit, {size}: {label}",
                         f"{units['cpu_seconds'][key] * 1000:.2f} ms"))
        split = [f"{units[key] * 1000:.1f} ms {label}" for key, label in
                 (("pose_frame_with_persons", "with persons"),
                  ("pose_frame_without", "without")) if units.get(key)]
        label = (f"CPU per unit: pose over {units.get('pose_frames')} frames of the clip, "
                 f"{units['person_fraction']:.0%} with persons")
        rows.append((label, ", ".join(split) or "-"))
    for name, error in (micro.get("errors") or {}).items():
        rows.append((name, f"failed: {error}"))
    return rows


def plot(results: dict, path: Path) -> None:
    """report.png: lag over time per camera (capacity probes), capacity against S."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), dpi=100)
    first_fps = results["parameters"]["fps"][0]
    for axis, kind, title in ((axes[0], "ours", "this project"), (axes[1], "naive", "naive")):
        rows = [r for r in results["rows"] if r["kind"] == kind and r["probe"]]
        row = next((r for r in rows if r["fps"] == first_fps), rows[0] if rows else None)
        if row is None:
            axis.set_title(f"{title}: no bounded probe")
            continue
        for points in row["probe"]["lag_series"].values():
            axis.plot([p[0] for p in points], [p[1] for p in points], linewidth=0.8,
                      marker=".", markersize=3)
        axis.set_title(f"{title}: lag per camera, K={row['capacity']}, S={row['fps']:g}")
        axis.set_xlabel("seconds since the first fragment")
        axis.set_ylabel("arrival in KDS - producer time (s), max per 1 s")
        axis.set_ylim(bottom=0)
        axis.grid(alpha=0.3)
    styles = (("ours", "this project", {"marker": "o", "markersize": 10, "fillstyle": "none"}),
              ("naive", "naive", {"marker": "s", "markersize": 5, "linestyle": "--"}))
    for kind, label, style in styles:  # hollow and dashed: equal capacities stay visible
        rows = sorted((r for r in results["rows"] if r["kind"] == kind), key=lambda r: r["fps"])
        axes[2].plot([r["fps"] for r in rows], [r["capacity"] for r in rows], label=label,
                     **style)
    axes[2].set_title("capacity (largest K with bounded lag)")
    axes[2].set_xlabel("S: analysed frames per second per camera")
    axes[2].set_ylabel("cameras")
    axes[2].set_ylim(bottom=0)
    axes[2].grid(alpha=0.3)
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_outputs(folder: Path, results: dict) -> dict[str, Path]:
    """results.json, report.md and report.png in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "markdown": folder / "report.md",
             "png": folder / "report.png"}
    paths["json"].write_text(json.dumps(results, indent=1, default=str))
    paths["markdown"].write_text(markdown(results))
    plot(results, paths["png"])
    return paths
