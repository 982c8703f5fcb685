"""An event's highlight: the frame that raised it, annotated for a person looking at an alert.

Every person's box and skeleton (`consumer.formats.annotate.draw_persons`), the rule's geometry (the
zone's polygon or the line, with its a→b arrow), the event's track boxed thick in red with its
id, and a caption naming the event. Pure: the frame is not modified; returns JPEG bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from consumer.formats.annotate import draw_persons, encode_jpeg
from processors.base import Person
from processors.events import Event, LineRule, Rule, ZoneRule

ALERT = (255, 40, 40)
GEOMETRY = (255, 220, 0)


def highlight_jpeg(image: np.ndarray, persons: Sequence[Person], event: Event,
                   rules: Sequence[Rule], quality: int = 85) -> bytes:
    canvas = Image.fromarray(draw_persons(image, persons))
    draw = ImageDraw.Draw(canvas)
    width, height = canvas.size
    line = max(2, round(min(width, height) / 200))

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
    for person in persons:
        if event.track_id is not None and person.track_id == event.track_id:
            left, top, right, bottom = person.bbox
            box = (left * width, top * height, right * width, bottom * height)
            draw.rectangle(box, outline=ALERT, width=2 * line)
            draw.text((box[0] + 2 * line, box[1] + 2 * line), f"track {event.track_id}",
                      fill=ALERT)
    caption = f"{event.type}: {event.rule}" + (
        f" track {event.track_id}" if event.track_id is not None else "")
    draw.rectangle((0, 0, width, 14 + 2 * line), fill=(0, 0, 0))
    draw.text((line * 2, line), caption, fill=(255, 255, 255))
    return encode_jpeg(np.asarray(canvas), quality)
