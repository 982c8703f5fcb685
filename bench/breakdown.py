"""Where the latency goes: per S, this project's stage times beside the naive consumer's.

    table = breakdown(sweeps)              # {"2": {"basis", "ours": {...}, "naive": {...}}}
    lines = breakdown_markdown(table)      # the report's tables, one per S

The probes compared: for each S, the largest K at which both consumers were bounded (the same
load on each), else each one's capacity probe (its largest bounded K), else each one's smallest
probe (none bounded: the figures say why). Per consumer: each stage's p50 and p90 (the
stage_times of the probe's stats files, bench.metrics), the sum of the p50s of the stages on a
record's path (p50s do not add exactly: a rough check against the end-to-end figure), and the
end-to-end p50 the benchmark measured (record's arrival in Kinesis - its fragment's server
timestamp, bench.metrics' latency). The stages' definitions: consumer.pipeline.stage_times for
this project, bench.naive's docstring for the naive consumer (the same names, measured the way
they apply to one inline thread).
"""

from __future__ import annotations

from bench.naive import PATH as NAIVE_PATH
from consumer.pipeline.stage_times import PATH, STAGES

PATHS = {"ours": PATH, "naive": NAIVE_PATH}
NAMES = {"ours": "this project", "naive": "naive"}


def _bounded(sweep: dict | None) -> dict[int, dict]:
    return {p["cameras"]: p for p in (sweep or {}).get("probes", []) if p["bounded"]}


def _fallback(sweep: dict | None) -> tuple[dict | None, str]:
    bounded = _bounded(sweep)
    if bounded:
        return bounded[max(bounded)], "capacity probe"
    probes = sorted((sweep or {}).get("probes", []), key=lambda p: p["cameras"])
    return (probes[0], "smallest probe, not bounded") if probes else (None, "no probe")


def choose(ours: dict | None, naive: dict | None) -> tuple[str, dict | None, dict | None]:
    """(basis, this project's probe, the naive one's) to compare at one S."""
    common = set(_bounded(ours)) & set(_bounded(naive))
    if common:
        k = max(common)
        return f"K = {k}, the largest both sustained", _bounded(ours)[k], _bounded(naive)[k]
    (a, why_a), (b, why_b) = _fallback(ours), _fallback(naive)
    describe = [f"{NAMES[kind]} K = {p['cameras']} ({why})" if p else f"{NAMES[kind]}: {why}"
                for kind, p, why in (("ours", a, why_a), ("naive", b, why_b))]
    return "no K both sustained: " + ", ".join(describe), a, b


def side(kind: str, probe: dict | None) -> dict | None:
    """One consumer's column: its stages' p50/p90/count, the path's sum, the end-to-end p50."""
    if probe is None:
        return None
    stages = {name: {k: figures.get(k) for k in ("p50", "p90", "count")}
              for name, figures in (probe.get("stage_times") or {}).items()}
    on_path = [stages[name]["p50"] for name in PATHS[kind] if name in stages]
    return {"cameras": probe["cameras"], "bounded": probe["bounded"],
            "latency_p50_s": (probe.get("latency_s") or {}).get("p50"),
            "path_p50_sum_s": sum(on_path) if on_path else None, "stages": stages}


def breakdown(sweeps: list[dict]) -> dict[str, dict]:
    """Per S (as "%g"): the basis of the comparison and both consumers' columns."""
    by = {(s["kind"], s["fps"]): s for s in sweeps}
    out = {}
    for fps in sorted({s["fps"] for s in sweeps}, reverse=True):
        basis, ours, naive = choose(by.get(("ours", fps)), by.get(("naive", fps)))
        out[f"{fps:g}"] = {"basis": basis, "ours": side("ours", ours),
                           "naive": side("naive", naive)}
    return out


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def _path(stage: str) -> str:
    kinds = [NAMES[k] for k in ("ours", "naive") if stage in PATHS[k]]
    return "both" if len(kinds) == 2 else (kinds[0] if kinds else "")


def breakdown_markdown(table: dict[str, dict]) -> list[str]:
    """One Markdown table per S, then what each stage measures."""
    lines: list[str] = []
    for fps, row in table.items():
        ours, naive = row["ours"] or {}, row["naive"] or {}
        names = list(STAGES) + sorted({*ours.get("stages", {}), *naive.get("stages", {})}
                                      - set(STAGES))
        header = ("| stage | on a record's path | this project p50 | naive p50 | "
                  "this project p90 | naive p90 |")
        lines += [f"Per-stage latency at S={fps} ({row['basis']}), milliseconds:", "",
                  header, "| --- | --- | ---: | ---: | ---: | ---: |"]
        for name in names:
            a = ours.get("stages", {}).get(name) or {}
            b = naive.get("stages", {}).get(name) or {}
            if not a and not b:
                continue
            lines.append(f"| {name} | {_path(name)} | {_ms(a.get('p50'))} | {_ms(b.get('p50'))}"
                         f" | {_ms(a.get('p90'))} | {_ms(b.get('p90'))} |")
        path_sum = (f"| sum of the path's p50s | | {_ms(ours.get('path_p50_sum_s'))} | "
                    f"{_ms(naive.get('path_p50_sum_s'))} | | |")
        end_to_end = (f"| **end to end p50** (measured) | | "
                      f"**{_ms(ours.get('latency_p50_s'))}** | "
                      f"**{_ms(naive.get('latency_p50_s'))}** | | |")
        lines += [path_sum, end_to_end, ""]
    if table:
        lines.append("Stages (this project; bench.naive's docstring says how the naive "
                     "consumer's are taken):")
        lines += [f"- {name}: {what}" for name, what in STAGES.items()] + [""]
    return lines
