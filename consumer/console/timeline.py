"""The timeline of one camera: its events as marks along an SVG time axis (inline, no
script), each mark a link to the event's card on the page. Lasting events are bars from start
to end; instants are dots. Times are UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

SPANS = {"hour": 3600.0, "day": 86400.0}
COLOURS = {"zone_entry": "#2b8a3e", "zone_exit": "#868e96", "line_crossing": "#1c7ed6",
           "dwell": "#e8590c", "count": "#ae3ec9", "fall": "#e03131",
           "face_match": "#0ca678"}
TICKS = {"hour": (600.0, "%H:%M"), "day": (3 * 3600.0, "%H:%M")}


def timeline_svg(events: list[dict], start: float, end: float, span: str,
                 width: int = 1000, height: int = 70) -> str:
    """`events`: dicts with event_id, event_type, start_time, end_time (API rendering)."""
    def x(t: float) -> float:
        return round(10 + (width - 20) * (min(max(t, start), end) - start) / (end - start), 1)

    step, fmt = TICKS[span]
    parts = [(f'<svg class="timeline" viewBox="0 0 {width} {height}" width="100%" '
              f'role="img" data-events="{len(events)}"><title>events from '
              f'{_utc(start, "%Y-%m-%d %H:%M")} to {_utc(end, "%H:%M")} UTC</title>'),
             f'<line x1="10" y1="40" x2="{width - 10}" y2="40" class="axis"/>']
    tick = start - start % step + (step if start % step else 0)
    while tick <= end:
        parts.append(f'<line x1="{x(tick)}" y1="36" x2="{x(tick)}" y2="44" class="tick"/>'
                     f'<text x="{x(tick)}" y="60" text-anchor="middle">'
                     f'{_utc(tick, fmt)}</text>')
        tick += step
    for event in events:
        colour = COLOURS.get(event["event_type"], "#495057")
        begin = x(event["start_time"])
        link = f'<a href="#event-{escape(event["event_id"])}" data-event="{escape(event["event_id"])}">'
        label = escape(f'{event["event_type"]} at {_utc(event["start_time"], "%H:%M:%S")}')
        if event.get("end_time"):
            length = max(x(event["end_time"]) - begin, 4)
            mark = (f'<rect x="{begin}" y="18" width="{length}" height="14" rx="3" '
                    f'fill="{colour}"><title>{label}</title></rect>')
        else:
            mark = f'<circle cx="{begin}" cy="25" r="6" fill="{colour}"><title>{label}</title></circle>'
        parts.append(f"{link}{mark}</a>")
    parts.append("</svg>")
    return "".join(parts)


def _utc(seconds: float, fmt: str) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime(fmt)
