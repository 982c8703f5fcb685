"""The output stage: for each analysed frame, its persons' track ids, the events its camera's
rules raise (consumer.pipeline.event_stage), its Kinesis record and (per the stream's selection) its JPEG;
for each fully analysed fragment, its pose sequence. Each output is registered on the
fragment's ticket before it is handed to a writer, and settled by the writer's acknowledgement,
so a fragment is checkpointed only once everything derived from it is durable.
"""

from __future__ import annotations

import dataclasses
import logging
import threading

from consumer.config import FrameSelection, S3Output
from consumer.formats import annotate, pose_sequence, records, s3_layout
from consumer.pipeline.event_stage import EventStage
from consumer.pipeline.pose_windows import PoseWindows
from consumer.streams.ledger import FragmentTicket
from consumer.streams.session import WorkItem
from processors.base import FrameResult, Processor

log = logging.getLogger(__name__)


class OutputStage:
    def __init__(self, processor: Processor, kinesis, s3=None, s3_config: S3Output | None = None,
                 fetch=None, events: EventStage | None = None):
        self.processor = processor
        self.events = events  # per-camera rules -> event records, highlights, clips
        self.kinesis = kinesis  # consumer.sinks.kinesis.KinesisRecordWriter
        self.s3 = s3  # consumer.sinks.s3.S3ObjectWriter
        self.s3_config = s3_config
        # Record ids already in the data stream from before a restart (see sinks.replay).
        self.already_delivered: dict[str, set[str]] = {}
        self.records_skipped_as_delivered = 0
        self._thumbnails: set[tuple[str, int]] = set()
        self._lock = threading.Lock()
        # the processor's landmarks ("" for a detector: it has no pose sequences)
        self.landmark_set = pose_sequence.landmark_set_of(processor)
        self.windows = None
        if s3 is not None and self._pose_sequences and s3_config.pose_window_seconds > 0:
            self.windows = PoseWindows(s3_config.pose_window_seconds, s3_config.prefix, s3,
                                       fetch, self._sequence_metadata(), self.landmark_set)

    def emit(self, item: WorkItem, result: FrameResult) -> None:
        frame, ticket, settings, stats = item.frame, item.ticket, item.settings, item.stats
        source = frame.source
        if item.tracker is not None:
            result = dataclasses.replace(
                result, persons=item.tracker.update(result.persons, source.producer_time))
        if item.events is not None and self.events is not None:
            self.events.observe(item.events, frame, result, ticket)
        stats.note_analysed(source.producer_time, len(result.persons))
        locations = []
        if self.s3 is not None and self._wants_jpeg(settings.frames, item, result):
            key = s3_layout.frame_key(self.s3_config.prefix, source)
            quality = self.s3_config.jpeg_quality
            body = (annotate.annotated_jpeg(frame.image, result.persons, quality)
                    if settings.annotate and result.persons
                    else annotate.encode_jpeg(frame.image, quality))
            ticket.output_added()
            self.s3.put(key, body, "image/jpeg", s3_layout.object_metadata(source),
                        ticket.output_done)
            locations.append({"Bucket": self.s3_config.bucket, "Key": key,
                              "Annotated": bool(settings.annotate and result.persons)})
        if source.record_id in self.already_delivered.get(source.stream_arn, ()):
            self.records_skipped_as_delivered += 1
        else:
            record = records.frame_record(
                source, result, self.processor.name, self.processor.model,
                self.processor.model_version, (frame.width, frame.height), frames=locations)
            ticket.output_added()
            self.kinesis.put(records.encode_record(record), source.stream_name,
                             ticket.output_done)
        ticket.frame_analysed(source, result)

    def fragment_analysed(self, ticket: FragmentTicket) -> None:
        """Tracker callback once every frame of a fragment is analysed: its pose sequence."""
        with self._lock:
            self._thumbnails.discard((ticket.stream_arn, ticket.fragment_number))
        if not self._pose_sequences or not ticket.analysed:
            return
        if self.windows is not None:
            self.windows.add(ticket)
            return
        first = ticket.analysed[0][0]
        key = s3_layout.pose_sequence_key(self.s3_config.prefix, first.stream_name,
                                          first.fragment_number, first.producer_timestamp)
        body = pose_sequence.pose_sequence_parquet(ticket.analysed,
                                                   metadata=self._sequence_metadata(),
                                                   landmark_set=self.landmark_set)
        metadata = s3_layout.fragment_metadata(first.stream_name, first.stream_arn,
                                               first.fragment_number, first.producer_timestamp,
                                               first.server_timestamp)
        ticket.output_added()
        self.s3.put(key, body, "application/vnd.apache.parquet", metadata, ticket.output_done)

    @property
    def _pose_sequences(self) -> bool:
        return (self.s3 is not None and self.s3_config.pose_sequences
                and bool(self.landmark_set))

    def _sequence_metadata(self) -> dict[str, str]:
        return {"processor": self.processor.name, "model": self.processor.model,
                "model_version": self.processor.model_version}

    def _wants_jpeg(self, selection: FrameSelection, item: WorkItem,
                    result: FrameResult) -> bool:
        if selection is FrameSelection.ALL:
            return True
        if selection is FrameSelection.PERSONS:
            return bool(result.persons)
        if selection is FrameSelection.THUMBNAIL:
            key = (item.ticket.stream_arn, item.ticket.fragment_number)
            with self._lock:
                if key in self._thumbnails:
                    return False
                self._thumbnails.add(key)
            return True
        return False
