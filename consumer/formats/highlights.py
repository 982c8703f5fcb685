"""An event's highlight: the frame that raised it, annotated for a person looking at an alert.

Every person's box and skeleton (`consumer.formats.annotate.draw_persons`), the rule's geometry (the
zone's polygon or the line, with its a→b arrow), the event's track boxed thick in red with its
id, and a caption naming the event. A zone exit decided because the track was lost (details
reason "lost") has no track in its frame: its last box is drawn dashed, the caption says for how
long it was not seen, and, when given, the frame it was last seen in is inset (a third of the
size, in the corner away from the track). Pure: the frame is not modified; returns JPEG bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from consumer.formats.annotate import draw_persons, encode_jpeg
from processors.base import Person
from processors.events import Event, LineRule, Rule, ZoneRule

ALERT = (255, 40, 40)
GEOMETRY = (255, 220, 0)


def highlight_jpeg(image: np.ndarray, persons: Sequence[Person], event: Event,
                   rules: Sequence[Rule], quality: int = 85,
                   last_seen: tuple[np.ndarray, Sequence[Person]] | None = None) -> bytes:
    """`last_seen`: (image, persons) of the frame a lost track was last seen in, for the inset
    of a zone_exit with reason "lost" (the frame that decided it no longer shows the track)."""
    canvas = Image.fromarray(draw_persons(image, persons))
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(2, round(min(width, height) / 200))
    font = _font(max(11, round(min(width, height) / 26)))

    _geometry(draw, rules, event, width, height, line)
    _mark_track(draw, persons, event.track_id, width, height, line, font)
    caption = f"{event.type}: {event.rule}" + (
        f" track {event.track_id}" if event.track_id is not None else "")
    if event.type == "face_match":
        who = event.details.get("external_image_id") or event.details.get("face_id")
        caption += f": {who} ({event.details.get('similarity', 0):.0f}% similar)"
    lost = event.details.get("reason") == "lost"
    last_box = event.details.get("last_box")
    if lost:
        unseen = event.details.get("unseen_seconds")
        caption += ", track lost" + (f": not detected for {unseen:.1f} s" if unseen else "")
        if last_box:
            box = _pixels(last_box, width, height)
            _dashed_rectangle(draw, box, ALERT, line)
            _label(draw, (box[0], box[3] + line), "last seen", ALERT, font)
            caption += " (dashed: where last seen)"
    bar = font.size + 3 * line
    draw.rectangle((0, 0, width, bar), fill=(0, 0, 0))
    draw.text((line * 2, line), caption, fill=(255, 255, 255), font=font)
    if lost and last_seen is not None:
        _inset(canvas, last_seen, event, rules, last_box, bar, line, font)
    return encode_jpeg(np.asarray(canvas), quality)


def _geometry(draw: ImageDraw.ImageDraw, rules: Sequence[Rule], event: Event, width: int,
              height: int, line: int) -> None:
    """The rule's zone polygon, or its line with b marked."""
    def px(point) -> tuple[float, float]:
        return point[0] * width, point[1] * height

    zone = event.details.get("zone")
    for rule in rules:
        if isinstance(rule, ZoneRule) and rule.name in (event.rule, zone):
            draw.polygon([px(p) for p in rule.polygon], outline=GEOMETRY, width=line)
        elif isinstance(rule, LineRule) and rule.name == event.rule:
            a, b = px(rule.a), px(rule.b)
            draw.line((a, b), fill=GEOMETRY, width=line)
            draw.ellipse((b[0] - 2 * line, b[1] - 2 * line, b[0] + 2 * line, b[1] + 2 * line),
                         fill=GEOMETRY)  # marks b: directions are as seen from a to b


def _pixels(box, width: int, height: int) -> tuple[float, float, float, float]:
    left, top, right, bottom = box
    return left * width, top * height, right * width, bottom * height


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at `size` pixels (its bitmap font where FreeType is missing)."""
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1, or no FreeType
        font = ImageFont.load_default()
    if not hasattr(font, "size"):
        font.size = 11
    return font


def _label(draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str, colour, font) -> None:
    """`text` in `colour` on a black box at `at` (its top left)."""
    left, top, right, bottom = draw.textbbox(at, text, font=font)
    draw.rectangle((left - 2, top - 2, right + 2, bottom + 2), fill=(0, 0, 0))
    draw.text(at, text, fill=colour, font=font)


def _mark_track(draw: ImageDraw.ImageDraw, persons: Sequence[Person], track_id: int | None,
                width: int, height: int, line: int, font) -> None:
    """The event's track boxed thick in red with its id, where it is in the frame."""
    for person in persons:
        if track_id is not None and person.track_id == track_id:
            box = _pixels(person.bbox, width, height)
            draw.rectangle(box, outline=ALERT, width=2 * line)
            _label(draw, (box[0], max(0, box[1] - font.size - 2 * line)), f"track {track_id}",
                   ALERT, font)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box, colour, line: int) -> None:
    left, top, right, bottom = box
    dash = 4 * line
    for (x0, y0), (x1, y1) in (((left, top), (right, top)), ((right, top), (right, bottom)),
                               ((right, bottom), (left, bottom)), ((left, bottom), (left, top))):
        length = max(abs(x1 - x0), abs(y1 - y0))
        steps = max(1, int(length // (2 * dash)) + 1)
        for k in range(steps):
            a, b = 2 * k * dash / max(length, 1), min(1.0, (2 * k + 1) * dash / max(length, 1))
            if a >= 1.0:
                break
            draw.line((x0 + (x1 - x0) * a, y0 + (y1 - y0) * a,
                       x0 + (x1 - x0) * b, y0 + (y1 - y0) * b), fill=colour, width=line)


def _inset(canvas: Image.Image, last_seen, event: Event, rules: Sequence[Rule], last_box,
           bar: int, line: int, font) -> None:
    """The frame the lost track was last seen in (its persons, the rule's geometry, the track
    boxed), a third of the size, in the corner farthest from where it was last seen, framed in
    white and labelled."""
    image, persons = last_seen
    small = Image.fromarray(draw_persons(image, persons))
    draw = ImageDraw.Draw(small)
    small_line = max(2, round(min(small.size) / 200))
    _geometry(draw, rules, event, *small.size, small_line)
    _mark_track(draw, persons, event.track_id, *small.size, small_line, font)
    width, height = canvas.size
    w, h = max(1, width // 3), max(1, round(small.size[1] * (width // 3) / small.size[0]))
    small = small.resize((w, h))
    label = "last seen" + (f", {event.details['unseen_seconds']:.1f} s before"
                           if event.details.get("unseen_seconds") else "")
    _label(ImageDraw.Draw(small), (3, 3), label, (255, 255, 255), font)
    cx = (last_box[0] + last_box[2]) / 2 if last_box else 1.0
    cy = (last_box[1] + last_box[3]) / 2 if last_box else 1.0
    x = line if cx >= 0.5 else width - w - line
    y = bar + line if cy >= 0.5 else height - h - line
    canvas.paste(small, (x, y))
    ImageDraw.Draw(canvas).rectangle((x - 1, y - 1, x + w, y + h), outline=(255, 255, 255),
                                     width=max(1, line // 2))
