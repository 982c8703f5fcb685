"""One stream's owner: a `StreamSession` holds everything about its stream while this worker
holds its lease: the media source, decoder, fragment ledger, person tracker, event state and
clip buffer, outputs (with the records already delivered before it started) and stats.

Two threads, both the session's own:
- the reader: (after a hand-off wait, when the lease was taken from a live worker) reads back
  what the data stream already holds, then GetMedia -> fragments -> decoder -> the shared
  analysis queue. At most `processing.queue_frames` of its frames are between the reader and
  the end of the handler's work on them. Lossless policy: a full queue, or that many frames
  unsettled (the handler waits on a writer that is retrying through an outage), blocks the
  reader, and with it the GetMedia read (backpressure). Real-time policy: frames older than
  `max_lag_seconds`, or that find no room, are skipped; their fragment still completes, so
  checkpoints advance in order.
- the handler: everything that changes the stream's state, in order, from its inbox: fragments
  read, analysis results (routed back by the session's key; several analysis workers may
  take one stream's frames, so outcomes are handled in the order the frames were submitted,
  by their `seq`, not as they arrive), and the writers' acknowledgements
  (the session's ports bring them back here). So the ledger, tracker, events and outputs are
  only ever touched on this thread, and what crosses to the shared stages is data.

Stage times (`consumer.pipeline.stage_times`, the shared recorder in `SharedStages`): the reader
records each fragment's arrival and decode, and stamps each frame as it is submitted; the handler
records how long results and acknowledgements waited in its inbox and how long an analysed frame
took to turn into outputs.

`stop()` drains: reading stops, frames already queued are analysed and delivered, pose windows
and owed clips are written, and completed fragments are checkpointed. `abandon()` (lease lost)
stops at once and emits nothing more. An unexpected error in either thread ends the session
with `failure` set; the supervisor restarts it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.cloud.aws import AwsContext
from consumer.cloud.media_source import MediaSource, StreamGone
from consumer.config import Config, LagPolicy
from consumer.pipeline.analysis import Analysed, AnalysisRequest, NotAnalysed
from consumer.pipeline.decode import DecodeError, StreamDecoder
from consumer.pipeline.event_stage import EventStage
from consumer.pipeline.ledger import FragmentLedger, FragmentTicket
from consumer.pipeline.outputs import OutputStage, ProcessorInfo
from consumer.pipeline.stage_times import (
    ACK_WAIT,
    ARRIVAL,
    DECODE,
    DECODE_FRAME,
    HANDLER_WAIT,
    RECORD_BUILD,
    StageTimes,
)
from consumer.sinks.locations import Locations
from consumer.sinks.replay import delivered_record_ids
from consumer.streams.inbox import (
    READER_DONE,
    FragmentRead,
    FrameQueued,
    InOrder,
    Port,
    Sealed,
    Settle,
)
from consumer.streams.stats import StreamStats, ThrottledWarning
from consumer.wire import Fragment
from processors.frames import FileOrigin, VideoFrame
from processors.tracking import PersonTracker

log = logging.getLogger(__name__)
DECODE_WARNING_INTERVAL = 60.0
REPLAY_MARGIN_SECONDS = 300  # how far before a checkpoint's write to look for delivered records
HOUSEKEEPING_SECONDS = 1.0  # idle pose windows, clips that waited too long


@dataclass(frozen=True)
class SharedStages:
    """What a session uses of the worker's shared stages: queues, writers, clients."""

    config: Config
    kvs: AwsContext
    kinesis_client: object  # for reading back what was delivered
    kinesis: object  # KinesisRecordWriter
    s3: object | None  # S3ObjectWriter
    locations: Locations | None  # how records name objects, and reading one back
    processor: ProcessorInfo
    checkpoint: Callable[[str, int, float | None], None]  # (arn, fragment, producer time)
    holds: Callable[[str], bool]  # does this worker still hold the stream's lease? (the fence)
    stage_times: StageTimes | None = None  # the worker's recorder (None: the session's own)
    face_search: object | None = None  # consumer.pipeline.face_search.FaceSearch (faces on)


