"""Event clips per stream (consumer.pipeline.event_clips) and their hold on the checkpoint: a
fragment whose frame raised an event is not complete until the event's clip is written."""

from __future__ import annotations

import io

import av
import pytest

from consumer.pipeline.event_clips import ClipRecorder, fragment_span
from consumer.pipeline.ledger import FragmentLedger
from consumer.wire import read_fragments


@pytest.fixture(scope="module")
def fragments(capture):
    """output_get_media.mkv: 5 fragments of 60 frames (2 s each, 640x360 H.264)."""
    return read_fragments(capture("output_get_media.mkv"))


def _payloads(mp4: bytes) -> list[bytes]:
    with av.open(io.BytesIO(mp4)) as container:
        return [bytes(p) for p in container.demux(container.streams.video[0]) if p.size]


def _ticket(completed: list):
    tracker = FragmentLedger("arn", lambda t: completed.append(t.fragment_number))
    ticket = tracker.begin(7)
    ticket.seal()  # no frames: complete unless something is owed
    return tracker, ticket


def test_a_clip_waits_for_its_post_roll_then_holds_the_source_packets(fragments):
    recorder = ClipRecorder("cam", pre_roll=1.0, post_roll=2.5)
    first, _ = fragment_span(fragments[1])
    event_time = first + 1.0  # inside the second fragment
    completed = []
    tracker = FragmentLedger("arn", lambda t: completed.append(t.fragment_number))
    ticket = tracker.begin(7)
    for fragment in fragments[:2]:
        recorder.add_fragment(fragment)
    recorder.request("clip-key", event_time, ticket, {})
    ticket.seal()
    assert recorder.ready() == []  # the post-roll reaches into the third fragment
    assert completed == []  # the fragment owes its clip: not checkpointable
    recorder.add_fragment(fragments[2])
    (clip,) = recorder.ready()
    assert clip.pending.key == "clip-key" and recorder.pending == 0
    window = [f for fragment in fragments[1:3] for f in fragment.video_frames()
              if event_time - 1.0 - 1e-6 <= (fragment.producer_timestamp or 0)
              + fragment.frame_offset(f) <= event_time + 2.5 + 1e-6]
    # it starts on the keyframe at or before the pre-roll: the second fragment's first frame
    keyframed = fragments[1].video_frames()[:fragments[1].video_frames().index(window[0])]
    expected = [bytes(f.data) for f in keyframed + window]
    assert _payloads(clip.body) == expected
    clip.pending.ticket.output_done(True)  # what the S3 writer calls once written
    assert completed == [7]


def test_force_cuts_what_is_there_and_a_clip_without_video_is_settled(fragments):
    recorder = ClipRecorder("cam", pre_roll=0.5, post_roll=30.0)
    recorder.add_fragment(fragments[0])
    completed = []
    _, ticket = _ticket(completed)
    first, _ = fragment_span(fragments[0])
    recorder.request("k", first + 1.0, ticket, {})
    assert recorder.ready() == []
    (clip,) = recorder.ready(force=True)
    assert len(_payloads(clip.body)) == 60  # the whole fragment: from its keyframe to its end

    empty = ClipRecorder("cam", pre_roll=1.0, post_roll=1.0)
    empty.request("k2", 123.0, ticket, {})
    (nothing,) = empty.ready(force=True)
    assert nothing.body is None  # no fragments kept: logged, nothing to write


def test_old_fragments_are_dropped_unless_an_owed_clip_needs_them(fragments):
    recorder = ClipRecorder("cam", pre_roll=1.0, post_roll=60.0)
    for fragment in fragments:
        recorder.add_fragment(fragment)
    spans = [fragment_span(f) for f in fragments]
    completed = []
    _, ticket = _ticket(completed)
    recorder.request("k", spans[1][0] + 1.5, ticket, {})  # pre-roll starts in fragment 2
    recorder.note_analysed(spans[4][1])  # analysis at the end of the last fragment
    (clip,) = recorder.ready(force=True)
    assert len(_payloads(clip.body)) == 4 * 60  # fragments 2-5 were kept for the owed clip
    recorder.note_analysed(spans[4][1])  # nothing owed now: only the pre-roll is kept
    recorder.request("k2", spans[4][1], ticket, {})
    (clip,) = recorder.ready(force=True)
    assert len(_payloads(clip.body)) == 60


def test_the_newest_fragments_are_kept_when_a_stream_runs_far_ahead(fragments):
    recorder = ClipRecorder("cam", pre_roll=1.0, post_roll=1.0, max_fragments=2)
    for fragment in fragments:
        recorder.add_fragment(fragment)
    completed = []
    _, ticket = _ticket(completed)
    recorder.request("k", fragment_span(fragments[0])[0], ticket, {})
    (clip,) = recorder.ready(force=True)
    assert clip.body is None  # its video was pushed out: no clip rather than unbounded memory
