"""Figures of one probe, from its raw observations (bench.scenario.run_probe).

Times: t0 is the producer timestamp of the first fragment of any camera; t_cut is when the
consumers were told to stop (SIGTERM); the run [t0, t_cut] is cut in thirds. The first third is
warm-up and counts for nothing but the lag plot.

- lag of a record: its arrival in Kinesis Data Streams minus its frame's producer time. The lag
  over time of a camera: the largest lag of its records arriving in each 1 s bin.
- latency of a record: its arrival minus the server timestamp of the fragment holding its frame
  (ListFragments, matched on producer time); percentiles over records of frames after warm-up.
  The simulator sends a fragment when it is complete, so the server timestamp is about when its
  last frame was captured: latency is the consumer's own delay (GetMedia, decode, analysis,
  delivery).
- delay of a fragment: the arrival of its last record (by t_cut) minus its server timestamp
  (fragments with no record by t_cut have none: criterion 1 counts what they miss).
- BOUNDED (the lag stayed bounded over the run) when both hold:
    1. delivered: records of frames in the fragments starting in [t0 + T/3, t_cut - 3
       fragments] that arrived by t_cut number at least 95 % of S x those fragments' duration,
       all cameras (the consumer keeps up and delivers a frame within 3 fragment durations of
       its capture; whole fragments, so the count does not depend on the schedule's phase);
    2. not growing: the least-squares slope of the fragments' delay against their server
       timestamp, over fragments from t0 + T/3 to t_cut - 1 fragment, is at most 0.1 s per s
       (the consumer falls behind real time by at most 10 %; a consumer that keeps up has a
       flat delay, one that does not has a delay growing by 1 - throughput/demand).
  A consumer process that exits with an error at SIGTERM is reported (`errors`), not judged.
- analysed fps: records arriving after warm-up, per second, all cameras together.
- CPU: cores used = CPU seconds / wall seconds between the first sample after warm-up and the
  last one, for the consumer's processes, the cameras, this harness with the local stack, and
  the whole machine. Peak RSS: the largest sum of the consumer processes' VmHWM.
- API calls per camera-hour: calls / K / (t_cut - t0). Calls made once per stream or process
  start (STARTUP_OPERATIONS) are reported as counts only; GetMedia is priced per GB, not call.
- stage times: what the consumer measured inside itself per pipeline stage (its --stats-file's
  `stage_times`; consumer.pipeline.stage_times, bench.naive's docstring for the naive one),
  merged over its processes: count, mean, p50, p90, max in seconds, over the whole probe
  (warm-up included, shutdown drain too).
"""

from __future__ import annotations

import bisect
import statistics
from collections import defaultdict

from bench import prices
from consumer.pipeline.stage_times import merge

# Near-complete: a consumer that drops frames when behind (the naive one reconnects at NOW) has a
# flat delay but is not sustaining its cameras.
DELIVERED_FRACTION = 0.95
GROWTH_LIMIT = 0.1  # seconds of delay gained per second of run
STARTUP_OPERATIONS = frozenset({
    "dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:GetItem",
    "kinesisvideo:DescribeStream", "kinesisvideo:GetDataEndpoint", "kinesisvideo:ListStreams",
    "kinesisvideo:ListTagsForStream", "kinesis-video-media:GetMedia", "kinesis:ListShards",
    "kinesis:GetShardIterator", "kinesis:GetRecords"})
HOUR = 3600.0


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _server_time(fragments: list[list[float]], producer_time: float) -> float | None:
    """Server timestamp of the fragment holding a frame of this producer time."""
    starts = [f[0] for f in fragments]
    index = bisect.bisect_right(starts, producer_time + 1e-3) - 1
    return fragments[index][1] if index >= 0 else None


def fragment_delays(raw: dict, since: float, until: float,
                    fragment_seconds: float) -> list[tuple[float, float]]:
    """(server timestamp, delay) of each fragment with a server timestamp in
    [since, until - one fragment] and a record arrived by `until`."""
    last: dict[tuple[str, int], float] = {}
    for a in raw["arrivals"]:
        rows = raw["fragments"].get(a["stream"], [])
        index = bisect.bisect_right([f[0] for f in rows], a["producer_time"] + 1e-3) - 1
        if index >= 0 and a["arrival"] <= until:
            key = (a["stream"], index)
            last[key] = max(a["arrival"], last.get(key, 0.0))
    points = []
    for stream, rows in raw["fragments"].items():
        for index, row in enumerate(rows):
            server = row[1]
            if not since <= server <= until - fragment_seconds:
                continue
            if (stream, index) in last:
                points.append((server, last[(stream, index)] - server))
    return sorted(points)


