"""Event rules (issue 5): zones, line crossings, dwell, person count and falls, per camera;
known faces (issue 17).

Pure and dependency-free (stdlib only). One `EventEngine` per camera (stream) holds that camera's
rules and a small state per track; feed it every analysed frame, in producer-time order:

    engine = EventEngine("cam-1", [ZoneRule("door", ((0, 0), (0.5, 0), (0.5, 1), (0, 1))),
                                   DwellRule("loiter", zone="door", seconds=30)])
    events = engine.update(frame_time, fragment_number, observations)

`update` returns the events that started or ended at this frame. Instant events (zone entry/exit,
line crossing, fall, face match) come once, closed (end_time set). An event is decided at the
frame passed to the `update` that returns it (the frame its highlight shows); its start_time may be earlier (the
first frame of a zone's confirmation, the last sighting of a lost track). Lasting events (dwell, count) come twice
with the same `event_id`: once open when they start (end_time None), once closed when they end.
Coordinates are normalised image coordinates (x right, y down, 0..1); times are seconds
(producer time, `FrameSource.producer_time`).
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_EVENT_NAMESPACE = uuid.UUID("0d1f6a52-3c0b-4a8e-b7e4-5c1e9d2a7f30")
Point = tuple[float, float]


@dataclass(frozen=True)
class ZoneRule:
    """Polygon zone. Entry/exit of a track's anchor (bbox bottom-centre) is reported once per
    transition; the anchor must stay on the new side for `confirm_frames` consecutive
    observations (hysteresis against boundary jitter); the event time is the first of those.
    `report=False` keeps the zone only for dwell/count rules."""
    name: str
    polygon: tuple[Point, ...]
    confirm_frames: int = 3
    report: bool = True


@dataclass(frozen=True)
class LineRule:
    """Line a→b. A crossing is the anchor's previous→current step intersecting the segment.
    Direction is on-screen as seen travelling from a to b: "left_to_right" means from the left
    side of a→b to its right (for a vertical line with a at the bottom, b at the top: moving +x).
    "any" reports both."""
    name: str
    a: Point
    b: Point
    direction: str = "any"  # "any" | "left_to_right" | "right_to_left"


@dataclass(frozen=True)
class DwellRule:
    """A track inside `zone` (a ZoneRule name) for at least `seconds`: opens once the time is
    reached (start = entry), closes on exit or when the track is dropped."""
    name: str
    zone: str
    seconds: float


@dataclass(frozen=True)
class CountRule:
    """More than `threshold` people (in `zone`, or in the whole frame when zone is None) for at
    least `min_seconds`: opens then (start = first frame over), closes when the count drops."""
    name: str
    threshold: int
    zone: str | None = None
    min_seconds: float = 0.0


@dataclass(frozen=True)
class FallRule:
    """Fall from pose: torso angle (mid-shoulder→mid-hip vs vertical; MediaPipe landmarks 11/12,
    23/24 or COCO keypoints 5/6, 11/12)
    over `angle_deg`, with a hip-midpoint downward velocity of at least `min_velocity`
    (frame heights/s) within the preceding `velocity_window` s, and the angle staying over the
    threshold for `confirm_seconds`. A slow sit-down (low velocity) or a bend (angle recovers)
    is no fall. `aspect_ratio` (width/height) scales x so angles are true on screen."""
    name: str = "fall"
    angle_deg: float = 60.0
    min_velocity: float = 0.5
    confirm_seconds: float = 1.0
    velocity_window: float = 0.5
    aspect_ratio: float = 1.0
    min_visibility: float = 0.3


# a face's match in a collection: (collection, external_image_id or None, face_id, similarity
# 0-100), as the frame's FaceSearchResponse gives it
FaceMatch = tuple[str, str | None, str, float]


@dataclass(frozen=True)
class FaceMatchRule:
    """A track seen with a face that matched a face collection's face (the frame's face search,
    processing.faces.search): an instant `face_match` event the first time the track is seen
    with each identity, i.e. once per (track, ExternalImageId) while the track lives; a track
    the engine gives up and a new track id start afresh (a new event). An identity is the
    match's ExternalImageId, or its FaceId when the face was indexed without one.

    Only matches in `collection` (when set), of `external_image_id` (when set) and with a
    similarity of at least `min_similarity` (0-100, when set; the search's own
    match_threshold already applies) count. When several faces of one identity match in a
    frame, the event names the most similar; several identities in one frame give one event
    each, most similar first. Details: collection, external_image_id, face_id, similarity;
    confidence is the similarity / 100.

    A match reaches the rule through the tracked person holding the face
    (`Observation.faces`): a face in no person's box, or a person without a track id, cannot
    be tied to a track and is ignored (a track-less event would be raised again every frame)."""
    name: str
    collection: str | None = None
    external_image_id: str | None = None
    min_similarity: float | None = None

    def accepts(self, match: FaceMatch) -> bool:
        collection, external_image_id, _face_id, similarity = match
        return ((self.collection is None or collection == self.collection)
                and (self.external_image_id is None
                     or external_image_id == self.external_image_id)
                and (self.min_similarity is None or similarity >= self.min_similarity))


Rule = ZoneRule | LineRule | DwellRule | CountRule | FallRule | FaceMatchRule


@dataclass(frozen=True)
class Observation:
    """One tracked person in a frame. `anchor` is the bbox bottom-centre (the feet). `faces`:
    the matches of the face(s) the person holds (plain data; FaceMatchRule)."""
    time: float
    fragment_number: int
    track_id: int | None
    bbox: tuple[float, float, float, float]  # left, top, right, bottom; normalised
    landmarks: tuple = ()  # 33 MediaPipe landmarks (objects with .x/.y or (x, y) tuples) or ()
    faces: tuple[FaceMatch, ...] = ()

    @property
    def anchor(self) -> Point:
        return ((self.bbox[0] + self.bbox[2]) / 2.0, self.bbox[3])

    @classmethod
    def from_person(cls, person: Any, time: float, fragment_number: int,
                    faces: Sequence[FaceMatch] = ()) -> Observation:
        """From a `processors.base.Person` (and the matches of its face, if any)."""
        return cls(time, fragment_number, person.track_id, tuple(person.bbox),
                   tuple(person.landmarks), tuple(faces))


@dataclass
class Event:
    type: str  # zone_entry | zone_exit | line_crossing | dwell | count | fall | face_match
    rule: str
    stream: str
    track_id: int | None
    start_time: float
    end_time: float | None
    start_fragment: int
    end_fragment: int | None
    confidence: float = 1.0
    details: dict = field(default_factory=dict)
    # what else tells two events of one rule, track and frame apart (a face_match's identity);
    # part of the id when set
    subject: str = ""

    @property
    def event_id(self) -> str:
        """Deterministic: the same event gets the same id when opened, closed or replayed."""
        key = f"{self.stream}|{self.type}|{self.rule}|{self.track_id}|{self.start_fragment}|" \
              f"{self.start_time:.6f}" + (f"|{self.subject}" if self.subject else "")
        return str(uuid.uuid5(_EVENT_NAMESPACE, key))

    def as_record(self) -> dict:
        return {"event_id": self.event_id, "type": self.type, "rule": self.rule,
                "stream": self.stream, "track_id": self.track_id,
                "start_time": self.start_time, "end_time": self.end_time,
                "start_fragment": self.start_fragment, "end_fragment": self.end_fragment,
                "confidence": round(float(self.confidence), 4), "details": dict(self.details)}


def point_in_polygon(p: Point, polygon: Sequence[Point]) -> bool:
    """Ray casting (even-odd rule)."""
    x, y = p
    inside = False
    n = len(polygon)
    for i in range(n):
        (x1, y1), (x2, y2) = polygon[i], polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _cross(a: Point, b: Point, p: Point) -> float:
    """> 0: p right of a→b on screen (y down); < 0: left."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def segment_crossing(p: Point, q: Point, a: Point, b: Point) -> str | None:
    """Side change of the step p→q across segment a→b: "left_to_right", "right_to_left", None."""
    s_p, s_q = _cross(a, b, p), _cross(a, b, q)
    if s_p == 0 or s_q == 0 or (s_p > 0) == (s_q > 0):
        return None
    t_a, t_b = _cross(p, q, a), _cross(p, q, b)
    if (t_a > 0) == (t_b > 0) and t_a != 0 and t_b != 0:
        return None
    return "left_to_right" if s_p < 0 else "right_to_left"


