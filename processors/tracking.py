"""Stable person track ids per stream: ByteTrack (Roboflow `trackers`) over the analysed frames.

One `PersonTracker` per stream, fed that stream's analysed frames in order, whatever processor
found the persons (MediaPipe's landmark boxes or YOLO's detections) and wherever fragments begin
and end: a fragment boundary is just the next frame, so a person keeps their id across it.
Frames are fed with their producer time, so sparse sampling (2 fps) and skipped frames keep the
motion model and the "lost for `lost_track_seconds`" rule in seconds, not frames.

A new person gets an id once a second frame confirms them; until then `track_id` stays None
(ByteTrack's tentative tracks), so a one-frame false detection never becomes a track. Ids count
from 0 per stream and per process: after a restart they start again (the tracker's state is not
checkpointed), so a track id names a person within one run of a stream, not forever.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from processors.base import Person
from processors.settings import Tracking

# ByteTrack counts its lost-track buffer in frames of 30 fps video (with timestamps, a track
# is lost after buffer / 30 seconds); we think in seconds.
_BUFFER_FPS = 30.0
# With timestamps, the motion model steps elapsed x frame_rate times between frames. At 30 its
# velocity noise over a 0.5 s gap (2 fps sampling) lost people who had barely moved; at 1-2 no
# track was confirmed; 10 held people in the sampled vogels_330 clip (tests/test_tracking.py).
_MOTION_FPS = 10.0


class PersonTracker:
    def __init__(self, config: Tracking):
        import supervision as sv
        from trackers import ByteTrackTracker

        self._detections = sv.Detections
        self._tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(config.lost_track_seconds * _BUFFER_FPS)),
            frame_rate=_MOTION_FPS,
            track_activation_threshold=config.activation_threshold,
            minimum_consecutive_frames=1,
            minimum_iou_threshold=config.min_iou,
            high_conf_det_threshold=max(config.activation_threshold, 0.5))
        self._last_time: float | None = None

    def update(self, persons: Sequence[Person], frame_time: float) -> tuple[Person, ...]:
        """`persons` with `track_id` set (None while a track is tentative), in the same order.
        `frame_time` is the frame's producer time in seconds; it must not go backwards."""
        if self._last_time is not None and frame_time <= self._last_time:
            frame_time = self._last_time + 1e-3  # repeated timecodes: keep time moving forward
        self._last_time = frame_time
        count = len(persons)
        boxes = np.array([p.bbox for p in persons], np.float64).reshape(count, 4)
        # the tracker's IoU and motion model work in any consistent units; normalised is fine
        detections = self._detections(
            xyxy=boxes, confidence=np.array([p.confidence for p in persons], np.float64),
            class_id=np.zeros(count, int), data={"index": np.arange(count)})
        tracked = self._tracker.update(detections, timestamp=frame_time)
        ids: list[int | None] = [None] * count
        # (with no detections the tracker returns an empty set without the "index" column)
        for index, track_id in zip(tracked.data.get("index", ()), tracked.tracker_id):
            if track_id >= 0:
                ids[int(index)] = int(track_id)
        return tuple(dataclasses.replace(p, track_id=i) for p, i in zip(persons, ids))
