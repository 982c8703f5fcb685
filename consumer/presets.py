"""Named starting points for the analysis settings: `preset: fast | balanced | accurate` at the
top of the configuration (or `KVSA_PRESET`). A preset only fills in keys the configuration
leaves out: anything the file or the environment sets wins, key by key.

What each costs on this project's 2-core VM is in the README (Performance: pose choice);
`python -m bench.pose_choice` measures it on another machine.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # the lite landmark model at one analysed frame a second: the most cameras per core
    "fast": {"processing": {"pose": {"model": "lite"}},
             "streams": {"defaults": {"sampling": {"mode": "fps", "fps": 1}}}},
    # the defaults, named: the full model at two frames a second
    "balanced": {"processing": {"pose": {"model": "full"}},
                 "streams": {"defaults": {"sampling": {"mode": "fps", "fps": 2}}}},
    # the heavy model at five frames a second, more persons a frame
    "accurate": {"processing": {"pose": {"model": "heavy", "num_poses": 6}},
                 "streams": {"defaults": {"sampling": {"mode": "fps", "fps": 5}}}},
}


def with_preset(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with its `preset`'s settings under it (raw's own keys win); unchanged without one.
    Raises ValueError naming the preset and the choices."""
    name = raw.get("preset")
    if name is None:
        return raw
    if name not in PRESETS:
        raise ValueError(f"preset: {name!r} is not a preset; expected one of "
                         f"{', '.join(PRESETS)}")
    return _under(PRESETS[name], raw)


def _under(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = (_under(below, value) if isinstance(below, dict) and isinstance(value, dict)
                       else value)
    return merged