@dataclass(frozen=True)
class Start:
    """Where a session starts: from its lease."""

    checkpoint: int | None
    read_back: bool  # someone held the stream before: look for records already delivered
    read_back_since: float | None  # seconds since the epoch
    handoff_seconds: float = 0.0


class StreamSession:
    def __init__(self, key: int, name: str, arn: str, start: Start, stages: SharedStages,
                 work: queue.Queue, source: MediaSource | None = None,
                 origin: FileOrigin | None = None):
        config = stages.config
        self.key = key
        self.name = name
        self.arn = arn
        self.start_at = start
        self.stages = stages
        self.work = work  # the analysis queue serving this stream
        self.settings = config.stream_settings(name)
        self.stats = StreamStats()
        self.started = time.monotonic()
        self.failure: str | None = None
        self.gone = False
        self.retired = False  # the supervisor has closed it and dealt with its end
        self.inbox: queue.Queue = queue.Queue()
        self.ledger = FragmentLedger(arn, self._completed, self._fragment_analysed)
        self.times = stages.stage_times if stages.stage_times is not None else StageTimes()
        self._abandoned = False
        kinesis = Port(stages.kinesis, self.inbox.put, self._may_emit)
        s3 = Port(stages.s3, self.inbox.put) if stages.s3 is not None else None
        self.outputs = OutputStage(stages.processor, kinesis, s3, config.outputs.s3,
                                   stages.locations, stage_times=self.times)
        info = stages.processor
        self.events = EventStage.for_stream(
            name, config.events, {"Name": info.name, "Model": info.model,
                                  "ModelVersion": info.model_version},
            kinesis, s3, config.outputs.s3, stages.locations,
            lost_track_seconds=config.processing.tracking.lost_track_seconds)
        tracking = config.processing.tracking
        self.person_tracker = PersonTracker(tracking) if tracking.enabled else None
        self.source = source or MediaSource(stages.kvs, name, arn,
                                            start=config.streams.start.value,
                                            after_fragment=start.checkpoint)
        self._decoder = StreamDecoder(name, arn, self.settings.sampling,
                                      threads=config.processing.decode.threads.upper(),
                                      device=config.processing.decode.device, origin=origin)
        self._phase = "starting"
        self._awaiting = 0  # frames announced to the handler and not yet settled
        self._unsettled = 0  # frames handed to analysis whose result the handler has not done
        self._seqs = itertools.count()  # numbers the frames submitted, in order
        self._outcomes = InOrder()
        self._room = threading.Condition()
        self._max_unsettled = max(1, config.processing.queue_frames)
        self._reader_done = False
        self._finished = False  # pose windows and clips flushed after the last frame
        self._stopping = threading.Event()
        self._quit = threading.Event()
        self._decode_warning = ThrottledWarning(log, DECODE_WARNING_INTERVAL)
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._handler = threading.Thread(target=self._handle, name=f"own-{name}", daemon=True)

    # --- lifecycle (the supervisor's thread) -------------------------------------------------

    def start(self) -> StreamSession:
        self._handler.start()
        self._reader.start()
        return self

    def stop(self) -> None:
        """Stop reading and drain: what was read is analysed, delivered and checkpointed."""
        self._stopping.set()
        self.source.stop()

    def abandon(self) -> None:
        """The lease is lost: stop now, emit nothing more, checkpoint nothing more."""
        self._abandoned = True
        self.ledger.fence()
        self._phase = "lease lost"
        self.stop()
        self._quit.set()
        self.inbox.put(None)

    def close(self, timeout: float) -> bool:
        """Stop the handler (after a drain, or giving up on it); True if both threads ended."""
        self._quit.set()
        self.inbox.put(None)
        deadline = time.monotonic() + timeout
        self._reader.join(max(0.0, deadline - time.monotonic()))
        self._handler.join(max(0.0, deadline - time.monotonic()))
        return not (self._reader.is_alive() or self._handler.is_alive())

    def _may_emit(self) -> bool:
        """The fence of this session's records: not abandoned, and the lease still held."""
        if not self._abandoned and self.stages.holds(self.arn):
            return True
        self.ledger.fence()
        return False

    def post(self, message: object) -> None:
        """A result for this stream from a shared stage (the analysis router)."""
        self.inbox.put(message)

    @property
    def reading_ended(self) -> bool:
        """The reader has stopped: asked to, the stream is gone, or it failed."""
        return self._reader_done

    @property
    def drained(self) -> bool:
        """Stopped, and every fragment read is checkpointed (or blocked by a failed output)."""
        return (self._finished and self.ledger.in_flight() == 0) or (
            self._finished and self.ledger.blocked_at is not None)

    @property
    def ended(self) -> bool:
        return not (self._reader.is_alive() or self._handler.is_alive())

    @property
    def state(self) -> str:
        if self.failure:
            return f"failed: {self.failure}"
        if self._stopping.is_set():
            return self._phase if self._phase == "lease lost" else "stopping"
        if self._phase in ("starting", "handing over", "reading back"):
            return self._phase
        return self.source.state

    # --- the reader --------------------------------------------------------------------------

    def _read(self) -> None:
        try:
            self._prepare()
            for fragment in self.source.fragments():
                self._read_fragment(fragment)
                if self._stopping.is_set():
                    break
        except StreamGone as err:
            self.gone = True
            log.warning("stream %s: %s; letting it go", self.name, err)
        except Exception as err:  # a bug for one stream must not stop the others
            log.exception("stream %s: reader failed", self.name)
            self.failure = self.failure or f"{type(err).__name__}: {err}"
            self.stats.note_error(f"reader failed: {err}")
        finally:
            self._decoder.close()
            self.inbox.put(READER_DONE)

    def _prepare(self) -> None:
        start = self.start_at
        if start.handoff_seconds > 0:
            # the previous owner may still deliver until it notices: let it stop first
            self._phase = "handing over"
            if self._stopping.wait(start.handoff_seconds):
                return
        if start.read_back and self.stages.config.outputs.kinesis.dedupe_on_resume:
            self._phase = "reading back"
            self._read_back(start)
        self._phase = "reading"

    def _read_back(self, start: Start) -> None:
        since = (start.read_back_since or time.time()) - REPLAY_MARGIN_SECONDS
        try:
            delivered = delivered_record_ids(self.stages.kinesis_client,
                                             self.stages.config.outputs.kinesis.stream,
                                             self.name, since)
        except Exception as err:
            log.warning("stream %s: could not read back delivered records (%s); a replay may "
                        "repeat some record ids", self.name, err)
            return
        self.outputs.delivered.update(delivered)  # before the first frame reaches the handler
        log.info("stream %s: %d records already delivered after checkpoint %s will not be "
                 "sent again", self.name, len(delivered), start.checkpoint)

    def _read_fragment(self, fragment: Fragment) -> None:
        stats = self.stats
        stats.fragments += 1
        stats.last_fragment = fragment.fragment_number
        stats.millis_behind_now = fragment.millis_behind_now
        last_frame = _last_frame_time(fragment)
        if last_frame is not None:  # the fragment was read just now, whole
            self.times.add(ARRIVAL, time.time() - last_frame)
        number = fragment.fragment_number
        self.inbox.put(FragmentRead(fragment))
        decoding = 0.0  # seconds in the decoder (not blocked handing frames on)
        decoded_before = self._decoder.frames_decoded
        count = 0
        frames = self._decoder.frames(fragment)
        try:
            while True:
                began = time.perf_counter()
                frame = next(frames, None)
                decoding += time.perf_counter() - began
                if frame is None:
                    break
                count += 1
                self.inbox.put(FrameQueued(number))
                self._submit(frame)
        except DecodeError as err:
            self._decode_trouble(str(err), "skipping the fragment")
        else:
            self._decode_times(decoding, decoded_before)
            if self._decoder.damage is not None:
                self._decode_trouble(
                    f"stream {self.name}: fragment {number}: {self._decoder.damage}",
                    f"analysing the {count} frames that decoded")
        finally:
            frames.close()
        stats.frames_decoded = self._decoder.frames_decoded
        self.inbox.put(Sealed(number))

    def _decode_times(self, seconds: float, decoded_before: int) -> None:
        self.times.add(DECODE, seconds)
        decoded = self._decoder.frames_decoded - decoded_before
        if decoded:
            self.times.add(DECODE_FRAME, seconds / decoded)

    def _submit(self, frame: VideoFrame) -> None:
        """The frame to analysis; exactly one outcome (Analysed or NotAnalysed) with its seq
        reaches the inbox."""
        self.stats.frames_queued += 1
        seq = next(self._seqs)
        settings = self.settings
        ready = time.perf_counter()  # the queue wait counts from here, waiting for room included
        if settings.policy is LagPolicy.REALTIME:
            stale_after = frame.source.producer_time + settings.max_lag_seconds
            try:
                if time.time() > stale_after or not self._take_room(block=False):
                    raise queue.Full
                try:
                    self.work.put_nowait(
                        AnalysisRequest(self.key, frame, stale_after, ready, seq))
                except queue.Full:
                    self._settled()
                    raise
            except queue.Full:
                self.inbox.put(NotAnalysed(frame, "skipped", seq))
            return
        request = AnalysisRequest(self.key, frame, enqueued=ready, seq=seq)
        taken = False
        while True:  # lossless: wait for room, but notice a stop
            try:
                taken = taken or self._take_room(block=True)
                if taken:
                    self.work.put(request, timeout=0.2)
                    return
            except queue.Full:
                pass
            if self._stopping.is_set():
                # shutting down: this frame will be re-read after the checkpoint
                if taken:
                    self._settled()
                self.inbox.put(NotAnalysed(frame, "abandoned", seq))
                return

    def _take_room(self, block: bool) -> bool:
        """Count one more frame in flight if there is room (waiting up to 0.2 s if `block`)."""
        with self._room:
            if self._unsettled >= self._max_unsettled and block:
                self._room.wait(0.2)
            if self._unsettled >= self._max_unsettled:
                return False
            self._unsettled += 1
            return True

    def _settled(self) -> None:
        with self._room:
            self._unsettled -= 1
            self._room.notify()

    def _decode_trouble(self, problem: str, consequence: str) -> None:
        """A fragment skipped, or damaged (some frames lost): counted in the stream's decode
        errors, and warned about at most once a minute (ThrottledWarning)."""
        self.stats.decode_errors += 1
        self.stats.note_error(problem)
        self._decode_warning.warn(f"{problem}; {consequence}")

    # --- the handler -------------------------------------------------------------------------

    def _handle(self) -> None:
        next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
        while not self._quit.is_set():
            try:
                message = self.inbox.get(timeout=0.2)
            except queue.Empty:
                message = None
            if self._quit.is_set():
                break
            try:
                if message is not None:
                    self._dispatch(message)
                if self._stopping.is_set() and self._reader_done and self._awaiting == 0 \
                        and not self._finished:
                    self._finish()
                if time.monotonic() >= next_housekeeping:
                    self.outputs.flush_idle()
                    if self.events is not None:
                        self.events.write_clips()
                    next_housekeeping = time.monotonic() + HOUSEKEEPING_SECONDS
            except Exception as err:  # the stream's state is suspect: end, the supervisor restarts
                log.exception("stream %s: handling failed", self.name)
                self.failure = self.failure or f"{type(err).__name__}: {err}"
                self.stop()
                return

    def _dispatch(self, message: object) -> None:
        if isinstance(message, Settle):
            if message.posted:
                self.times.add(ACK_WAIT, time.perf_counter() - message.posted)
            message.on_done(message.ok)
        elif isinstance(message, (Analysed, NotAnalysed)):
            for outcome in self._outcomes.arrived(message):
                self._outcome(outcome)
        elif isinstance(message, FragmentRead):
            self._fragment_read(message)
        elif isinstance(message, FrameQueued):
            self._awaiting += 1
            self.ledger.ticket(message.fragment_number).frame_queued()
        elif isinstance(message, Sealed):
            self.ledger.ticket(message.fragment_number).seal()
        elif message is READER_DONE:
            self._reader_done = True
            if not self._stopping.is_set():  # gone or failed: drain what was read
                self._stopping.set()

    def _outcome(self, message: Analysed | NotAnalysed) -> None:
        if isinstance(message, NotAnalysed):
            self._not_analysed(message)
            return
        began = time.perf_counter()
        if message.routed:  # the wait for earlier frames' outcomes included
            self.times.add(HANDLER_WAIT, began - message.routed)
        self._analysed(message.frame, message.result)
        self.times.add(RECORD_BUILD, time.perf_counter() - began)

    def _fragment_read(self, message: FragmentRead) -> None:
        fragment = message.fragment
        self.ledger.begin(fragment.fragment_number, fragment.producer_timestamp)
        if self.events is not None:
            self.events.add_fragment(fragment)

    def _ticket(self, frame: VideoFrame) -> FragmentTicket:
        self._awaiting -= 1
        ticket = self.ledger.ticket(frame.source.fragment_number)
        if ticket is None:
            raise RuntimeError(f"no ticket for fragment {frame.source.fragment_number}")
        return ticket

    def _analysed(self, frame: VideoFrame, result) -> None:
        self._settled()
        ticket = self._ticket(frame)
        source = frame.source
        if self.person_tracker is not None:
            result = dataclasses.replace(
                result, persons=self.person_tracker.update(result.persons, source.producer_time))
        if result.faces and self.stages.config.privacy.blur_faces:
            # every picture made from here on (frame JPEGs, highlights) shows blurred faces;
            # clips are cut from the fragments as received, untouched
            from processors.faces import blur_faces
            frame = dataclasses.replace(frame, image=blur_faces(frame.image, result.faces))
        # the frame's FaceSearchResponse, for its record and the face_match rules
        faces = (self.stages.face_search.response(result.faces, result.persons)
                 if self.stages.face_search is not None else None)
        if self.events is not None:
            self.events.observe(frame, result, ticket, faces)
        self.stats.note_analysed(source.producer_time, len(result.persons))
        self.outputs.emit(frame, result, ticket, self.settings, faces)

    def _not_analysed(self, message: NotAnalysed) -> None:
        if message.reason in ("stale", "failed"):  # from the analysis: it had the frame
            self._settled()
        ticket = self._ticket(message.frame)
        if message.reason in ("stale", "skipped"):
            self.stats.frames_skipped += 1
            ticket.frame_skipped()
        else:  # failed or abandoned: the checkpoint stays before it, a restart re-reads it
            ticket.frame_abandoned()

    def _finish(self) -> None:
        """Every frame read is settled: write what waits for more (windows, clips) now."""
        self._finished = True
        self.outputs.flush_all()
        if self.events is not None:
            self.events.write_clips(force=True)

    def _fragment_analysed(self, ticket: FragmentTicket) -> None:
        self.outputs.fragment_analysed(ticket)

    def _completed(self, ticket: FragmentTicket) -> None:
        if not self._abandoned:
            self.stages.checkpoint(self.arn, ticket.fragment_number, ticket.producer_time)


def _last_frame_time(fragment: Fragment) -> float | None:
    """Producer time of the fragment's last video frame (its server timestamp without one)."""
    video = fragment.video_frames()
    if fragment.producer_timestamp is None or not video:
        return fragment.server_timestamp
    return fragment.producer_timestamp + max(fragment.frame_offset(f) for f in video)
