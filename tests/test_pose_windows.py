"""Pose sequences per window of producer time: one file per window, rows never lost or doubled
across flushes and restarts, and fragments held back from the checkpoint until durable."""

from __future__ import annotations

import pytest

from consumer.formats import s3_layout
from consumer.formats.pose_sequence import landmark_count, read_pose_sequence
from consumer.pipeline.ledger import FragmentLedger
from consumer.pipeline.pose_windows import PoseWindows
from consumer.sinks.s3 import S3ObjectWriter
from infra.local.stack import LocalStack
from processors.base import FrameResult, Landmark, Person
from processors.frames import FrameSource

ARN = "arn:aws:kinesisvideo:us-east-1:000000000000:stream/cam/1"
LANDMARKS = tuple(Landmark(0.5, 0.5, 0.0, 1.0, 1.0) for _ in range(33))


@pytest.fixture(scope="module")
def s3():
    with LocalStack() as stack:
        client = stack.client("s3")
        client.create_bucket(Bucket="poses")
        yield client


def fetcher(client):
    def fetch(key):
        try:
            return client.get_object(Bucket="poses", Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None
    return fetch


def analysed_fragment(tracker, number: int, producer_timestamp: float, frames: int = 3,
                      landmarks=LANDMARKS):
    ticket = tracker.begin(number)
    for index in range(frames):
        source = FrameSource("cam", ARN, number, producer_timestamp, producer_timestamp,
                             index * 0.5, index)
        ticket.frame_queued()
        ticket.frame_analysed(source, FrameResult((Person((0, 0, 1, 1), 0.9, landmarks),)))
    return ticket


def rows_by_fragment(client, key: str) -> dict[str, int]:
    sequence = read_pose_sequence(client.get_object(Bucket="poses", Key=key)["Body"].read())
    counts: dict[str, int] = {}
    for number in sequence.table["fragment_number"].to_pylist():
        counts[number] = counts.get(number, 0) + 1
    return counts


def run(client, fragments: list[tuple[int, float]], landmark_set: str = "mediapipe-pose-33"):
    """One 'run' of the consumer over these fragments; returns what was checkpointed."""
    completed: list[int] = []
    writer = S3ObjectWriter(client, "poses", concurrency=2)
    windows = PoseWindows(10.0, "", writer, fetcher(client), {"model": "test"}, landmark_set)
    tracker = FragmentLedger("arn", lambda t: completed.append(t.fragment_number), windows.add)
    landmarks = LANDMARKS[:landmark_count(landmark_set)]
    tickets = [analysed_fragment(tracker, n, t, landmarks=landmarks) for n, t in fragments]
    for ticket in tickets:
        ticket.seal()
    return windows, writer, completed


def test_windows_group_fragments_and_hold_checkpoints_until_written(s3):
    windows, writer, completed = run(s3, [(1, 1000.0), (2, 1002.0), (3, 1004.0), (4, 1011.0)])
    assert writer.flush(10)
    assert completed == [1, 2, 3]  # the first window is written; fragment 4's is still open
    first = s3_layout.pose_window_key("", "cam", 1000.0, 10.0)
    assert rows_by_fragment(s3, first) == {"1": 3, "2": 3, "3": 3}
    windows.flush_all()
    assert writer.close(10)
    assert completed == [1, 2, 3, 4]
    assert rows_by_fragment(s3, s3_layout.pose_window_key("", "cam", 1010.0, 10.0)) == {"4": 3}


def test_a_restart_mid_window_merges_instead_of_overwriting(s3):
    key = s3_layout.pose_window_key("", "cam", 2000.0, 10.0)
    windows, writer, _ = run(s3, [(10, 2000.0), (11, 2002.0)])
    windows.flush_all()
    assert writer.close(10)
    # the checkpoint was at 10 when the consumer died: 11 is read again, then 12 arrives
    windows, writer, completed = run(s3, [(11, 2002.0), (12, 2004.0)])
    windows.flush_all()
    assert writer.close(10)
    assert completed == [11, 12]
    assert rows_by_fragment(s3, key) == {"10": 3, "11": 3, "12": 3}


def test_coco_keypoint_windows_merge_across_a_restart(s3):
    """YOLO pose: 17 keypoints a person, in the file and after merging with an earlier run's."""
    key = s3_layout.pose_window_key("", "cam", 3000.0, 10.0)
    windows, writer, _ = run(s3, [(20, 3000.0)], "coco-17")
    windows.flush_all()
    assert writer.close(10)
    windows, writer, completed = run(s3, [(21, 3002.0)], "coco-17")
    windows.flush_all()
    assert writer.close(10)
    assert completed == [21]
    assert rows_by_fragment(s3, key) == {"20": 3, "21": 3}
    sequence = read_pose_sequence(s3.get_object(Bucket="poses", Key=key)["Body"].read())
    assert sequence.landmarks.shape == (6, 17, 5)
