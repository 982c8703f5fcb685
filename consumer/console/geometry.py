"""A camera's zones and lines (`rule_shapes`), and an SVG of them to lay over its pictures
(`overlay_svg`).

Coordinates are the configuration's: normalised to the picture, 0..1, x right, y down. The
overlay's viewBox is that unit square stretched over the picture (preserveAspectRatio="none"),
with strokes that keep their width (vector-effect="non-scaling-stroke"). It needs CSS to sit on
the picture: a positioned container, and `position: absolute; inset: 0` on `svg.overlay`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Literal

from consumer.config_events import Events
from processors.events import CountRule, DwellRule, LineRule, ZoneRule

Point = tuple[float, float]
ARROW = 0.06  # length of a line's direction arrows, in picture heights/widths
FONT = 0.04  # label size, in picture heights


@dataclass(frozen=True)
class Shape:
    """A zone (`points`: its polygon) or a line (`points`: a, b; `direction` as configured:
    "any", "left_to_right" or "right_to_left", seen travelling from a to b). `rules`: the names
    of the dwell and count rules that watch this zone, whose events highlight it too."""
    name: str
    kind: Literal["zone", "line"]
    points: list[Point]
    direction: str | None = None
    rules: tuple[str, ...] = field(default=())


def rule_shapes(events_config: Events, stream: str) -> list[Shape]:
    """The zones and lines of the camera `stream` (its rules as `Events.rules_for` finds them:
    its own, else the first matching pattern's), in configuration order. Rules with a point
    that is not a finite number are left out."""
    rules = events_config.rules_for(stream)
    watchers: dict[str, list[str]] = {}
    for rule in rules:
        if isinstance(rule, DwellRule | CountRule) and rule.zone is not None:
            watchers.setdefault(rule.zone, []).append(rule.name)
    shapes = []
    for rule in rules:
        if isinstance(rule, ZoneRule):
            shape = Shape(rule.name, "zone", [_point(p) for p in rule.polygon],
                          rules=tuple(watchers.get(rule.name, ())))
        elif isinstance(rule, LineRule):
            shape = Shape(rule.name, "line", [_point(rule.a), _point(rule.b)], rule.direction)
        else:
            continue
        if all(math.isfinite(c) for p in shape.points for c in p):
            shapes.append(shape)
    return shapes


def overlay_svg(shapes: list[Shape], highlight: str | None = None, *,
                aspect: float | None = None) -> str:
    """`<svg class="overlay" viewBox="0 0 1 1" preserveAspectRatio="none">` with one
    `<g class="shape zone|line" data-rule="NAME">` per shape: a translucent polygon, or a line
    with arrows across it pointing the way(s) a crossing counts, and its label. The shape
    named `highlight`, or watched by a rule of that name, gets class `hit` and stronger
    colours. `aspect` (the picture's width / height) keeps labels from being stretched; without
    it they are drawn as for a square picture. Clicks go through to the picture."""
    if aspect is not None and not (math.isfinite(aspect) and 0.1 <= aspect <= 10):
        raise ValueError(f"overlay aspect: expected width / height in 0.1..10, got {aspect!r}")
    parts = [('<svg xmlns="http://www.w3.org/2000/svg" class="overlay" viewBox="0 0 1 1" '
              'preserveAspectRatio="none" width="100%" height="100%" pointer-events="none" '
              f'data-shapes="{len(shapes)}" role="img">'),
             f"<title>{escape(_title(shapes))}</title>"]
    for shape in shapes:
        hit = highlight is not None and (highlight == shape.name or highlight in shape.rules)
        parts.append(_zone(shape, hit) if shape.kind == "zone" else _line(shape, hit))
        parts.append(_label(shape, aspect or 1.0))
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def _zone(shape: Shape, hit: bool) -> str:
    colour = "#f97316" if hit else "#38bdf8"
    return (f'<g class="shape zone{" hit" if hit else ""}" data-rule="{escape(shape.name)}">'
            f'<polygon points="{_coords(shape.points)}" fill="{colour}" '
            f'fill-opacity="{0.35 if hit else 0.18}" stroke="{colour}" '
            f'stroke-width="{3 if hit else 1.5}" vector-effect="non-scaling-stroke"/>')


def _line(shape: Shape, hit: bool) -> str:
    colour = "#f97316" if hit else "#facc15"
    (ax, ay), (bx, by) = shape.points
    direction = shape.direction or "any"
    out = [(f'<g class="shape line{" hit" if hit else ""}" data-rule="{escape(shape.name)}" '
            f'data-direction="{escape(direction)}" stroke="{colour}" '
            f'stroke-width="{3 if hit else 2}" fill="none" stroke-linecap="round">'),
           (f'<line x1="{_n(ax)}" y1="{_n(ay)}" x2="{_n(bx)}" y2="{_n(by)}" '
            f'vector-effect="non-scaling-stroke"/>')]
    length = math.hypot(bx - ax, by - ay)
    if length > 0:
        # the right-hand side of a->b on screen (y down): a crossing "left_to_right" moves there
        nx, ny = -(by - ay) / length, (bx - ax) / length
        mx, my = (ax + bx) / 2, (ay + by) / 2
        signs = {"left_to_right": (1,), "right_to_left": (-1,)}.get(direction, (1, -1))
        for sign in signs:
            out.append(_arrow((mx, my), (sign * nx, sign * ny)))
    return "".join(out)


def _arrow(origin: Point, unit: Point) -> str:
    """From `origin`, ARROW long along `unit`, with a head."""
    (ox, oy), (ux, uy) = origin, unit
    tip = (ox + ux * ARROW, oy + uy * ARROW)
    back = (tip[0] - ux * ARROW / 3, tip[1] - uy * ARROW / 3)
    side = (-uy * ARROW / 4, ux * ARROW / 4)
    head = [(back[0] + side[0], back[1] + side[1]), tip, (back[0] - side[0], back[1] - side[1])]
    return (f'<polyline class="arrow" points="{_coords([origin, tip])}" '
            f'vector-effect="non-scaling-stroke"/>'
            f'<polyline class="arrow" points="{_coords(head)}" '
            f'vector-effect="non-scaling-stroke"/>')


def _label(shape: Shape, aspect: float) -> str:
    """Just below and right of the shape's top-left-most point, kept inside the picture;
    scaled by 1/aspect in x about its anchor so that it is not stretched."""
    x, y = min(shape.points, key=lambda p: (p[1] + p[0]))
    x = min(max(x + 0.01, 0.01), 0.9)
    y = min(max(y + FONT + 0.005, FONT + 0.01), 0.99)
    transform = (f' transform="translate({_n(x)} {_n(y)}) scale({_n(1 / aspect)} 1) '
                 f'translate({_n(-x)} {_n(-y)})"' if aspect != 1.0 else "")
    return (f'<text class="label" x="{_n(x)}" y="{_n(y)}" font-size="{FONT}" '
            f'font-family="sans-serif" fill="#fff" stroke="#000" stroke-width="{FONT / 6:.4f}" '
            f'stroke-opacity="0.6" paint-order="stroke"{transform}>{escape(shape.name)}</text>')


def _title(shapes: list[Shape]) -> str:
    if not shapes:
        return "no zones or lines"
    return "zones and lines: " + ", ".join(shape.name for shape in shapes)


def _point(p) -> Point:
    return float(p[0]), float(p[1])


def _coords(points: list[Point]) -> str:
    return " ".join(f"{_n(x)},{_n(y)}" for x, y in points)


def _n(value: float) -> str:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
