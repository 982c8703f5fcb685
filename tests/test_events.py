"""Event rules (processors/events.py) on synthetic tracks."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from processors.base import Landmark, Person
from processors.events import (
    CountRule,
    DwellRule,
    EventEngine,
    FaceMatchRule,
    FallRule,
    LineRule,
    Observation,
    ZoneRule,
    point_in_polygon,
    segment_crossing,
    torso_angle,
)

FPS = 30.0
DT = 1.0 / FPS
ZONE = ZoneRule("door", ((0.4, 0.0), (0.6, 0.0), (0.6, 1.0), (0.4, 1.0)))


def obs(t, tid, x, y=0.9, landmarks=()):
    return Observation(t, int(t // 2), tid, (x - 0.05, y - 0.5, x + 0.05, y), landmarks)


def run(engine, frames):
    """frames: iterable of (t, [Observation]); returns all events."""
    out = []
    for t, observations in frames:
        out += engine.update(t, int(t // 2), observations)
    return out


def walk(tid, x0, x1, seconds, t0=0.0):
    n = round(seconds * FPS)
    return [(t0 + i * DT, [obs(t0 + i * DT, tid, x0 + (x1 - x0) * i / (n - 1))])
            for i in range(n)]


def test_geometry_helpers():
    square = ((0, 0), (1, 0), (1, 1), (0, 1))
    assert point_in_polygon((0.5, 0.5), square) and not point_in_polygon((1.5, 0.5), square)
    a, b = (0.5, 1.0), (0.5, 0.0)  # vertical, drawn bottom to top
    assert segment_crossing((0.4, 0.5), (0.6, 0.5), a, b) == "left_to_right"
    assert segment_crossing((0.6, 0.5), (0.4, 0.5), a, b) == "right_to_left"
    assert segment_crossing((0.4, 1.5), (0.6, 1.5), a, b) is None  # beyond the segment's end
    assert segment_crossing((0.4, 0.5), (0.45, 0.5), a, b) is None


def test_zone_entry_then_exit_once_each():
    events = run(EventEngine("cam", [ZONE]), walk(1, 0.1, 0.9, 4.0))
    assert [e.type for e in events] == ["zone_entry", "zone_exit"]
    entry, exit_ = events
    assert entry.track_id == exit_.track_id == 1
    assert entry.start_time == entry.end_time < exit_.start_time
    # entry time is the first frame inside, not the confirming one
    x_at = 0.1 + 0.8 * (entry.start_time / DT) / (4.0 * FPS - 1)
    assert 0.4 <= x_at < 0.41
    rec = json.loads(json.dumps(exit_.as_record()))
    assert rec["type"] == "zone_exit" and rec["stream"] == "cam" and rec["rule"] == "door"
    assert rec["end_fragment"] == exit_.end_fragment and rec["event_id"]


def test_zone_jitter_on_boundary_gives_no_events():
    engine = EventEngine("cam", [ZONE])
    frames = [(i * DT, [obs(i * DT, 1, 0.39 if i % 2 else 0.41)]) for i in range(90)]
    assert run(engine, frames) == []
    # two frames in, one out, repeatedly: still below confirm_frames=3
    frames = [(3 + i * DT, [obs(3 + i * DT, 1, 0.41 if i % 3 else 0.39)]) for i in range(90)]
    assert run(engine, frames) == []


def test_line_crossing_both_directions_and_filter():
    rules = [LineRule("any", (0.5, 1.0), (0.5, 0.0)),
             LineRule("ltr", (0.5, 1.0), (0.5, 0.0), direction="left_to_right")]
    a, b = walk(1, 0.2, 0.8, 2.0), walk(2, 0.8, 0.2, 2.0)
    frames = [(t, oa + ob) for (t, oa), (_, ob) in zip(a, b)]
    events = run(EventEngine("cam", rules), frames)
    got = sorted((e.rule, e.track_id, e.details["direction"]) for e in events)
    assert got == [("any", 1, "left_to_right"), ("any", 2, "right_to_left"),
                   ("ltr", 1, "left_to_right")]
    assert all(e.type == "line_crossing" and e.start_time == e.end_time for e in events)
    with pytest.raises(ValueError):
        EventEngine("cam", [LineRule("x", (0, 0), (1, 1), direction="up")])


def test_dwell_over_threshold_fires_once_with_start_and_end():
    engine = EventEngine("cam", [ZONE, DwellRule("loiter", zone="door", seconds=2.0)])
    frames = walk(1, 0.2, 0.5, 1.0) + walk(1, 0.5, 0.5, 3.0, t0=1.0) + walk(1, 0.5, 0.9, 1.0, 4.0)
    events = [e for e in run(engine, frames) if e.type == "dwell"]
    assert len(events) == 2
    opened, closed = events
    assert opened.end_time is None and opened.end_fragment is None
    assert closed.end_time is not None and closed.event_id == opened.event_id
    assert closed.start_time == opened.start_time
    assert closed.end_time - closed.start_time > 2.0
    assert closed.details["seconds"] == pytest.approx(closed.end_time - closed.start_time, abs=1e-3)
    # a short visit: no dwell
    engine = EventEngine("cam", [ZONE, DwellRule("loiter", zone="door", seconds=2.0)])
    assert [e for e in run(engine, walk(1, 0.2, 0.8, 2.0)) if e.type == "dwell"] == []
    with pytest.raises(ValueError):
        EventEngine("cam", [DwellRule("loiter", zone="nowhere", seconds=1.0)])


def test_count_over_threshold():
    engine = EventEngine("cam", [CountRule("crowd", threshold=2, min_seconds=1.0)])
    frames = [(i * DT, [obs(i * DT, k, 0.2 + 0.2 * k) for k in range(3 if i < 75 else 2)])
              for i in range(120)]
    events = run(engine, frames)
    assert len(events) == 2
    opened, closed = events
    assert opened.type == "count" and opened.track_id is None and opened.end_time is None
    assert opened.start_time == 0.0 and opened.details["count"] == 3
    assert closed.end_time == pytest.approx(75 * DT) and closed.details["peak"] == 3
    assert closed.event_id == opened.event_id
    # briefly over (0.5 s < min_seconds): nothing
    engine = EventEngine("cam", [CountRule("crowd", threshold=2, min_seconds=1.0)])
    frames = [(i * DT, [obs(i * DT, k, 0.2) for k in range(3 if i < 15 else 1)])
              for i in range(60)]
    assert run(engine, frames) == []


def test_count_in_zone():
    rules = [ZoneRule("door", ZONE.polygon, report=False),
             CountRule("queue", threshold=1, zone="door")]
    a, b = walk(1, 0.5, 0.5, 2.0), walk(2, 0.1, 0.9, 2.0)
    events = run(EventEngine("cam", rules), [(t, oa + ob) for (t, oa), (_, ob) in zip(a, b)])
    assert [e.type for e in events] == ["count", "count"]  # only while track 2 is in the zone
    assert events[0].end_time is None and events[1].end_time is not None


# --- falls -------------------------------------------------------------------------------

def pose(hip_y, angle_deg, x=0.5, length=0.25):
    """33 landmarks with the torso at `angle_deg` from vertical, hips at (x, hip_y)."""
    a = math.radians(angle_deg)
    sx, sy = x - length * math.sin(a), hip_y - length * math.cos(a)
    lms = [Landmark(x, hip_y, 0.0, 0.9, 0.9)] * 33
    for i in (11, 12):
        lms[i] = Landmark(sx, sy, 0.0, 0.9, 0.9)
    return tuple(lms)


def pose_track(keys, t_end):
    """keys: [(t, hip_y, angle)] piecewise linear; a frame every DT up to t_end."""
    frames, i = [], 0
    while i * DT <= t_end + 1e-9:
        t = i * DT
        for (t0, y0, a0), (t1, y1, a1) in itertools.pairwise(keys):
            if t0 <= t <= t1:
                f = (t - t0) / (t1 - t0)
                y, a = y0 + f * (y1 - y0), a0 + f * (a1 - a0)
                break
        else:
            _, y, a = keys[-1]
        frames.append((t, [Observation(t, int(t // 2), 7, (0.4, 0.2, 0.6, 0.95), pose(y, a))]))
        i += 1
    return frames


def falls(keys, t_end, **rule):
    return [e for e in run(EventEngine("cam", [FallRule(**rule)]), pose_track(keys, t_end))
            if e.type == "fall"]


def test_torso_angle():
    assert torso_angle(pose(0.5, 0))[0] == pytest.approx(0, abs=1e-6)
    assert torso_angle(pose(0.5, 90))[0] == pytest.approx(90, abs=1e-6)
    assert torso_angle(pose(0.5, 45))[0] == pytest.approx(45, abs=1e-6)
    assert torso_angle(()) is None


def test_fall_from_standing_fires_once():
    events = falls([(0, 0.55, 0), (1.0, 0.55, 0), (1.4, 0.85, 85), (5.0, 0.85, 85)], 5.0)
    assert len(events) == 1
    fall = events[0]
    assert 1.0 < fall.start_time < 1.5 and fall.end_time - fall.start_time >= 1.0
    assert fall.track_id == 7 and 0.5 <= fall.confidence <= 1.0
    assert fall.details["velocity"] >= 0.5
    json.dumps(fall.as_record())


def test_slow_sit_down_is_no_fall():
    # hips drop 0.25 over 2 s while leaning forward past the angle threshold: low velocity
    slow = [(0, 0.55, 0), (1.0, 0.55, 0), (3.0, 0.80, 70), (6.0, 0.80, 70)]
    assert falls(slow, 6.0) == []
    assert len(falls(slow, 6.0, min_velocity=0.1)) == 1  # the velocity gate is what holds
    # upright sit-down
    assert falls([(0, 0.55, 0), (1.0, 0.55, 0), (2.5, 0.80, 15), (5.0, 0.80, 15)], 5.0) == []


def test_bend_over_and_stand_up_is_no_fall():
    # fast drop and a steep angle, but the torso comes back up before confirm_seconds
    keys = [(0, 0.55, 0), (1.0, 0.55, 0), (1.3, 0.80, 85), (1.8, 0.80, 85), (2.1, 0.55, 0),
            (4.0, 0.55, 0)]
    assert falls(keys, 4.0) == []
    assert len(falls(keys, 4.0, confirm_seconds=0.3)) == 1  # the confirm window is what holds


def test_track_timeout_ends_presence_and_dwell():
    engine = EventEngine("cam", [ZONE, DwellRule("loiter", zone="door", seconds=1.0)],
                         track_timeout=2.0)
    events = run(engine, walk(1, 0.5, 0.5, 2.0))
    assert [e.type for e in events] == ["zone_entry", "dwell"]
    last_seen = 2.0 - 1 / FPS
    events = run(engine, [(2.0 + i * DT, []) for i in range(90)])
    assert sorted(e.type for e in events) == ["dwell", "zone_exit"]
    for e in events:
        assert e.end_time == pytest.approx(last_seen) and e.details["reason"] == "lost"
    assert 1 not in engine.tracks


def test_observation_from_person():
    p = Person(bbox=(0.1, 0.2, 0.3, 0.8), confidence=0.9, track_id=4)
    o = Observation.from_person(p, 12.5, 99)
    assert o.track_id == 4 and o.anchor == pytest.approx((0.2, 0.8)) and o.fragment_number == 99


def test_fall_from_coco_keypoints():
    """YOLO pose gives COCO's 17 keypoints: shoulders 5/6, hips 11/12."""
    def coco(hip_y, angle_deg, x=0.5, length=0.25):
        mediapipe = pose(hip_y, angle_deg, x, length)
        points = [mediapipe[0]] * 17
        points[5], points[6], points[11], points[12] = (mediapipe[11], mediapipe[12],
                                                        mediapipe[23], mediapipe[24])
        return tuple(points)
    assert torso_angle(coco(0.5, 80))[0] == pytest.approx(80, abs=1e-6)
    assert torso_angle(pose(0.5, 80)[:20]) is None  # neither layout: no angle
    frames = [(t, [Observation(t, 0, 3, (0.4, 0.2, 0.6, 0.95), coco(y, a))])
              for t, (_, y, a) in ((i * DT, key) for i, key in enumerate(
                  [(0, 0.55, 0)] * 30 + [(0, 0.55 + 0.3 * k / 12, 85 * k / 12)
                                         for k in range(1, 13)] + [(0, 0.85, 85)] * 60))]
    assert [e.type for e in run(EventEngine("cam", [FallRule()]), frames)] == ["fall"]


