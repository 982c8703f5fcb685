"""Bad media from producers, read by a real consumer process (`python -m consumer run`).

Each test puts real encoded video (libx264 / libx265 through PyAV) into a stream on the local KVS
service by PutMedia, as raw MKV written with the project's writer (`producer_media`), then lets a
consumer read it and reads back what a user would: the data stream's records, the bucket's JPEGs,
the lease table's checkpoint, the consumer's log.

What the service stores: PutMedia checks the container (MKV structure, timecodes, sizes; AWS's
ack error ids 4000-4010 are all about those), never the codec payload, so damaged H.264 is stored
and served as it was sent. A connection that ends inside a cluster never gets its fragment
PERSISTED: the local service stores only complete clusters, so a dead producer's last fragment is
simply absent, and the next session's fragments follow it.
"""

from __future__ import annotations

import io
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from consumer.media.pattern import draw_frame
from consumer.wire import writer

from ..delivery_checks import delivered_frames
from .harness import Run, wait_for
from .producer_media import (
    CAMERA_FPS,
    GOP,
    cut_short,
    damaged,
    encode_clip,
    flipped,
    fragments,
    now_ms,
    producer_body,
    put_all,
    put_media_then_die,
    zeroed,
)

# The slowest tests here are marked slow (left out of a plain `python -m pytest`; .ci/run runs them)

EVERY_FRAME = set(range(GOP))


def media_run(stack, tmp_path) -> Run:
    """A run with no camera (the test sends the media) that analyses every frame."""
    run = Run(stack, tmp_path, camera_seconds=None, sampling="all")
    stack.client("kinesisvideo").create_stream(StreamName=run.name)
    return run


@contextmanager
def consumer_of(run: Run):
    """A consumer for the run; stopped (SIGTERM, exit 0) after the block, and killed if the
    test failed before that, so no process outlives the test."""
    try:
        run.start_consumer()
        yield run.consumer
    finally:
        try:
            run.stop()
        finally:
            if run.consumer is not None and run.consumer.poll() is None:
                run.consumer.kill()
                run.consumer.wait(10)


def persisted(acks: list[dict]) -> list[int]:
    return [int(a["FragmentNumber"]) for a in acks if a["EventType"] == "PERSISTED"]


def listed(run: Run) -> list[int]:
    fragments_ = run.stack.client("kinesis-video-archived-media").list_fragments(
        StreamName=run.name)["Fragments"]
    return sorted(int(f["FragmentNumber"]) for f in fragments_)


def reach_checkpoint(run: Run, last: int, timeout: float = 60) -> float:
    took = wait_for(lambda: run.checkpoint_or_none() == last, timeout,
                    "the checkpoint at the stream's last fragment")
    assert run.consumer.poll() is None, "the consumer exited"
    return took


def read_back(run: Run) -> tuple[list[dict], dict[int, set[int]]]:
    """The run's records (no id twice, checkpoints monotonic, every JPEG named in the bucket)
    and, per fragment number, the frame indexes delivered."""
    records = run.records()
    twice = [i for i, n in Counter(r["RecordId"] for r in records).items() if n > 1]
    assert not twice, f"{len(twice)} record ids delivered twice"
    assert run.checkpoints == sorted(run.checkpoints), "a checkpoint moved backwards"
    keys = bucket_keys(run)
    assert all(f["Key"] in keys for r in records for f in r.get("Frames", [])), \
        "a record names a JPEG that is not in the bucket"
    return records, delivered_frames(records).get(run.name, {})


