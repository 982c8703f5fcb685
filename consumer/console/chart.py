"""Person counts over time as an inline SVG (`person_count_chart`): no JavaScript, no library.

The input is, per camera, (time, mean persons per minute) points; times are seconds since the
epoch and shown in UTC. Every piece of text is XML-escaped (camera names are external input), so
the result can be embedded in an HTML page as it is.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from html import escape
from itertools import pairwise

# distinct on white (Tableau 10); past ten cameras the colours repeat with dashes
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
GAP_SECONDS = 120.0  # a longer gap between two points breaks the line
MAX_X_TICKS = 8
# tick steps in seconds, each at most twice the previous one (hence at least 4 ticks once the
# span is a few minutes long)
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 10800,
              21600, 43200, 86400, 2 * 86400, 4 * 86400, 7 * 86400, 14 * 86400, 28 * 86400)
DAY = 86400.0
LATEST = 253402300799.0  # 9999-12-31T23:59:59Z, the last time datetime can show
LEFT, RIGHT, BOTTOM = 44, 14, 26  # plot margins, px
LEGEND_ROW = 18
CHAR_WIDTH = 7  # estimate for 12 px sans-serif text, to lay the legend out


def person_count_chart(series: dict[str, list[tuple[float, float]]], start: float, end: float,
                       width: int = 900, height: int = 260) -> str:
    """An `<svg class="chart" data-series="N">` of each camera's points between `start` and
    `end` (one polyline per run of points no more than 2 minutes apart; points outside the
    period, or not finite, are left out; cameras with no point left are not drawn, and N counts
    the cameras drawn). Without any point: a chart saying "no frames in this period".
    Raises ValueError for a period that is not 0 <= start < end <= year 9999, or a size under
    200 x 120."""
    if not (0 <= start < end <= LATEST):
        raise ValueError(f"chart period: expected times (seconds since the epoch) with "
                         f"start < end, got {start!r}, {end!r}")
    if width < 200 or height < 120:
        raise ValueError(f"chart size: expected at least 200 x 120, got {width} x {height}")
    cameras = {name: points for name in sorted(series)
               if (points := _points(series[name], start, end))}
    title = (f"Mean persons per minute by camera, {_stamp(start, '%Y-%m-%d %H:%M')} to "
             f"{_stamp(end, '%Y-%m-%d %H:%M')} UTC")
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'data-series="{len(cameras)}" font-family="sans-serif" font-size="12">'
            f"<title>{escape(title)}</title>")
    if not cameras:
        return (head + f'<text class="empty" x="{width / 2:.1f}" y="{height / 2:.1f}" '
                f'text-anchor="middle" fill="#555">no frames in this period</text></svg>')

    legend, legend_height = _legend(list(cameras), width)
    top = 8 + legend_height
    plot_w, plot_h = width - LEFT - RIGHT, height - top - BOTTOM
    if plot_h < 40:
        raise ValueError(f"chart size: {len(cameras)} cameras' legend leaves no room in "
                         f"{width} x {height}")
    y_max, y_step = _y_scale(max(v for points in cameras.values() for _, v in points))

    def x_of(t: float) -> float:
        return LEFT + (t - start) / (end - start) * plot_w

    def y_of(v: float) -> float:
        return top + plot_h - v / y_max * plot_h

    parts = [head, legend, '<g class="axes" stroke="#999" fill="#444">']
    for i in range(round(y_max / y_step) + 1):
        value = i * y_step
        y = y_of(value)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" '
                     f'y2="{y:.1f}" stroke="#e5e5e5"/>'
                     f'<text class="y-tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'stroke="none">{_number(value)}</text>')
    bottom = top + plot_h
    parts.append(f'<line x1="{LEFT}" x2="{LEFT}" y1="{top}" y2="{bottom}"/>'
                 f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{bottom}" y2="{bottom}"/>')
    for t, label in time_ticks(start, end):
        x = x_of(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 4}"/>'
                     f'<text class="x-tick" x="{x:.1f}" y="{bottom + 17}" text-anchor="middle" '
                     f'stroke="none">{escape(label)}</text>')
    parts.append("</g>")
    for index, (name, points) in enumerate(cameras.items()):
        parts.append(f'<g class="series" data-camera="{escape(name)}" fill="none" '
                     f'stroke="{_colour(index)}" stroke-width="2" stroke-linejoin="round" '
                     f'stroke-linecap="round"{_dash(index)}><title>{escape(name)}</title>')
        for run in _runs(points):
            coords = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in (run if len(run) > 1 else run * 2))
            # a lone point: a zero-length line, which a wider round cap shows as a dot
            parts.append(f'<polyline points="{coords}"/>' if len(run) > 1 else
                         f'<polyline class="point" points="{coords}" stroke-width="5"/>')
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def time_ticks(start: float, end: float) -> list[tuple[float, str]]:
    """Tick times (multiples of a round step, in UTC) between start and end, at most 8, with
    their labels: HH:MM (HH:MM:SS for steps under a minute), MM-DD HH:MM when the span is over
    a day."""
    span = end - start
    step = next((s for s in TIME_STEPS if _count(start, end, s) <= MAX_X_TICKS),
                math.ceil(span / 6 / DAY) * DAY)
    fmt = "%m-%d %H:%M" if span > DAY else "%H:%M:%S" if step < 60 else "%H:%M"
    first = math.ceil(start / step)
    return [(k * step, _stamp(k * step, fmt))
            for k in range(first, math.floor(end / step) + 1)]


def _count(start: float, end: float, step: float) -> int:
    return math.floor(end / step) - math.ceil(start / step) + 1


def _points(points: list[tuple[float, float]], start: float, end: float
            ) -> list[tuple[float, float]]:
    kept = [(float(t), max(0.0, float(v))) for t, v in points
            if math.isfinite(t) and math.isfinite(v) and start <= t <= end]
    return sorted(kept)


def _runs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    runs = [[points[0]]]
    for previous, point in pairwise(points):
        if point[0] - previous[0] > GAP_SECONDS:
            runs.append([])
        runs[-1].append(point)
    return runs


def _y_scale(top_value: float) -> tuple[float, float]:
    """(max, step): the max rounded up to a multiple of a 1-2-5 step, at least 1; 3-6 steps."""
    if top_value <= 1:
        return 1.0, 0.25
    magnitude = 10 ** math.floor(math.log10(top_value))
    for step in (magnitude / 5, magnitude / 2, magnitude, magnitude * 2, magnitude * 5):
        step = max(step, 1.0)
        if math.ceil(top_value / step) <= 6:
            return math.ceil(top_value / step) * step, step
    return math.ceil(top_value / (magnitude * 10)) * magnitude * 10, magnitude * 10


def _legend(names: list[str], width: int) -> tuple[str, int]:
    parts = ['<g class="legend" fill="#333">']
    x, row = LEFT, 0
    for index, name in enumerate(names):
        label = name if len(name) <= 40 else name[:39] + "…"
        item = 22 + CHAR_WIDTH * len(label) + 14
        if x > LEFT and x + item > width - RIGHT:
            x, row = LEFT, row + 1
        y = 8 + row * LEGEND_ROW
        parts.append(f'<line x1="{x}" x2="{x + 16}" y1="{y + 6}" y2="{y + 6}" '
                     f'stroke="{_colour(index)}" stroke-width="3"{_dash(index)}/>'
                     f'<text x="{x + 22}" y="{y + 10}">{escape(label)}</text>')
        x += item
    parts.append("</g>")
    return "".join(parts), (row + 1) * LEGEND_ROW + 4


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _dash(index: int) -> str:
    dash = DASHES[(index // len(PALETTE)) % len(DASHES)]
    return f' stroke-dasharray="{dash}"' if dash else ""


def _number(value: float) -> str:
    return f"{value:g}"


def _stamp(t: float, fmt: str) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(fmt)
