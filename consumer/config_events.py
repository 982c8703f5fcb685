"""The `events` section of the configuration: per-camera rules (zone, line, dwell, count, fall,
face_match), typed and validated like the rest (consumer.config), turned into processors.events
rules. That face_match rules have faces searched (processing.faces) is checked where the whole
configuration is (consumer.config.Config)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from processors.settings import Model

Polygon = Annotated[list[tuple[float, float]], Field(min_length=3)]


class ZoneRuleConfig(Model):
    """A polygon in normalised image coordinates (x right, y down, 0..1); a track's feet (bbox
    bottom-centre) entering or leaving it is an event."""
    type: Literal["zone"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    polygon: Polygon
    confirm_frames: int = Field(3, ge=1, description="frames on the new side before it counts")
    report: bool = Field(True, description="false: the zone only serves dwell/count rules")


class LineRuleConfig(Model):
    type: Literal["line"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    a: tuple[float, float]
    b: tuple[float, float]
    direction: Literal["any", "left_to_right", "right_to_left"] = "any"


class DwellRuleConfig(Model):
    type: Literal["dwell"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    zone: str
    seconds: float = Field(gt=0)


class CountRuleConfig(Model):
    type: Literal["count"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    threshold: int = Field(ge=0, description="more people than this")
    zone: str | None = None
    min_seconds: float = Field(0.0, ge=0)


class FallRuleConfig(Model):
    type: Literal["fall"]
    name: str = Field("fall", pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    angle_deg: float = Field(60.0, gt=0, lt=180, description="torso angle from vertical")
    min_velocity: float = Field(0.5, gt=0, description="hip drop, frame heights per second")
    confirm_seconds: float = Field(1.0, ge=0)
    velocity_window: float = Field(0.5, gt=0)
    min_visibility: float = Field(0.3, ge=0, le=1)


class FaceMatchRuleConfig(Model):
    """A track seen with a face matched in a face collection (processing.faces.search): one
    event per track and identity (processors.events.FaceMatchRule)."""
    type: Literal["face_match"]
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    collection: str | None = Field(None, description="only matches in this collection")
    external_image_id: str | None = Field(None, description="only this identity")
    min_similarity: float | None = Field(None, ge=0, le=100, description=(
        "only matches at least this similar (over processing.faces.search.match_threshold)"))


RuleConfig = Annotated[ZoneRuleConfig | LineRuleConfig | DwellRuleConfig | CountRuleConfig
                       | FallRuleConfig | FaceMatchRuleConfig, Field(discriminator="type")]


class CameraRules(Model):
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _zones_exist(self) -> CameraRules:
        names = [rule.name for rule in self.rules]
        if len(names) != len(set(names)):
            raise ValueError(f"rule names must be unique, got {names}")
        zones = {rule.name for rule in self.rules if rule.type == "zone"}
        for rule in self.rules:
            zone = getattr(rule, "zone", None)
            if rule.type in ("dwell", "count") and zone is not None and zone not in zones:
                raise ValueError(f"rule {rule.name!r} names zone {zone!r}, which is not a "
                                 f"zone rule of this camera (zones: {sorted(zones)})")
        return self


class Events(Model):
    """Per-camera event rules, evaluated per track; each event gives a record on the data
    stream, a highlight JPEG and a clip in S3 under a per-event prefix."""

    # stream name (or shell-style pattern, e.g. "lobby-*") -> its rules; an exact name wins
    cameras: dict[str, CameraRules] = Field(default_factory=dict)
    # an unseen track is given up (a zone exit with reason "lost") after this or
    # processing.tracking.lost_track_seconds, whichever is longer
    track_timeout_seconds: float = Field(2.0, gt=0)
    highlights: bool = True
    clips: bool = True
    pre_roll_seconds: float = Field(5.0, ge=0, le=60)
    post_roll_seconds: float = Field(3.0, ge=0, le=60)
    url_expiry_seconds: int = Field(3600, ge=1, le=604800, description="presigned URLs")

    def face_match_rules(self) -> dict[str, list[FaceMatchRuleConfig]]:
        """Camera (name or pattern) -> its face_match rules, for the cameras that have some."""
        out = {pattern: [rule for rule in camera.rules if rule.type == "face_match"]
               for pattern, camera in self.cameras.items()}
        return {pattern: rules for pattern, rules in out.items() if rules}

    def rules_for(self, stream_name: str) -> list:
        """The camera's rules as processors.events rules (exact name, else first pattern)."""
        from fnmatch import fnmatchcase

        from processors import events
        camera = self.cameras.get(stream_name) or next(
            (c for pattern, c in self.cameras.items() if fnmatchcase(stream_name, pattern)), None)
        if camera is None:
            return []
        kinds = {"zone": events.ZoneRule, "line": events.LineRule, "dwell": events.DwellRule,
                 "count": events.CountRule, "fall": events.FallRule,
                 "face_match": events.FaceMatchRule}
        out = []
        for rule in camera.rules:
            fields = rule.model_dump(exclude={"type"})
            if rule.type == "zone":
                fields["polygon"] = tuple(tuple(p) for p in fields["polygon"])
            out.append(kinds[rule.type](**fields))
        return out
