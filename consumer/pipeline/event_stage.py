"""One stream's events: its camera's rules run on its tracked persons; each event raised becomes
a record on the data stream, a highlight JPEG and a clip in S3 under the event's prefix.

Owned by the stream's session and run on its thread (frames of one stream arrive in order).
Every output is registered on the ticket of the fragment whose frame raised the event, before
that frame counts as analysed, so the fragment is not checkpointed until the event's record is
acknowledged and its highlight and clip are written (the clip may wait for its post-roll).

An event's record and highlight are of the frame that decided it. A track is given up (its zone
presence ends, reason "lost") only after it has been unseen for longer than both the events'
`track_timeout_seconds` and the tracker's `lost_track_seconds`; the highlight of such an exit
shows the deciding frame with the track's last box dashed and, inset, the frame it was last
seen in (kept by reference per track until the track is given up).
"""

from __future__ import annotations

import dataclasses
import logging

from consumer.config import Events, S3Output
from consumer.formats import event_records, highlights, records, s3_layout
from consumer.pipeline.event_clips import ClipRecorder
from consumer.pipeline.face_search import matches_by_person
from consumer.pipeline.ledger import FragmentTicket
from consumer.sinks.locations import Locations
from consumer.wire import Fragment
from processors.base import FrameResult
from processors.events import Event, EventEngine, FallRule, Observation, Rule
from processors.frames import VideoFrame
from processors.settings import Tracking

log = logging.getLogger(__name__)


class EventStage:
    def __init__(self, stream_name: str, rules: tuple[Rule, ...], config: Events,
                 processor: dict[str, str], kinesis, s3=None, s3_config: S3Output | None = None,
                 locations: Locations | None = None, lost_track_seconds: float | None = None):
        self.stream_name = stream_name
        # the tracker may bring a lost id back until then: no exit before (the default is
        # the tracker's default when the caller does not say)
        self.lost_track_seconds = (Tracking().lost_track_seconds if lost_track_seconds is None
                                   else lost_track_seconds)
        self.rules = rules
        self.config = config
        self.processor = processor  # {"Name", "Model", "ModelVersion"}
        self.kinesis = kinesis  # put(data, partition_key, on_done)
        self.s3 = s3  # put(key, body, content_type, metadata, on_done)
        self.s3_config = s3_config
        self.locations = locations  # consumer.sinks.locations: how records name an object
        self.clips = (ClipRecorder(stream_name, config.pre_roll_seconds,
                                   config.post_roll_seconds)
                      if s3 is not None and config.clips else None)
        self.engine: EventEngine | None = None  # built on the first frame (fall angles need it)
        self.raised = 0
        # track id -> (image, persons) of the frame it was last seen in, while the engine has it
        self._last_seen: dict[int, tuple] = {}

    @classmethod
    def for_stream(cls, stream_name: str, config: Events, *args, **kwargs) -> EventStage | None:
        """The stream's event stage, or None when its camera has no rules."""
        rules = config.rules_for(stream_name)
        return cls(stream_name, tuple(rules), config, *args, **kwargs) if rules else None

    def add_fragment(self, fragment: Fragment) -> None:
        """Every fragment read, kept for clips."""
        if self.clips is not None:
            self.clips.add_fragment(fragment)

    def observe(self, frame: VideoFrame, result: FrameResult, ticket: FragmentTicket,
                faces: list[dict] | None = None) -> list[Event]:
        """Run the rules on one analysed (and tracked) frame; deliver what they raise.
        `faces`: the frame's FaceSearchResponse (consumer.pipeline.face_search), if any: each
        person's matches (by PersonIndex) are its observation's, for the face_match rules."""
        source = frame.source
        if self.engine is None:
            aspect = frame.width / max(1, frame.height)
            rules = [dataclasses.replace(r, aspect_ratio=aspect) if isinstance(r, FallRule)
                     else r for r in self.rules]
            self.engine = EventEngine(self.stream_name, rules,
                                      max(self.config.track_timeout_seconds,
                                          self.lost_track_seconds))
        t = source.producer_time
        faces_of = matches_by_person(faces)  # person index -> its face's matches
        observations = [Observation.from_person(p, t, source.fragment_number,
                                                faces_of.get(index, ()))
                        for index, p in enumerate(result.persons)]
        events = self.engine.update(t, source.fragment_number, observations)
        for event in events:
            self._deliver(event, frame, result, ticket)
        if self.s3 is not None and self.config.highlights:  # only highlights need them
            for person in result.persons:
                if person.track_id is not None:
                    self._last_seen[person.track_id] = (frame.image, result.persons)
        for track_id in [k for k in self._last_seen if k not in self.engine.tracks]:
            del self._last_seen[track_id]
        if self.clips is not None:
            self.clips.note_analysed(t)
            self.write_clips()
        return events

    def write_clips(self, force: bool = False) -> None:
        """Write the clips whose post-roll has arrived (all of them with force), and those
        that waited too long for it."""
        if self.clips is None:
            return
        for clip in self.clips.ready(force):
            pending = clip.pending
            if clip.body is None:
                pending.ticket.output_done(True)  # nothing to cut; not a delivery failure
                continue
            self.s3.put(pending.key, clip.body, "video/mp4", pending.metadata,
                        pending.ticket.output_done)

    def _deliver(self, event: Event, frame: VideoFrame, result: FrameResult,
                 ticket: FragmentTicket) -> None:
        self.raised += 1
        source = frame.source
        state = event_records.status(event)
        media = {}
        if self.s3 is not None:
            metadata = {**s3_layout.object_metadata(source), "event-id": event.event_id,
                        "event-type": event.type}
            keys = {kind: s3_layout.event_key(self.s3_config.prefix, source.stream_name,
                                              event.start_time, event.event_id, kind)
                    for kind in ("highlight", "clip")}
            new = state != "ended"  # an ended event's media were written when it started
            if self.config.highlights:
                if new:
                    last_seen = (self._last_seen.get(event.track_id)
                                 if event.details.get("reason") == "lost" else None)
                    body = highlights.highlight_jpeg(frame.image, result.persons, event,
                                                     self.rules, self.s3_config.jpeg_quality,
                                                     last_seen=last_seen)
                    ticket.output_added()
                    self.s3.put(keys["highlight"], body, "image/jpeg", metadata,
                                ticket.output_done)
                media["Highlight"] = self._location(keys["highlight"])
            if self.clips is not None:
                if new:
                    self.clips.request(keys["clip"], source.producer_time, ticket, metadata)
                media["Clip"] = self._location(keys["clip"])
        record = event_records.event_record(event, source, self.processor, media=media)
        ticket.output_added()
        self.kinesis.put(records.encode_record(record), source.stream_name, ticket.output_done)
        log.info("stream %s: %s %s %s track %s at %.3f", source.stream_name, event.type,
                 event.rule, state, event.track_id, event.start_time)

    def _location(self, key: str) -> dict:
        return self.locations.shared(key)
