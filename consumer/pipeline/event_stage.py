"""Events for the output stage: each camera's rules run on its tracked persons; each event raised
becomes a record on the data stream, a highlight JPEG and a clip in S3 under the event's prefix.

Runs on the analysis thread that serves the stream (frames of one stream arrive there in order).
Every output is registered on the ticket of the fragment whose frame raised the event, before
that frame counts as analysed, so the fragment is not checkpointed until the event's record is
acknowledged and its highlight and clip are written (the clip may wait for its post-roll).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

from consumer.config import Events, S3Output
from consumer.formats import event_records, highlights, records, s3_layout
from consumer.pipeline.event_clips import ClipRecorder
from consumer.streams.ledger import FragmentTicket
from processors.base import FrameResult
from processors.events import Event, EventEngine, FallRule, Observation, Rule
from processors.frames import VideoFrame

log = logging.getLogger(__name__)


@dataclass
class CameraEventState:
    """One stream's rules, their state, and its clip recorder (None when clips are off)."""
    stream_name: str
    rules: tuple[Rule, ...]
    clips: ClipRecorder | None
    engine: EventEngine | None = None  # built on the first frame (fall angles need its shape)
    raised: int = 0


class EventStage:
    def __init__(self, config: Events, processor: dict[str, str], kinesis, s3=None,
                 s3_config: S3Output | None = None, s3_client=None):
        self.config = config
        self.processor = processor  # {"Name", "Model", "ModelVersion"}
        self.kinesis = kinesis
        self.s3 = s3
        self.s3_config = s3_config
        self.s3_client = s3_client  # for presigned URLs
        self.cameras: dict[str, CameraEventState] = {}
        self._lock = threading.Lock()

    def camera(self, stream_name: str) -> CameraEventState | None:
        """The stream's event state, or None when it has no rules."""
        rules = self.config.rules_for(stream_name)
        if not rules:
            return None
        clips = (ClipRecorder(stream_name, self.config.pre_roll_seconds,
                              self.config.post_roll_seconds)
                 if self.s3 is not None and self.config.clips else None)
        camera = CameraEventState(stream_name, tuple(rules), clips)
        with self._lock:
            self.cameras[stream_name] = camera
        return camera

    def observe(self, camera: CameraEventState, frame: VideoFrame, result: FrameResult,
                ticket: FragmentTicket) -> list[Event]:
        """Run the camera's rules on one analysed (and tracked) frame; deliver what they raise."""
        source = frame.source
        if camera.engine is None:
            aspect = frame.width / max(1, frame.height)
            rules = [dataclasses.replace(r, aspect_ratio=aspect) if isinstance(r, FallRule)
                     else r for r in camera.rules]
            camera.engine = EventEngine(camera.stream_name, rules,
                                        self.config.track_timeout_seconds)
        t = source.producer_time
        observations = [Observation.from_person(p, t, source.fragment_number)
                        for p in result.persons]
        events = camera.engine.update(t, source.fragment_number, observations)
        for event in events:
            self._deliver(camera, event, frame, result, ticket)
        if camera.clips is not None:
            camera.clips.note_analysed(t)
            self.write_clips(camera)
        return events

    def write_clips(self, camera: CameraEventState, force: bool = False) -> None:
        """Write the camera's clips whose post-roll has arrived (all of them with force)."""
        if camera.clips is None:
            return
        for clip in camera.clips.ready(force):
            pending = clip.pending
            if clip.body is None:
                pending.ticket.output_done(True)  # nothing to cut; not a delivery failure
                continue
            self.s3.put(pending.key, clip.body, "video/mp4", pending.metadata,
                        pending.ticket.output_done)

    def flush(self, force: bool = False) -> None:
        """Clips waiting too long for their post-roll (or all of them, at shutdown)."""
        with self._lock:
            cameras = list(self.cameras.values())
        for camera in cameras:
            self.write_clips(camera, force)

    def forget(self, stream_name: str) -> None:
        with self._lock:
            camera = self.cameras.pop(stream_name, None)
        if camera is not None:
            self.write_clips(camera, force=True)

    def _deliver(self, camera: CameraEventState, event: Event, frame: VideoFrame,
                 result: FrameResult, ticket: FragmentTicket) -> None:
        camera.raised += 1
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
                    body = highlights.highlight_jpeg(frame.image, result.persons, event,
                                                     camera.rules, self.s3_config.jpeg_quality)
                    ticket.output_added()
                    self.s3.put(keys["highlight"], body, "image/jpeg", metadata,
                                ticket.output_done)
                media["Highlight"] = self._location(keys["highlight"])
            if camera.clips is not None:
                if new:
                    camera.clips.request(keys["clip"], source.producer_time, ticket, metadata)
                media["Clip"] = self._location(keys["clip"])
        record = event_records.event_record(event, source, self.processor, media=media)
        ticket.output_added()
        self.kinesis.put(records.encode_record(record), source.stream_name, ticket.output_done)
        log.info("stream %s: %s %s %s track %s at %.3f", source.stream_name, event.type,
                 event.rule, state, event.track_id, event.start_time)

    def _location(self, key: str) -> dict:
        bucket = self.s3_config.bucket
        expiry = self.config.url_expiry_seconds
        url = self.s3_client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expiry)
        return {"Bucket": bucket, "Key": key, "Url": url,
                "UrlExpiresAt": round(time.time() + expiry, 3)}
