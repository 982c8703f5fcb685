"""Named starting points for the configuration: `preset: NAME` at the top of the file (or
`KVSA_PRESET`), for the live consumer (`run`) and for batch mode alike. A preset only fills in
keys the configuration leaves out: anything the file or the environment sets wins, key by key.
`kvs-analytics config --preset NAME` writes a complete, commented file with a preset's values
written out (consumer.config_template).

    preset           pose model  frames/s  JPEGs of frames  batch.workers  also
    development      lite        1         all, annotated   1              num_poses 2, (a)
    fast_processing  lite        1         none             2
    production       full        2         persons          2              the defaults, named
    high_accuracy    heavy       5         (not set)        2              num_poses 6, (b)

(a) processing.workers 1 (analysis threads); (b) min_detection_confidence,
min_presence_confidence and min_tracking_confidence 0.6 (0.5 by default).

For the YOLO processor (`processing.processor: yolo`; the pose keys are then unused) the presets
set `processing.yolo.image_size` 320 / 480 / 640 / 960, and high_accuracy `confidence` 0.35.

The earlier names still work as aliases: `fast` is fast_processing, `balanced` production,
`accurate` high_accuracy. No preset sets anything under `outputs` (`outputs.s3` needs a bucket:
a preset must not create that section).

What each pose model costs on this project's 2-core VM is in the README (Performance: pose
choice); `python -m bench.pose_choice` measures it on another machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    summary: str  # one line: what it is and who it is for (`kvs-analytics config --list`)
    values: dict[str, Any] = field(default_factory=dict)  # nested like the configuration


def _sampling(fps: float) -> dict[str, Any]:
    return {"sampling": {"mode": "fps", "fps": fps}}


PRESETS: dict[str, Preset] = {
    # for trying things on a laptop and eyeballing the outputs: cheap, one worker, every analysed
    # frame as an annotated JPEG
    "development": Preset(
        "lite model, 1 frame/s, an annotated JPEG of every analysed frame, one worker: "
        "for trying things on a laptop and looking at the outputs",
        {"processing": {"pose": {"model": "lite", "num_poses": 2},
                        "yolo": {"image_size": 320},
                        "workers": 1},
         "streams": {"defaults": {**_sampling(1.0), "frames": "all", "annotate": True}},
         "batch": {"workers": 1}}),
    # for the most cameras (or hours of video) per core, when records matter more than pictures
    "fast_processing": Preset(
        "lite model, 1 frame/s, no JPEGs of frames: for the most cameras or hours of video "
        "per core",
        {"processing": {"pose": {"model": "lite"},
                        "yolo": {"image_size": 480}},
         "streams": {"defaults": {**_sampling(1.0), "frames": "none"}},
         "batch": {"workers": 2}}),
    # for a fleet in production: the defaults, named
    "production": Preset(
        "full model, 2 frames/s, JPEGs of frames with persons (the defaults, named): "
        "for a fleet in production",
        {"processing": {"pose": {"model": "full"},
                        "yolo": {"image_size": 640}},
         "streams": {"defaults": {**_sampling(2.0), "frames": "persons"}},
         "batch": {"workers": 2}}),
    # for when missed or wrong persons cost more than CPU: crowds, falls, small figures
    "high_accuracy": Preset(
        "heavy model, 5 frames/s, up to 6 persons, stricter thresholds (0.6): for when a "
        "missed or wrong person costs more than CPU",
        {"processing": {"pose": {"model": "heavy", "num_poses": 6,
                                 "min_detection_confidence": 0.6,
                                 "min_presence_confidence": 0.6,
                                 "min_tracking_confidence": 0.6},
                        "yolo": {"image_size": 960, "confidence": 0.35}},
         "streams": {"defaults": _sampling(5.0)},
         "batch": {"workers": 2}}),
}

# the names of the first presets, kept working
ALIASES: dict[str, str] = {"fast": "fast_processing", "balanced": "production",
                           "accurate": "high_accuracy"}


def choices() -> str:
    """The preset names for messages: the four, then the aliases."""
    aliases = ", ".join(f"{old} = {new}" for old, new in ALIASES.items())
    return f"{', '.join(PRESETS)} (aliases: {aliases})"


def resolve(name: Any) -> str:
    """The preset's canonical name (an alias becomes its preset). Raises ValueError naming the
    preset and the choices."""
    if isinstance(name, str):
        name = ALIASES.get(name, name)
        if name in PRESETS:
            return name
    raise ValueError(f"preset: {name!r} is not a preset; expected one of {choices()}")


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every non-mapping value in `values`, in order."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def with_preset(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with its `preset`'s settings under it (raw's own keys win); unchanged without one.
    Raises ValueError naming the preset and the choices."""
    name = raw.get("preset")
    if name is None:
        return raw
    return overlay(PRESETS[resolve(name)].values, raw)


def overlay(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over`'s keys on top, mapping by mapping (over's values win)."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = (overlay(below, value) if isinstance(below, dict) and isinstance(value, dict)
                       else value)
    return merged