def judged_frames(fragments: dict[str, list], arrivals: list[dict], fps: float, since: float,
                  until: float, cut: float) -> tuple[float, int]:
    """(frames expected, records delivered by `cut`) for criterion 1: per camera, over its
    whole fragments that start in [since, until): S x their duration expected, records of frames
    in them counted. Whole fragments, so a window holds the same number of sample times whatever
    the phase of a camera's schedule (a fixed-length window held 6 or 7 frames of a camera at
    S = 1 depending on where its fragments began: 90 % or 105 % for a consumer that missed
    nothing)."""
    spans: dict[str, tuple[float, float]] = {}
    expected = 0.0
    for stream, rows in fragments.items():
        starts = [row[0] for row in rows]
        # a fragment's length is the time to the next one's start: ListFragments' duration
        # stops at its last frame's timestamp, a frame period short (2 s fragments of 15 fps
        # read as 1.933 s, which made 4 records a fragment count as 103 %)
        lengths = [b - a for a, b in zip(starts, starts[1:])]
        typical = statistics.median(lengths) if lengths else None
        inside = [(start, lengths[i] if i < len(lengths) else (typical or rows[i][2]))
                  for i, start in enumerate(starts) if since <= start < until]
        if inside:
            spans[stream] = (inside[0][0], inside[-1][0] + inside[-1][1])
            expected += fps * sum(length for _, length in inside)
    margin = 1e-3  # a frame's producer time is the fragment's start plus whole milliseconds
    delivered = 0
    for a in arrivals:
        span = spans.get(a["stream"])
        delivered += bool(span and span[0] - margin <= a["producer_time"] < span[1] - margin
                          and a["arrival"] <= cut)
    return expected, delivered


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of y against x; None for fewer than 3 points or one x."""
    if len(points) < 3:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sxx


def lag_series(arrivals: list[dict], t0: float) -> dict[str, list[list[float]]]:
    """Per stream: [seconds since t0 of the 1 s bin, largest lag of records arriving in it]."""
    bins: dict[str, dict[int, float]] = defaultdict(dict)
    for a in arrivals:
        second = int(a["arrival"] - t0)
        lag = a["arrival"] - a["producer_time"]
        bins[a["stream"]][second] = max(lag, bins[a["stream"]].get(second, lag))
    return {stream: [[s, round(v, 3)] for s, v in sorted(b.items())]
            for stream, b in sorted(bins.items())}


def _cores(samples: list[dict], since: float) -> dict[str, float | None]:
    later = [s for s in samples if s["time"] >= since]
    if len(later) < 2:
        later = samples[-2:]
    if len(later) < 2 or later[-1]["time"] <= later[0]["time"]:
        return {"consumer": None, "cameras": None, "harness": None, "machine": None}
    first, last = later[0], later[-1]
    wall = last["time"] - first["time"]
    cores = {group: (last[group]["cpu_seconds"] - first[group]["cpu_seconds"]) / wall
             for group in ("consumer", "cameras", "harness")}
    cores["machine"] = (last["machine_cpu_seconds"] - first["machine_cpu_seconds"]) / wall
    return cores


def api_rates(consumers: list[dict], cameras: int, hours: float) -> tuple[dict, dict]:
    """(recurring calls per camera-hour, start-up calls per probe) from the stats files."""
    totals: dict[str, int] = defaultdict(int)
    for consumer in consumers:
        for operation, count in ((consumer.get("stats") or {}).get("api_calls") or {}).items():
            totals[operation] += count
    recurring = {op: n / cameras / hours for op, n in sorted(totals.items())
                 if op not in STARTUP_OPERATIONS}
    startup = {op: n for op, n in sorted(totals.items()) if op in STARTUP_OPERATIONS}
    return recurring, startup


def _errors(consumers: list[dict]) -> list[str]:
    """Consumer processes that exited with an error or wrote no stats file, counted."""
    statuses = defaultdict(int)
    for consumer in consumers:
        if consumer["exit_status"] != 0:
            statuses[consumer["exit_status"]] += 1
    errors = [f"{n} of {len(consumers)} consumer process(es) exited with status {status} "
              "after SIGTERM" for status, n in sorted(statuses.items())]
    missing = sum(c["stats"] is None for c in consumers)
    if missing:
        errors.append(f"{missing} of {len(consumers)} consumer process(es) wrote no stats file")
    return errors


def stage_figures(consumers: list[dict]) -> dict[str, dict]:
    """Per stage: the consumer processes' stage times merged (seconds; histograms left out)."""
    merged = merge((c.get("stats") or {}).get("stage_times") for c in consumers)
    return {stage: {k: v for k, v in figures.items() if k != "histogram"}
            for stage, figures in merged.items()}


