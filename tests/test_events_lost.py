"""A lost track is not an exit (issue 13, item 5): on synthetic tracks, a person the model misses
keeps their zone presence until the track has been unseen for longer than the timeout (at least
the tracker's `lost_track_seconds`); only then does the presence end, as a zone_exit with reason
"lost", decided at that frame, dated at the last sighting, with the last box in its details.
An exit seen (the person confirmed outside) has no reason."""

from __future__ import annotations

import pytest

from processors.events import DwellRule, EventEngine, Observation, ZoneRule
from processors.settings import Tracking

FPS = 2.0  # the demo's sampling rate
DT = 1.0 / FPS
ZONE = ZoneRule("stage", ((0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)))
BOX = (0.65, 0.35, 0.75, 0.8)  # anchor (0.7, 0.8): inside


def seen(t: float, box=BOX, tid: int = 0) -> Observation:
    return Observation(t, int(t // 4), tid, box)


def feed(engine: EventEngine, times_and_persons) -> list[tuple[float, list]]:
    """[(frame time, events decided at that frame)] for the frames that decided something."""
    out = []
    for t, persons in times_and_persons:
        events = engine.update(t, int(t // 4), persons)
        if events:
            out.append((t, events))
    return out


def test_the_default_timeout_is_the_trackers_lost_track_seconds():
    assert EventEngine("cam", [ZONE]).track_timeout == Tracking().lost_track_seconds == 3.0


def test_missed_for_less_than_the_timeout_is_no_exit_and_no_second_entry():
    engine = EventEngine("cam", [ZONE], track_timeout=3.0)
    frames = [(i * DT, [seen(i * DT)]) for i in range(6)]  # in the zone 0 .. 2.5 s
    frames += [(3.0 + i * DT, []) for i in range(6)]  # missed 3.0 .. 5.5 s (unseen 3.0 s)
    frames += [(6.0 + i * DT, [seen(6.0 + i * DT)]) for i in range(4)]  # the same id again
    decided = feed(engine, frames)
    assert [(t, [e.type for e in events]) for t, events in decided] == [(1.0, ["zone_entry"])]


def test_a_lost_track_exits_only_after_the_timeout_at_the_frame_that_decides_it():
    engine = EventEngine("cam", [ZONE, DwellRule("stay", zone="stage", seconds=2.0)],
                         track_timeout=3.0)
    frames = [(i * DT, [seen(i * DT)]) for i in range(6)]  # last seen at 2.5 s
    frames += [(3.0 + i * DT, []) for i in range(10)]  # nobody detected from 3.0 s
    decided = feed(engine, frames)
    (_, entry), (_, dwell), (t_lost, lost) = decided
    assert [e.type for e in entry] == ["zone_entry"] and [e.type for e in dwell] == ["dwell"]
    assert t_lost == 6.0  # the first frame more than 3.0 s after the last sighting
    assert sorted(e.type for e in lost) == ["dwell", "zone_exit"]
    exit_ = next(e for e in lost if e.type == "zone_exit")
    assert exit_.start_time == exit_.end_time == 2.5  # dated at the last sighting
    assert exit_.start_fragment == 0 and exit_.track_id == 0
    assert exit_.details == {"zone": "stage", "reason": "lost", "unseen_seconds": 3.5,
                             "last_box": list(BOX)}
    closed = next(e for e in lost if e.type == "dwell")
    assert closed.details["reason"] == "lost" and closed.end_time == 2.5
    assert 0 not in engine.tracks


def test_a_person_seen_leaving_exits_without_a_reason_and_is_not_lost_later():
    engine = EventEngine("cam", [ZONE], track_timeout=3.0)
    outside = (0.15, 0.35, 0.25, 0.8)
    frames = [(i * DT, [seen(i * DT)]) for i in range(6)]
    frames += [(3.0 + i * DT, [seen(3.0 + i * DT, outside)]) for i in range(4)]
    frames += [(5.0 + i * DT, []) for i in range(12)]  # then gone for good
    decided = feed(engine, frames)
    types = [(t, [(e.type, e.details.get("reason")) for e in events]) for t, events in decided]
    assert types == [(1.0, [("zone_entry", None)]), (4.0, [("zone_exit", None)])]
    assert decided[1][1][0].start_time == 3.0  # the first frame outside


def test_a_track_lost_outside_every_zone_gives_nothing():
    engine = EventEngine("cam", [ZONE], track_timeout=3.0)
    outside = (0.15, 0.35, 0.25, 0.8)
    frames = [(i * DT, [seen(i * DT, outside)]) for i in range(4)]
    frames += [(2.0 + i * DT, []) for i in range(12)]
    assert feed(engine, frames) == []
    assert engine.tracks == {}


@pytest.mark.parametrize("timeout", [1.0, 5.0])
def test_the_timeout_is_honoured(timeout):
    engine = EventEngine("cam", [ZONE], track_timeout=timeout)
    frames = [(i * DT, [seen(i * DT)]) for i in range(6)]
    frames += [(3.0 + i * DT, []) for i in range(20)]
    (_, _entry), (t_lost, lost) = feed(engine, frames)
    assert t_lost - 2.5 > timeout and t_lost - DT - 2.5 <= timeout
    assert lost[0].details["unseen_seconds"] == pytest.approx(t_lost - 2.5)
