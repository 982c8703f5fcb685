"""`StageTimes` histograms (consumer.pipeline.stage_times) in the shapes observers want.

A stage's snapshot is a sparse list of [bucket index, count] over fixed log-spaced buckets
(`BUCKETS_PER_DECADE` a decade). Prometheus gets cumulative counts at a subset of the bucket
edges (`EDGES`: four a decade from 0.1 ms to 5620 s), exact since each is an edge of the
recorder's own buckets (labelled to 3 significant digits); `_sum` is the recorder's total. An EMF line gets
the largest sample of an interval from the difference of two snapshots: the middle of the
highest bucket that grew (within about 6 %), never above the recorder's exact maximum.
"""

from __future__ import annotations

import math

from consumer.pipeline.stage_times import BUCKETS, BUCKETS_PER_DECADE, LOWEST, bucket_middle

_LOG_LOWEST = round(math.log10(LOWEST))
STEP = BUCKETS_PER_DECADE // 4  # four edges a decade
FIRST_EDGE = (-4 - _LOG_LOWEST) * BUCKETS_PER_DECADE  # the edge at 1e-4 s
EDGE_INDEXES = tuple(range(FIRST_EDGE, BUCKETS, STEP))  # edge k: the lower bound of bucket k


def edge_seconds(index: int) -> float:
    """The lower bound of bucket `index`, in seconds (rounded to 3 significant digits)."""
    return float(f"{10 ** (_LOG_LOWEST + index / BUCKETS_PER_DECADE):.3g}")


EDGES = tuple(edge_seconds(k) for k in EDGE_INDEXES)


def dense(figures: dict | None) -> list[int]:
    """A stage snapshot's counts per bucket (all zero for None)."""
    counts = [0] * BUCKETS
    for index, n in (figures or {}).get("histogram", []):
        counts[int(index)] += n
    return counts


def prometheus_buckets(figures: dict | None) -> tuple[list[tuple[str, float]], float]:
    """([(le, cumulative count), ..., ("+Inf", count)], sum) of a stage snapshot."""
    from prometheus_client.utils import floatToGoString
    counts = dense(figures)
    buckets = []
    below = 0
    upto = 0
    for index, edge in zip(EDGE_INDEXES, EDGES):
        below += sum(counts[upto:index])  # buckets wholly under this edge
        upto = index
        buckets.append((floatToGoString(edge), float(below)))
    count = (figures or {}).get("count", 0)
    buckets.append(("+Inf", float(count)))
    mean = (figures or {}).get("mean") or 0.0
    return buckets, mean * count


def interval_max(before: list[int] | None, now: list[int], top: float | None) -> float | None:
    """The largest sample recorded between two dense snapshots (None: none recorded)."""
    before = before or [0] * len(now)
    for index in range(len(now) - 1, -1, -1):
        if now[index] > before[index]:
            if index == len(now) - 1 and top is not None:
                return top  # the last bucket also holds everything longer
            middle = bucket_middle(index)
            return min(middle, top) if top is not None else middle
    return None