def summarise(raw: dict, fragment_seconds: float = 2.0) -> dict:
    """Derived figures of one probe (see the module's docstring)."""
    probe = raw["probe"]
    k, fps = probe["cameras"], probe["fps"]
    fragments = raw["fragments"]
    firsts = [rows[0][0] for rows in fragments.values() if rows]
    t0 = min(firsts) if firsts else raw["cameras_started"]
    t_cut = raw["stopped"]
    span = max(1e-6, t_cut - t0)
    warm = t0 + span / 3
    arrivals = raw["arrivals"]
    window_end = max(warm + fragment_seconds, t_cut - 3 * fragment_seconds)
    expected, delivered = judged_frames(fragments, arrivals, fps, warm, window_end, t_cut)
    delivered_ratio = delivered / expected if expected else 0.0
    delays = fragment_delays(raw, warm, t_cut, fragment_seconds)
    growth = slope(delays)
    errors = _errors(raw["consumers"])
    latencies = []
    for a in arrivals:
        server = _server_time(fragments.get(a["stream"], []), a["producer_time"])
        if server is not None and a["producer_time"] >= warm:
            latencies.append(a["arrival"] - server)
    cores = _cores(raw["samples"], warm)
    peak = max((s["consumer"]["peak_rss_bytes"] for s in raw["samples"]), default=0)
    hours = span / HOUR
    recurring, startup = api_rates(raw["consumers"], k, hours)
    record_bytes = sum(a["size"] for a in arrivals)
    video_bytes = sum(f[3] for rows in fragments.values() for f in rows if t0 <= f[0] < t_cut)
    per_hour = {
        "kinesisvideo:PutMedia": video_bytes / k / hours,
        "kinesis-video-media:GetMedia": video_bytes / k / hours,  # every fragment read once
        "kinesis:records": record_bytes / k / hours,
        "s3:PutObject": raw["s3"]["bytes"] / k / hours,
    }
    records_per_hour = len(arrivals) / k / hours
    cost = prices.cost_per_camera_day(recurring, per_hour, records_per_hour=records_per_hour)
    analysed = sum(warm <= a["arrival"] <= t_cut for a in arrivals)
    return {
        "kind": probe["kind"], "cameras": k, "fps": fps, "duration": probe["duration"],
        "run_seconds": span, "ready_seconds": raw["ready_seconds"],
        "bounded": bool(delivered_ratio >= DELIVERED_FRACTION
                        and (growth is None or growth <= GROWTH_LIMIT)),
        "delivered_ratio": delivered_ratio, "delay_growth_s_per_s": growth,
        "fragment_delay_p50_s": percentile([d for _, d in delays], 0.5),
        "fragments_judged": len(delays), "errors": errors,
        "records": len(arrivals), "analysed_fps": analysed / max(1e-6, t_cut - warm),
        "analysed_fps_target": k * fps,
        "latency_s": {"p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
                      "p99": percentile(latencies, 0.99), "records": len(latencies)},
        "readback_delay_p50_s": _median([a["polled"] - a["arrival"] for a in arrivals]),
        "cores": cores,
        "consumer_cores_per_camera": cores["consumer"] / k if cores["consumer"] else None,
        "peak_rss_bytes": peak, "peak_rss_bytes_per_camera": peak / k,
        "api_calls_per_camera_hour": recurring, "startup_api_calls": startup,
        "records_per_camera_hour": records_per_hour, "bytes_per_camera_hour": per_hour,
        "s3_objects": raw["s3"]["objects"], "persons": sum(a["persons"] for a in arrivals),
        "cost_per_camera_day_usd": cost["total_usd_per_day"],
        "cost_per_camera_day_by_service_usd": cost["usd_per_day_by_service"],
        "lag_series": lag_series(arrivals, t0),
        "stage_times": stage_figures(raw["consumers"]),
    }
