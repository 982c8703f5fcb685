"""`python -m bench.fleet`: how the lease-based fleet scales, in figures and ratios (no pass/fail).

Part "leases": W worker processes x S streams sharing one DynamoDB lease table on the local stack,
running the real lease code (consumer.fleet: LeaseTable, LeaseKeeper, LeaseCoordinator), no
video: time to balance, takeover after a SIGKILL, DynamoDB calls per stream-hour; then the
arithmetic for 10,000 cameras on 200 workers. Part "processes": cameras sustained at S analysed
frames/s per camera by `python -m consumer run --processes 1` vs `--processes 2`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import prices

REPO = Path(__file__).resolve().parents[1]

EPILOG = """\
part "leases" (see bench/fleet_leases.py):
  1. local stack (moto's DynamoDB); an unowned lease per fabricated stream ARN
     (arn:aws:kinesisvideo:us-east-1:123456789012:stream/bench-cam-NNNN/1700000000000);
  2. W `python -m bench.fleet_worker` processes (keeper renewing every lease/3, coordinator
     cycle every lease/3, as the supervisor runs it), told to start together; each reports the
     streams it holds and its DynamoDB calls by operation (botocore before-call events);
  3. (a) seconds until every stream is held by exactly one live worker and each holds
     ceil(S/W) +- 1; steady state: calls per stream-hour by operation over --steady seconds;
     (b) SIGKILL the most loaded worker: seconds until its streams are held by survivors,
     and until balanced again; streams held by two workers at once, throughout;
  4. the 10,000 cameras / 200 workers / lease 10 s arithmetic from the same model, with the
     measured item size, at the on-demand prices in bench/prices.py.
  The local DynamoDB (moto) is one Python process: on a small machine it saturates before the
  lease code does; the output gives its CPU and says so when it was the limit.

part "processes" (see bench/fleet_processes.py): the capacity sweep of `python -m bench`
  (same probes, cameras, metrics) for `python -m consumer run --processes 1` and `--processes 2`
  at one S, with the CPU of each consumer process.

examples:
  python -m bench.fleet                               # both parts, defaults
  python -m bench.fleet --part leases                 # 20 workers x 400 streams, lease 6 s
  python -m bench.fleet --part leases --workers 20 --streams 100
  python -m bench.fleet --smoke --out /tmp/fleet      # tiny and fast (CI)
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__,
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("leases", "processes", "both"), default="both",
                        help="which part to run (default both)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="write results.json and report.md here (default "
                             "bench/results/fleet-<timestamp>)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny and fast, for CI: leases 3 workers x 24 streams, lease 2 s; "
                             "processes K=1 only, 8 s probes; checks outputs, not speed")
    leases = parser.add_argument_group("part leases")
    leases.add_argument("--workers", type=int, default=20, metavar="W",
                        help="worker processes (default 20)")
    leases.add_argument("--streams", type=int, default=400, metavar="S",
                        help="streams (leases) (default 400)")
    leases.add_argument("--lease-seconds", type=float, default=6.0, metavar="SECONDS",
                        help="lease time: renewals and coordinator cycles every 1/3 of it "
                             "(default 6)")
    leases.add_argument("--steady", type=float, default=30.0, metavar="SECONDS",
                        help="steady-state window for the call rates (default 30)")
    leases.add_argument("--converge-timeout", type=float, default=180.0, metavar="SECONDS",
                        help="give up waiting for balance after this long (default 180)")
    leases.add_argument("--fallback-streams", type=int, default=100, metavar="S",
                        help="when W x S did not converge (local stack saturated), measure "
                             "W x this many streams as well (0: no fallback; default 100)")
    procs = parser.add_argument_group("part processes")
    procs.add_argument("--fps", type=float, default=2.0, metavar="S",
                       help="analysed frames/s per camera (default 2)")
    procs.add_argument("--processes", type=int, nargs="+", default=[1, 2], metavar="N",
                       help="values of `consumer run --processes` to compare (default 1 2)")
    procs.add_argument("--max-cameras", type=int, default=16, metavar="K",
                       help="largest K tried (default 16)")
    procs.add_argument("--duration", type=float, default=20.0, metavar="SECONDS",
                       help="cameras stream this long per probe (default 20)")
    procs.add_argument("--budget", type=float, default=600.0, metavar="SECONDS",
                       help="time budget of the processes part (default 600)")
    procs.add_argument("--models-dir", type=Path,
                       default=REPO.parent / "shared" / "models",
                       help="folder holding pose_landmarker_full.task (default ../shared/models)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.workers, args.streams, args.lease_seconds = 3, 24, 2.0
        args.steady, args.converge_timeout, args.fallback_streams = 4.0, 60.0, 0
        args.max_cameras, args.duration = 1, 8.0
    if args.workers < 2 or args.streams < 1 or args.lease_seconds <= 0 or args.steady <= 0:
        parser.error("--workers must be at least 2 (one is killed), --streams at least 1, "
                     "--lease-seconds and --steady positive")
    return args


# --- the 10,000-camera arithmetic -------------------------------------------------------------

SCAN_PAGE_BYTES = 1024 * 1024  # DynamoDB returns at most 1 MB per Scan call
READ_UNIT_BYTES = 4096  # eventually consistent: half a read unit per 4 KB
WRITE_UNIT_BYTES = 1024
SECONDS_PER_MONTH = prices.HOURS_PER_MONTH * 3600
# The prices the task brief quoted (the on-demand prices before AWS halved them on 2024-11-01),
# shown next to bench/prices.py's for comparison only.
BRIEF_USD_PER_MILLION = {"write": 1.25, "read": 0.25}


def model_rates(streams: int, workers: int, lease_seconds: float, lease_bytes: float,
                worker_bytes: float, checkpoint_every: float | None = None) -> dict:
    """DynamoDB calls and request units per second of a fleet at steady state, from how the lease
    code works: each lease written every lease/3 (LeaseKeeper; a checkpoint write counts as a
    renewal, so with checkpoints every `checkpoint_every` s < lease/3 the writes follow them),
    each worker item heart-beaten every lease/3, each worker scanning the whole table every
    lease/3 (LeaseCoordinator.cycle, as the supervisor runs it)."""
    renew_every = lease_seconds / 3
    write_every = min(renew_every, checkpoint_every) if checkpoint_every else renew_every
    table_bytes = streams * lease_bytes + workers * worker_bytes
    scans = workers / renew_every
    pages = max(1, math.ceil(table_bytes / SCAN_PAGE_BYTES))
    lease_writes = streams / write_every
    heartbeats = workers / renew_every
    write_units = math.ceil(max(lease_bytes, worker_bytes) / WRITE_UNIT_BYTES)
    return {
        "table_bytes": table_bytes, "scan_pages": pages,
        "calls_per_second": {"UpdateItem": lease_writes + heartbeats, "Scan": scans * pages},
        "update_item": {"lease_writes_per_second": lease_writes,
                        "heartbeats_per_second": heartbeats},
        "write_units_per_second": (lease_writes + heartbeats) * write_units,
        "read_units_per_second": scans * math.ceil(table_bytes / READ_UNIT_BYTES) / 2,
        "scans_per_second": scans,
    }


def monthly_cost(rates: dict) -> dict:
    wru, rru = rates["write_units_per_second"], rates["read_units_per_second"]
    write_price = prices.price("dynamodb_write_units_million")
    read_price = prices.price("dynamodb_read_units_million")
    usd_w = wru * SECONDS_PER_MONTH / 1e6 * write_price
    usd_r = rru * SECONDS_PER_MONTH / 1e6 * read_price
    brief = (wru * BRIEF_USD_PER_MILLION["write"] + rru * BRIEF_USD_PER_MILLION["read"]) \
        * SECONDS_PER_MONTH / 1e6
    return {"usd_per_month": {"writes": usd_w, "reads": usd_r, "total": usd_w + usd_r},
            "usd_per_month_at_brief_prices": brief,
            "prices_usd_per_million": {"write": write_price, "read": read_price}}


def projection(leases: dict, cameras: int = 10_000, workers: int = 200,
               lease_seconds: float = 10.0) -> dict:
    items = leases.get("items") or {}
    lease_bytes = items.get("lease_item_bytes_mean") or 235.0
    worker_bytes = items.get("worker_item_bytes_mean") or 79.0
    checkpointed = lease_bytes + 190  # a lease with a checkpoint (see fleet_leases._measure_items)
    out = {"cameras": cameras, "workers": workers, "lease_seconds": lease_seconds,
           "lease_item_bytes": lease_bytes, "lease_item_bytes_checkpointed": checkpointed,
           "worker_item_bytes": worker_bytes,
           "month_hours": prices.HOURS_PER_MONTH, "price_source": prices.SOURCE}
    renew_only = model_rates(cameras, workers, lease_seconds, lease_bytes, worker_bytes)
    with_video = model_rates(cameras, workers, lease_seconds, checkpointed, worker_bytes,
                             checkpoint_every=2.0)
    out["leases_only"] = renew_only | monthly_cost(renew_only)
    out["with_checkpoints_every_2s"] = with_video | monthly_cost(with_video)
    params = leases.get("parameters") or {}
    steady = leases.get("steady")
    if steady and params:  # the model at the measured configuration, against the measurement
        here = model_rates(params["streams"], params["workers"], params["lease_seconds"],
                           lease_bytes, worker_bytes)
        out["model_check"] = {
            op: {"measured_per_s": steady["calls_per_second"].get(op, 0.0),
                 "model_per_s": here["calls_per_second"][op],
                 "ratio": (steady["calls_per_second"].get(op, 0.0)
                           / here["calls_per_second"][op])}
            for op in ("UpdateItem", "Scan")}
    return out


# --- output -------------------------------------------------------------------------------------

def _f(value, spec: str = ".1f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def lease_rows(run: dict, label: str) -> list[str]:
    p = run["parameters"]
    steady = run.get("steady") or {}
    per_hour = steady.get("calls_per_stream_hour", {})
    per_s = steady.get("calls_per_second", {})
    cores = steady.get("cores", {})
    doubles = run.get("double_held", {})
    overlap = ", ".join(f"{phase} {d['max_streams']} max / {d['stream_seconds']:.1f} "
                        "stream-s" for phase, d in doubles.items())
    rows = [
        (f"| {label}: workers x streams, lease | {p['workers']} x {p['streams']}, "
        f"{p['lease_seconds']:g} s |"),
        (f"| converged (balanced: each stream held once, each worker ceil(S/W)+-1) | "
        f"{'yes' if run.get('converged') else 'NO'} |"),
        f"| (a) start -> balanced | {_f(run.get('convergence_seconds'), '.1f', ' s')} |",
        (f"| (b) SIGKILL {(run.get('killed') or {}).get('worker', '-')} holding "
        f"{(run.get('killed') or {}).get('streams', '-')} streams -> all held by survivors | "
        f"{_f(run.get('takeover_seconds'), '.1f', ' s')} |"),
        f"| (b) SIGKILL -> balanced again | {_f(run.get('rebalance_seconds'), '.1f', ' s')} |",
        (f"| streams held by two live workers at once (max / integral, by phase) | "
        f"{overlap or '-'} |"),
        "| steady DynamoDB calls per stream-hour | "
        + (", ".join(f"{op} {v:,.0f}" for op, v in per_hour.items()) or "-") + " |",
        "| steady DynamoDB calls per second | "
        + (", ".join(f"{op} {v:,.1f}" for op, v in per_s.items()) or "-") + " |",
        (f"| steady CPU: workers / harness + local stack (moto) / machine | "
        f"{_f(cores.get('workers'), '.2f')} / {_f(cores.get('harness_and_local_stack'), '.2f')}"
        f" / {_f(cores.get('machine'), '.2f')} cores |"),
        "| lease item size (measured) | "
        f"{_f((run.get('items') or {}).get('lease_item_bytes_mean'), '.0f', ' B')} |",
    ]
    if steady:
        rows.append(f"| steady window: lease moves / still balanced at its end | "
                    f"{steady['lease_moves_in_window']} / "
                    f"{'yes' if steady['still_balanced'] else 'NO (churn)'} |")
    if run.get("saturated"):
        rows.append(f"| note | {run['saturated']} |")
    return rows


def projection_lines(proj: dict) -> list[str]:
    lines = [(f"10,000-camera arithmetic: {proj['cameras']:,} cameras, {proj['workers']} workers, "
             f"lease {proj['lease_seconds']:g} s (renew every {proj['lease_seconds'] / 3:.2f} s, "
             f"scan every {proj['lease_seconds'] / 3:.2f} s per worker)"), "",
             ("| case | UpdateItem/s | Scan calls/s | WRU/s | RRU/s | $/month writes | "
             "$/month reads | $/month total |"), "|---|---|---|---|---|---|---|---|"]
    for key, name in (("leases_only", "leases only (renewals)"),
                      ("with_checkpoints_every_2s", "with video: a checkpoint per 2 s fragment")):
        c = proj[key]
        usd = c["usd_per_month"]
        lines.append(f"| {name} | {c['calls_per_second']['UpdateItem']:,.0f} | "
                     f"{c['calls_per_second']['Scan']:,.0f} | {c['write_units_per_second']:,.0f} "
                     f"| {c['read_units_per_second']:,.0f} | {usd['writes']:,.0f} | "
                     f"{usd['reads']:,.0f} | {usd['total']:,.0f} |")
    lo = proj["leases_only"]
    price = lo["prices_usd_per_million"]
    lines += [
        "",
        (f"- UpdateItem/s = {proj['cameras']:,} leases / {proj['lease_seconds'] / 3:.3g} s + "
        f"{proj['workers']} worker heartbeats / {proj['lease_seconds'] / 3:.3g} s = "
        f"{lo['update_item']['lease_writes_per_second']:,.0f} + "
        f"{lo['update_item']['heartbeats_per_second']:,.0f}; 1 WRU each (item "
        f"{proj['lease_item_bytes']:.0f} B measured, < 1 KB; "
        f"{proj['lease_item_bytes_checkpointed']:.0f} B once checkpointed)"),
        (f"- Scans: {proj['workers']} workers / {proj['lease_seconds'] / 3:.2f} s = "
        f"{lo['scans_per_second']:.0f} full-table scans/s of {lo['table_bytes'] / 1e6:.2f} MB "
        f"({proj['cameras']:,} x {proj['lease_item_bytes']:.0f} B + {proj['workers']} x "
        f"{proj['worker_item_bytes']:.0f} B) = {lo['scan_pages']} pages of 1 MB each; "
        f"ceil(bytes / 4 KB) / 2 = {lo['read_units_per_second'] / lo['scans_per_second']:,.0f} "
        f"RRU per scan (eventually consistent) -> {lo['read_units_per_second']:,.0f} RRU/s"),
        (f"- prices: ${price['write']} per million WRU, ${price['read']} per million RRU "
        f"(DynamoDB on-demand, {prices.REGION}, bench/prices.py: after AWS's 2024-11-01 cut, "
        f"as published in 2025; verify before quoting); month = {proj['month_hours']} h"),
        (f"- at the pre-cut prices ($1.25 / $0.25 per million, before 2024-11-01) the totals are "
        f"twice: ${lo['usd_per_month_at_brief_prices']:,.0f} and "
        f"${proj['with_checkpoints_every_2s']['usd_per_month_at_brief_prices']:,.0f} a month"),
    ]
    check = proj.get("model_check")
    if check:
        lines.append("- model vs this run's measurement (same W, S, lease): " + "; ".join(
            f"{op} measured {c['measured_per_s']:.1f}/s, model {c['model_per_s']:.1f}/s "
            f"(x{c['ratio']:.2f})" for op, c in check.items()))
    return lines


def markdown(results: dict) -> str:
    lines = [(f"# bench.fleet ({results['started']}, {results['machine']['cores_usable']} cores, "
             f"{results['machine']['cpu_model']})"), ""]
    leases = results.get("leases")
    if leases:
        lines += ["## leases: the real lease code, no video, local stack (moto DynamoDB)", "",
                  "| figure | value |", "|---|---|"]
        lines += lease_rows(leases["requested"], "requested")
        if leases.get("fallback"):
            lines += lease_rows(leases["fallback"], "what fits")
        lines += [""] + projection_lines(leases["projection"]) + [""]
    procs = results.get("processes")
    if procs:
        from bench.fleet_processes import markdown_lines
        lines += markdown_lines(procs) + [""]
    return "\n".join(lines)


def _saturation(run: dict) -> str | None:
    cores = (run.get("steady") or {}).get("cores") or run.get("startup_cores") or {}
    stack = cores.get("harness_and_local_stack")
    if not run.get("converged"):
        return ("did NOT converge in the time allowed; meanwhile the local DynamoDB (moto, one "
                f"Python process, with the harness) used {_f(stack, '.2f')} cores and the "
                f"machine {_f(cores.get('machine'), '.2f')}: at about 1 core moto is saturated, "
                "renewals come late, keepers fence their leases and the fleet churns")
    if stack is not None and stack >= 0.85:
        return (f"the local DynamoDB (moto, one Python process) used {stack:.2f} cores: "
                "saturated, so call latencies and these times are the local stack's")
    return None


def run_lease_part(args, log) -> dict:
    from bench.fleet_leases import LeaseRun, run_leases

    def one(streams: int) -> dict:
        run = LeaseRun(workers=args.workers, streams=streams, lease_seconds=args.lease_seconds,
                       steady_seconds=args.steady, converge_timeout=args.converge_timeout)
        log(f"leases: {run.workers} workers x {run.streams} streams, lease "
            f"{run.lease_seconds:g} s")
        result = run_leases(run, log=log)
        result["saturated"] = _saturation(result)
        log(f"leases: {run.workers} x {run.streams} done in {result['wall_seconds']:.0f} s")
        return result

    part = {"requested": one(args.streams)}
    req = part["requested"]
    stable = req["converged"] and (req.get("steady") or {}).get("still_balanced")
    if not stable and 0 < args.fallback_streams < args.streams:
        log(f"leases: {args.workers} x {args.streams} did not converge on this machine; "
            f"measuring {args.workers} x {args.fallback_streams} as well")
        part["fallback"] = one(args.fallback_streams)
    part["projection"] = projection(part.get("fallback") or part["requested"])
    return part


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or REPO / "bench" / "results" / f"fleet-{stamp}"

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:5.0f} s] {message}", flush=True)

    from bench.report import machine

    results: dict = {"started": stamp, "command": "python -m bench.fleet " + " ".join(
        sys.argv[1:] if argv is None else argv), "machine": machine(),
        "parameters": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if args.part in ("leases", "both"):
        results["leases"] = run_lease_part(args, log)
        # the figures the smoke test and a reader look for first, at the top of the part
        req = results["leases"]["requested"]
        results["leases"].update({
            "converged": req["converged"], "convergence_seconds": req["convergence_seconds"],
            "takeover_seconds": req["takeover_seconds"],
            "rebalance_seconds": req["rebalance_seconds"],
            "calls_per_stream_hour": req.get("calls_per_stream_hour")})
    if args.part in ("processes", "both"):
        from bench.fleet_processes import run_process_part
        results["processes"] = run_process_part(args, out, log)
    results["total_seconds"] = time.monotonic() - began
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = markdown(results)
    (out / "report.md").write_text(text + "\n")
    print()
    print(text)
    print(f"outputs: {out / 'results.json'}, {out / 'report.md'}")
    print(f"total time: {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