# shoulders and hips (left, right, left, right) by landmark count: MediaPipe 33, COCO 17
_TORSO = {33: (11, 12, 23, 24), 17: (5, 6, 11, 12)}


def torso_angle(landmarks: Sequence, aspect_ratio: float = 1.0,
                min_visibility: float = 0.0) -> tuple[float, float] | None:
    """(angle from vertical in degrees, hip-midpoint y) or None without usable landmarks.
    Landmarks in MediaPipe's 33-point order or COCO's 17 keypoints (YOLO pose)."""
    torso = _TORSO.get(len(landmarks))
    if torso is None:
        return None
    pts = []
    for i in torso:
        lm = landmarks[i]
        if hasattr(lm, "x"):
            if getattr(lm, "visibility", 1.0) < min_visibility:
                return None
            pts.append((lm.x, lm.y))
        else:
            pts.append((lm[0], lm[1]))
    sx, sy = (pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2
    hx, hy = (pts[2][0] + pts[3][0]) / 2, (pts[2][1] + pts[3][1]) / 2
    dx, dy = (hx - sx) * aspect_ratio, hy - sy
    if dx == 0 and dy == 0:
        return None
    return math.degrees(math.atan2(abs(dx), dy)), hy  # 0 upright, 90 lying, 180 upside down


class _Track:
    __slots__ = ("anchor", "bbox", "dwell", "faces", "fall", "last_fragment", "last_time",
                 "zones")

    def __init__(self) -> None:
        self.last_time = 0.0
        self.last_fragment = 0
        self.anchor: Point | None = None
        self.bbox: tuple[float, float, float, float] | None = None  # at the last sighting
        # zone name -> [inside, pending_count, pending_time, pending_fragment, entry_time, entry_frag]
        self.zones: dict[str, list] = {}
        self.dwell: dict[str, Event] = {}  # open dwell events by rule name
        # fall rule name -> {"hist": deque[(t, y)], "fast": t or None, "v": peak, "cand": (t, frag)
        #                    or None, "fired": bool}
        self.fall: dict[str, dict] = {}
        self.faces: dict[str, set[str]] = {}  # face match rule name -> identities raised


class EventEngine:
    """Evaluates one camera's rules on its tracked observations; see the module docstring.

    A track that is not seen keeps its zone presence (no exit: a person the model misses for a
    moment has not left) until it has been unseen for more than `track_timeout` s; give it at
    least the tracker's `lost_track_seconds`, for until then the tracker may bring the same id
    back. Then it is dropped: its presence in each zone ends with a zone_exit whose details say
    reason "lost", `unseen_seconds` (from its last sighting to the deciding frame) and
    `last_box` (its box when last seen); start and end times are those of its last sighting,
    and its open dwell events close there (reason "lost"). An exit seen (the anchor confirmed
    outside the zone) has no reason."""

    def __init__(self, stream_name: str, rules: Sequence[Rule], track_timeout: float = 3.0):
        self.stream = stream_name
        self.rules = tuple(rules)
        self.track_timeout = track_timeout
        self.zones = {r.name: r for r in self.rules if isinstance(r, ZoneRule)}
        for r in self.rules:
            if isinstance(r, (DwellRule, CountRule)) and r.zone is not None \
                    and r.zone not in self.zones:
                raise ValueError(f"rule {r.name!r}: no ZoneRule named {r.zone!r}")
            if isinstance(r, LineRule) and r.direction not in ("any", "left_to_right",
                                                                "right_to_left"):
                raise ValueError(f"rule {r.name!r}: bad direction {r.direction!r}")
        self.tracks: dict[int, _Track] = {}
        self._counts: dict[str, dict] = {}  # count rule -> {"since": (t, frag)|None, "open": Event|None}

    def _event(self, type_, rule, track, t0, f0, t1, f1, conf=1.0, **details) -> Event:
        return Event(type_, rule, self.stream, track, t0, t1, f0, f1, conf, details)

    def update(self, time: float, fragment_number: int,
               observations: Sequence[Observation]) -> list[Event]:
        out: list[Event] = []
        for obs in observations:
            if obs.track_id is None:
                continue
            tr = self.tracks.get(obs.track_id)
            if tr is None:
                tr = self.tracks[obs.track_id] = _Track()
            self._update_track(obs.track_id, tr, obs, time, fragment_number, out)
            tr.last_time, tr.last_fragment, tr.anchor = time, fragment_number, obs.anchor
            tr.bbox = obs.bbox
        for tid in [t for t, tr in self.tracks.items() if time - tr.last_time > self.track_timeout]:
            self._drop(tid, self.tracks.pop(tid), time, out)
        for r in self.rules:
            if isinstance(r, CountRule):
                self._update_count(r, time, fragment_number, observations, out)
        return out

    def _update_track(self, tid, tr, obs, t, frag, out):
        anchor = obs.anchor
        for r in self.rules:
            if isinstance(r, ZoneRule):
                self._update_zone(r, tid, tr, point_in_polygon(anchor, r.polygon), t, frag, out)
            elif isinstance(r, LineRule) and tr.anchor is not None:
                d = segment_crossing(tr.anchor, anchor, r.a, r.b)
                if d is not None and r.direction in ("any", d):
                    out.append(self._event("line_crossing", r.name, tid, t, frag, t, frag,
                                           direction=d))
            elif isinstance(r, DwellRule):
                z = tr.zones.get(r.zone)
                if z and z[0] and r.name not in tr.dwell and t - z[4] >= r.seconds:
                    ev = self._event("dwell", r.name, tid, z[4], z[5], None, None, zone=r.zone)
                    tr.dwell[r.name] = ev
                    out.append(ev)
            elif isinstance(r, FallRule):
                self._update_fall(r, tid, tr, obs, t, frag, out)
            elif isinstance(r, FaceMatchRule) and obs.faces:
                self._update_faces(r, tid, tr, obs.faces, t, frag, out)

    def _update_zone(self, r, tid, tr, inside, t, frag, out):
        z = tr.zones.setdefault(r.name, [False, 0, t, frag, t, frag])
        if inside == z[0]:
            z[1] = 0
            return
        if z[1] == 0:
            z[2], z[3] = t, frag
        z[1] += 1
        if z[1] < r.confirm_frames:
            return
        z[0], z[1] = inside, 0
        if inside:
            z[4], z[5] = z[2], z[3]
        else:
            self._close_dwell(tr, r.name, z[2], z[3], out)
        if r.report:
            out.append(self._event("zone_entry" if inside else "zone_exit", r.name, tid,
                                   z[2], z[3], z[2], z[3], zone=r.name))

    def _close_dwell(self, tr, zone, t, frag, out, **details):
        for name, ev in list(tr.dwell.items()):
            if ev.details.get("zone") == zone:
                del tr.dwell[name]
                out.append(self._event("dwell", name, ev.track_id, ev.start_time,
                                       ev.start_fragment, t, frag, ev.confidence, zone=zone,
                                       seconds=round(t - ev.start_time, 3), **details))

    def _drop(self, tid, tr, time, out):
        for name, z in tr.zones.items():
            if z[0]:
                z[0] = False
                self._close_dwell(tr, name, tr.last_time, tr.last_fragment, out, reason="lost")
                if self.zones[name].report:
                    out.append(self._event(
                        "zone_exit", name, tid, tr.last_time, tr.last_fragment, tr.last_time,
                        tr.last_fragment, zone=name, reason="lost",
                        unseen_seconds=round(time - tr.last_time, 3),
                        last_box=[round(v, 4) for v in tr.bbox] if tr.bbox else None))

    def _update_fall(self, r, tid, tr, obs, t, frag, out):
        s = tr.fall.setdefault(r.name, {"hist": deque(), "fast": None, "v": 0.0,
                                        "cand": None, "fired": False})
        pose = torso_angle(obs.landmarks, r.aspect_ratio, r.min_visibility)
        if pose is None:
            return
        angle, hip_y = pose
        hist = s["hist"]
        hist.append((t, hip_y))
        while hist and t - hist[0][0] > r.velocity_window:
            hist.popleft()
        t0, y0 = hist[0]
        v = (hip_y - y0) / (t - t0) if t - t0 >= r.velocity_window / 3 else 0.0
        if v >= r.min_velocity:
            s["fast"], s["v"] = t, max(v, s["v"] if s["cand"] else 0.0)
        if angle <= r.angle_deg:
            s["cand"], s["fired"] = None, False  # recovered (bend, or got up)
            return
        if s["fired"]:
            return
        if s["cand"] is None:
            if s["fast"] is None or t - s["fast"] > r.velocity_window:
                return
            s["cand"] = (t, frag)
        c_t, c_f = s["cand"]
        if t - c_t >= r.confirm_seconds:
            s["fired"] = True
            conf = min(1.0, 0.5 + 0.25 * min(1.0, s["v"] / r.min_velocity - 1.0)
                       + 0.25 * min(1.0, (angle - r.angle_deg) / max(1.0, 90.0 - r.angle_deg)))
            out.append(self._event("fall", r.name, tid, c_t, c_f, t, frag, conf,
                                   angle_deg=round(angle, 1), velocity=round(s["v"], 3)))

    def _update_faces(self, r, tid, tr, matches, t, frag, out):
        raised = tr.faces.setdefault(r.name, set())
        best: dict[str, FaceMatch] = {}
        for match in matches:
            identity = match[1] if match[1] is not None else match[2]
            if identity not in raised and r.accepts(match) \
                    and (identity not in best or match[3] > best[identity][3]):
                best[identity] = match
        for identity, (collection, external_id, face_id, similarity) in sorted(
                best.items(), key=lambda item: (-item[1][3], item[0])):
            raised.add(identity)
            out.append(Event("face_match", r.name, self.stream, tid, t, t, frag, frag,
                             min(1.0, max(0.0, similarity / 100.0)),
                             {"collection": collection, "external_image_id": external_id,
                              "face_id": face_id, "similarity": round(float(similarity), 3)},
                             subject=identity))

    def _update_count(self, r, t, frag, observations, out):
        if r.zone is None:
            n = len(observations)
        else:
            n = sum(1 for tr in self.tracks.values()
                    if r.zone in tr.zones and tr.zones[r.zone][0])
        s = self._counts.setdefault(r.name, {"since": None, "open": None, "peak": 0})
        if n > r.threshold:
            if s["since"] is None:
                s["since"], s["peak"] = (t, frag), n
            s["peak"] = max(s["peak"], n)
            if s["open"] is None and t - s["since"][0] >= r.min_seconds:
                s["open"] = self._event("count", r.name, None, s["since"][0], s["since"][1],
                                        None, None, zone=r.zone, threshold=r.threshold, count=n)
                out.append(s["open"])
            return
        ev = s["open"]
        if ev is not None:
            out.append(self._event("count", r.name, None, ev.start_time, ev.start_fragment, t,
                                   frag, zone=r.zone, threshold=r.threshold, peak=s["peak"]))
        s["since"], s["open"], s["peak"] = None, None, 0