def bucket_keys(run: Run) -> set[str]:
    pages = run.stack.client("s3").get_paginator("list_objects_v2").paginate(Bucket=run.bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def jpeg(run: Run, record: dict) -> np.ndarray:
    key = record["Frames"][0]["Key"]
    body = run.stack.client("s3").get_object(Bucket=run.bucket, Key=key)["Body"].read()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def frame_index(record: dict) -> int:
    return record["InputInformation"]["KinesisVideo"]["FrameIndex"]


def fragment_of(record: dict) -> int:
    return int(record["InputInformation"]["KinesisVideo"]["FragmentNumber"])


def assert_pictures_of_the_camera(run: Run, records: list[dict], numbers: list[int],
                                  width: int, height: int) -> None:
    """The JPEGs of the first and a middle frame of each fragment are the camera's pictures at
    the camera's size: each is nearer (mean absolute pixel difference) the test-pattern frame
    its record names than the frames next to it, and within lossy-coding error of it."""
    def difference(picture: np.ndarray, clip_frame: int) -> float:
        sent = draw_frame(width, height, clip_frame * 1000 // CAMERA_FPS, 0, clip_frame)
        return float(np.abs(picture.astype(int) - sent.astype(int)).mean())

    for record in records:
        if frame_index(record) not in (0, GOP // 2):
            continue
        clip_frame = numbers.index(fragment_of(record)) * GOP + frame_index(record)
        picture = jpeg(run, record)
        assert picture.shape == (height, width, 3)
        named = difference(picture, clip_frame)
        neighbours = [difference(picture, n) for n in (clip_frame - 1, clip_frame + 1) if n >= 0]
        assert named < 6 and named < min(neighbours), (clip_frame, named, neighbours)


def log_lines(run: Run, *words: str) -> list[str]:
    return [line for line in run.log.read_text().splitlines()
            if all(word in line for word in words)]


def status_at(run: Run, last: int) -> str:
    """The consumer's first status line for the stream once its checkpoint is at `last` (the
    status line comes every `status_seconds`: 2 s here)."""
    def lines() -> list[str]:
        return log_lines(run, f"stream {run.name}:", "decode errors", f"checkpoint {last}")
    wait_for(lines, 10, "a status line showing the last checkpoint")
    return lines()[0]


def test_damaged_h264_is_reported_once_and_never_sticks_the_checkpoint(stack, tmp_path):
    """Six 1 s fragments; in the second, three P-frames are damaged (cut short, zeroed,
    bit-flipped); in the fourth the keyframe is cut short, so nothing in it can decode. The
    service stores all six as sent. The consumer analyses every frame the decoder can make:
    all of the good fragments, the damaged one's frames up to its first damaged frame and the
    ones the decoder still rebuilds after it, none of the fourth; it warns without a traceback,
    counts both fragments in its status line, and checkpoints past both."""
    run = media_run(stack, tmp_path)
    good = fragments(encode_clip("libx264", 320, 240, 6 * GOP), now_ms())
    sent = list(good)
    sent[1] = damaged(good[1], {3: cut_short, 6: zeroed, 8: flipped})
    sent[3] = damaged(good[3], {0: cut_short})
    acks = put_all(stack.endpoints["kinesisvideo"], run.name, producer_body(sent))
    numbers = persisted(acks)
    assert len(numbers) == 6 and not [a for a in acks if a["EventType"] == "ERROR"]
    assert listed(run) == numbers  # codec payloads are not the service's business
    with consumer_of(run):
        took = reach_checkpoint(run, numbers[-1])
        status = status_at(run, numbers[-1])
    print(f"damaged H.264: checkpoint at the last fragment {took:.1f} s after the consumer "
          "started")
    _, got = read_back(run)
    for index in (0, 2, 4, 5):
        assert got.get(numbers[index]) == EVERY_FRAME, index
    partial = got.get(numbers[1], set())
    assert {0, 1, 2} <= partial < EVERY_FRAME, sorted(partial)
    assert numbers[3] not in got
    assert "Traceback" not in run.log.read_text()
    warnings = [line for line in log_lines(run, "WARNING")
                if str(numbers[1]) in line or str(numbers[3]) in line]
    # one warning a minute at most (a broken camera must not flood the log); this run is shorter
    assert len(warnings) == 1 and str(numbers[1]) in warnings[0], warnings
    assert "did not decode" in warnings[0] and "analysing the" in warnings[0]
    assert "decode errors 2," in status


def test_a_producer_dying_mid_cluster_loses_only_the_fragment_it_was_sending(stack, tmp_path):
    """A camera sends three fragments and half of a fourth, then its connection is reset; it
    comes back with a new PutMedia session and three more. The consumer is reading live all
    along. The cut fragment was announced (BUFFERING) but never PERSISTED and is not stored;
    the consumer reads past the gap into the second session, delivers every frame of the six
    stored fragments once, and checkpoints the last."""
    run = media_run(stack, tmp_path)
    camera = fragments(encode_clip("libx264", 320, 240, 7 * GOP), now_ms())
    with consumer_of(run):
        wait_for(lambda: "GetMedia connected" in run.log.read_text(), 30, "the consumer reading")
        fourth = writer.cluster(camera[3].cluster_timecode, camera[3].frames)
        cut = producer_body(camera[:3]) + fourth[:len(fourth) // 2]
        first = put_media_then_die(stack.endpoints["kinesisvideo"], run.name, cut, complete=3)
        second = put_all(stack.endpoints["kinesisvideo"], run.name, producer_body(camera[4:]))
        announced = [int(a["FragmentNumber"]) for a in first if a["EventType"] == "BUFFERING"]
        stored = persisted(first) + persisted(second)
        assert len(persisted(first)) == 3 and len(announced) == 4 and len(stored) == 6
        assert listed(run) == stored and announced[3] not in stored
        took = reach_checkpoint(run, stored[-1])
        status = status_at(run, stored[-1])
    print(f"producer died mid-cluster: checkpoint at the last fragment {took:.1f} s after the "
          "second session's fragments were persisted")
    _, got = read_back(run)
    assert got == {number: EVERY_FRAME for number in stored}
    run.check_everything_delivered_once()
    assert "Traceback" not in run.log.read_text()
    assert "decode errors 0," in status


@pytest.mark.slow
def test_a_resolution_change_mid_stream_is_analysed_at_each_size(stack, tmp_path):
    """A camera reconfigured from 320x240 to 640x480 mid-session: the producer writes a new
    EBML header, Segment and Tracks (new avcC, new pixel size) and goes on, as the KVS producer
    SDK does when codec data changes. Every frame of both parts is analysed once, each record
    and JPEG has its part's size, and the pictures are the camera's."""
    run = media_run(stack, tmp_path)
    start = now_ms()
    small = fragments(encode_clip("libx264", 320, 240, 3 * GOP), start)
    large = fragments(encode_clip("libx264", 640, 480, 3 * GOP), start + 3000)
    acks = put_all(stack.endpoints["kinesisvideo"], run.name, producer_body(small + large))
    numbers = persisted(acks)
    assert len(numbers) == 6 and listed(run) == numbers
    with consumer_of(run):
        took = reach_checkpoint(run, numbers[-1])
        status = status_at(run, numbers[-1])
    print(f"resolution change: checkpoint at the last fragment {took:.1f} s after the consumer "
          "started")
    records, got = read_back(run)
    assert got == {number: EVERY_FRAME for number in numbers}
    run.check_everything_delivered_once()
    sizes = Counter((fragment_of(r) in numbers[3:], r["Frame"]["Width"], r["Frame"]["Height"])
                    for r in records)
    assert sizes == {(False, 320, 240): 3 * GOP, (True, 640, 480): 3 * GOP}
    before = [r for r in records if fragment_of(r) in numbers[:3]]
    after = [r for r in records if fragment_of(r) in numbers[3:]]
    assert_pictures_of_the_camera(run, before, numbers[:3], 320, 240)
    assert_pictures_of_the_camera(run, after, numbers[3:], 640, 480)
    assert "decode errors 0," in status


@pytest.mark.slow
def test_hevc_is_decoded_and_every_frame_delivered_once(stack, tmp_path):
    """A camera sending H.265 (V_MPEGH/ISO/HEVC, hvcC CodecPrivate, from libx265): the consumer
    decodes it like H.264; every frame is delivered once, and the JPEGs are the camera's
    pictures."""
    run = media_run(stack, tmp_path)
    acks = put_all(stack.endpoints["kinesisvideo"], run.name,
                   producer_body(fragments(encode_clip("libx265", 320, 240, 4 * GOP), now_ms())))
    numbers = persisted(acks)
    assert len(numbers) == 4 and listed(run) == numbers
    with consumer_of(run):
        took = reach_checkpoint(run, numbers[-1])
        status = status_at(run, numbers[-1])
    print(f"HEVC: checkpoint at the last fragment {took:.1f} s after the consumer started")
    records, got = read_back(run)
    assert got == {number: EVERY_FRAME for number in numbers}
    run.check_everything_delivered_once()
    assert {(r["Frame"]["Width"], r["Frame"]["Height"]) for r in records} == {(320, 240)}
    assert_pictures_of_the_camera(run, records, numbers, 320, 240)
    assert "decode errors 0," in status
