"""A stream's outputs: for each analysed frame its Kinesis record and (per the stream's frame
selection) its JPEG; for each fully analysed fragment its pose sequence (or its share of a pose
window). One instance per stream session, run on that session's thread.

Each output is registered on the fragment's ticket before it is handed to a writer, and settled
by the writer's acknowledgement (which the session brings back to its own thread), so a fragment
is checkpointed only once everything derived from it is durable. Records the data stream already
holds from before a restart (`delivered`, read back at the session's start) are not sent again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from consumer.config import FrameSelection, S3Output, StreamSettings
from consumer.formats import annotate, pose_sequence, records, s3_layout
from consumer.pipeline.ledger import FragmentTicket
from consumer.pipeline.pose_windows import PoseWindows
from consumer.pipeline.stage_times import JPEG_ENCODE, StageTimes
from consumer.sinks.locations import Locations
from processors.base import FrameResult
from processors.frames import VideoFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessorInfo:
    """Who analysed a frame, as records and pose sequences name it."""

    name: str
    model: str
    model_version: str
    landmark_set: str  # "" for a detector: no pose sequences

    @classmethod
    def of(cls, processor) -> ProcessorInfo:
        return cls(processor.name, processor.model, processor.model_version,
                   pose_sequence.landmark_set_of(processor))

    def metadata(self) -> dict[str, str]:
        return {"processor": self.name, "model": self.model, "model_version": self.model_version}


class OutputStage:
    def __init__(self, processor: ProcessorInfo, kinesis, s3=None,
                 s3_config: S3Output | None = None,
                 locations: Locations | None = None,
                 delivered: set[str] | None = None, stage_times: StageTimes | None = None):
        self.processor = processor
        self.times = stage_times if stage_times is not None else StageTimes()
        self.kinesis = kinesis  # put(data, partition_key, on_done)
        self.s3 = s3  # put(key, body, content_type, metadata, on_done)
        self.s3_config = s3_config
        self.locations = locations  # consumer.sinks.locations: how records name an object
        self.delivered = delivered if delivered is not None else set()
        self.records_skipped_as_delivered = 0
        self._thumbnailed: set[int] = set()  # fragment numbers that have their thumbnail
        self.windows = None
        if self.pose_sequences and s3_config.pose_window_seconds > 0:
            self.windows = PoseWindows(s3_config.pose_window_seconds, s3_config.prefix, s3,
                                       locations.fetch, processor.metadata(),
                                       processor.landmark_set)

    @property
    def pose_sequences(self) -> bool:
        return (self.s3 is not None and self.s3_config.pose_sequences
                and bool(self.processor.landmark_set))

    def emit(self, frame: VideoFrame, result: FrameResult, ticket: FragmentTicket,
             settings: StreamSettings, faces: list[dict] | None = None) -> None:
        """One analysed (and tracked) frame's JPEG and record, registered on its ticket;
        `faces`: its FaceSearchResponse (consumer.pipeline.face_search) when faces are on."""
        source = frame.source
        locations = []
        if self.s3 is not None and self._wants_jpeg(settings.frames, ticket, result):
            key = s3_layout.frame_key(self.s3_config.prefix, source)
            quality = self.s3_config.jpeg_quality
            annotated = bool(settings.annotate and (result.persons or result.hands))
            began = time.perf_counter()
            body = (annotate.annotated_jpeg(frame.image, result.persons, quality,
                                            hands=result.hands) if annotated
                    else annotate.encode_jpeg(frame.image, quality))
            self.times.add(JPEG_ENCODE, time.perf_counter() - began)
            ticket.output_added()
            self.s3.put(key, body, "image/jpeg", s3_layout.object_metadata(source),
                        ticket.output_done)
            locations.append({**self.locations.object(key), "Annotated": annotated})
        if source.record_id in self.delivered:
            self.records_skipped_as_delivered += 1
        else:
            info = self.processor
            record = records.frame_record(source, result, info.name, info.model,
                                          info.model_version, (frame.width, frame.height),
                                          frames=locations, face_search=faces)
            ticket.output_added()
            self.kinesis.put(records.encode_record(record), source.stream_name,
                             ticket.output_done)
        ticket.frame_analysed(source, result)

    def fragment_analysed(self, ticket: FragmentTicket) -> None:
        """Every frame of a fragment is analysed: its records may go now (no linger), and its
        pose sequence (or window share) is made."""
        self.kinesis.nudge()
        self._thumbnailed.discard(ticket.fragment_number)
        if not self.pose_sequences or not ticket.analysed:
            return
        if self.windows is not None:
            self.windows.add(ticket)
            return
        first = ticket.analysed[0][0]
        key = s3_layout.pose_sequence_key(self.s3_config.prefix, first.stream_name,
                                          first.fragment_number, first.producer_timestamp)
        body = pose_sequence.pose_sequence_parquet(ticket.analysed,
                                                   metadata=self.processor.metadata(),
                                                   landmark_set=self.processor.landmark_set)
        metadata = s3_layout.fragment_metadata(first.stream_name, first.stream_arn,
                                               first.fragment_number, first.producer_timestamp,
                                               first.server_timestamp)
        ticket.output_added()
        self.s3.put(key, body, "application/vnd.apache.parquet", metadata, ticket.output_done)

    def flush_idle(self) -> None:
        if self.windows is not None:
            self.windows.flush_idle()

    def flush_all(self) -> None:
        if self.windows is not None:
            self.windows.flush_all()

    def _wants_jpeg(self, selection: FrameSelection, ticket: FragmentTicket,
                    result: FrameResult) -> bool:
        if selection is FrameSelection.ALL:
            return True
        if selection is FrameSelection.PERSONS:
            return bool(result.persons)
        if selection is FrameSelection.THUMBNAIL:
            if ticket.fragment_number in self._thumbnailed:
                return False
            self._thumbnailed.add(ticket.fragment_number)
            return True
        return False