# --- face matches ------------------------------------------------------------------------

SPEAKER = ("staff", "speaker", "face-1", 93.5)


def seen(t, tid, *matches):
    """Track `tid` at `t` holding a face with these matches."""
    return Observation(t, int(t // 2), tid, (0.4, 0.2, 0.6, 0.9), faces=matches)


def face_events(rules, frames):
    return [e for e in run(EventEngine("cam", rules, track_timeout=2.0), frames)
            if e.type == "face_match"]


def test_face_match_raises_once_per_track_and_identity():
    alice = ("staff", "alice", "face-9", 88.0)
    frames = [(i * DT, [seen(i * DT, 1, SPEAKER)]) for i in range(30)]
    frames += [(1 + i * DT, [seen(1 + i * DT, 1, SPEAKER, alice),
                             seen(1 + i * DT, 2, ("staff", "speaker", "face-2", 85.0))])
               for i in range(30)]
    events = face_events([FaceMatchRule("known")], frames)
    got = [(e.track_id, e.details["external_image_id"], e.start_time) for e in events]
    assert got == [(1, "speaker", 0.0), (1, "alice", 1.0), (2, "speaker", 1.0)]
    first = events[0]
    assert first.rule == "known" and first.start_time == first.end_time  # instant
    assert first.start_fragment == first.end_fragment == 0
    assert first.details == {"collection": "staff", "external_image_id": "speaker",
                             "face_id": "face-1", "similarity": 93.5}
    assert first.confidence == pytest.approx(0.935)
    assert len({e.event_id for e in events}) == 3
    json.dumps(first.as_record())


def test_face_match_two_identities_in_one_frame_have_their_own_ids():
    alice = ("staff", "alice", "face-9", 97.0)
    events = face_events([FaceMatchRule("known")], [(0.0, [seen(0.0, 1, SPEAKER, alice)])])
    assert [e.details["external_image_id"] for e in events] == ["alice", "speaker"]  # best first
    assert events[0].event_id != events[1].event_id
    # the id is deterministic: a replay gives the same ones
    again = face_events([FaceMatchRule("known")], [(0.0, [seen(0.0, 1, SPEAKER, alice)])])
    assert [e.event_id for e in again] == [e.event_id for e in events]


def test_face_match_names_the_most_similar_face_of_an_identity():
    other = ("staff", "speaker", "face-7", 99.0)
    [event] = face_events([FaceMatchRule("known")], [(0.0, [seen(0.0, 1, SPEAKER, other)])])
    assert event.details["face_id"] == "face-7" and event.details["similarity"] == 99.0


def test_face_match_filters():
    vip = ("vip", "speaker", "face-3", 95.0)
    weak = ("staff", "alice", "face-9", 82.0)
    frames = [(i * DT, [seen(i * DT, 1, SPEAKER, vip, weak)]) for i in range(10)]

    def raised(**rule):
        return sorted((e.details["collection"], e.details["external_image_id"])
                      for e in face_events([FaceMatchRule("r", **rule)], frames))
    # the speaker matched in two collections: one event, naming the more similar
    assert raised() == [("staff", "alice"), ("vip", "speaker")]
    assert raised(collection="vip") == [("vip", "speaker")]
    assert raised(external_image_id="alice") == [("staff", "alice")]
    assert raised(min_similarity=90) == [("vip", "speaker")]
    assert raised(collection="staff", min_similarity=90) == [("staff", "speaker")]
    assert raised(external_image_id="bob") == []
    assert raised(min_similarity=99.5) == []


def test_face_match_a_new_track_raises_again():
    frames = [(i * DT, [seen(i * DT, 1, SPEAKER)]) for i in range(15)]
    frames += [(0.5 + i * DT, []) for i in range(90)]  # unseen 3 s > track_timeout: dropped
    frames += [(3.5 + i * DT, [seen(3.5 + i * DT, 1, SPEAKER)]) for i in range(15)]  # same id
    frames += [(4.0 + i * DT, [seen(4.0 + i * DT, 5, SPEAKER)]) for i in range(15)]
    events = face_events([FaceMatchRule("known", external_image_id="speaker")], frames)
    assert [(e.track_id, e.start_time) for e in events] == [(1, 0.0), (1, 3.5), (5, 4.0)]
    # seen again within the timeout: still the same track, no new event
    frames = [(i * DT, [seen(i * DT, 1, SPEAKER)] if i % 20 < 5 else []) for i in range(120)]
    assert len(face_events([FaceMatchRule("known")], frames)) == 1


def test_face_match_needs_a_match_and_a_track():
    frames = [(i * DT, [seen(i * DT, 1), seen(i * DT, None, SPEAKER),
                        obs(i * DT, 2, 0.5)]) for i in range(30)]
    assert face_events([FaceMatchRule("known")], frames) == []
    # beside other rules: each raises its own
    events = run(EventEngine("cam", [ZONE, FaceMatchRule("known")]),
                 [(i * DT, [seen(i * DT, 1, SPEAKER)]) for i in range(30)])
    assert sorted(e.type for e in events) == ["face_match", "zone_entry"]


def test_face_match_identity_without_external_id_is_its_face():
    a, b = ("staff", None, "face-a", 90.0), ("staff", None, "face-b", 91.0)
    events = face_events([FaceMatchRule("known")],
                         [(0.0, [seen(0.0, 1, a)]), (DT, [seen(DT, 1, a, b)])])
    assert [(e.details["face_id"], e.details["external_image_id"]) for e in events] == [
        ("face-a", None), ("face-b", None)]


def test_observation_from_person_with_faces():
    p = Person(bbox=(0.1, 0.2, 0.3, 0.8), confidence=0.9, track_id=4)
    o = Observation.from_person(p, 12.5, 99, [SPEAKER])
    assert o.faces == (SPEAKER,) and Observation.from_person(p, 12.5, 99).faces == ()
