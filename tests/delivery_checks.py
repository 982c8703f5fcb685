"""What a user checks after any run, fault or not: every record id once, and every frame of every
fragment up to the stream's checkpoint delivered (compared with a clean decode of the stream)."""

from __future__ import annotations

from collections import Counter

from consumer.config import Sampling
from consumer.pipeline.decode import StreamDecoder
from consumer.wire import iter_fragments


def delivered_frames(records: list[dict]) -> dict[str, dict[int, set[int]]]:
    """Stream name -> fragment number -> frame indexes with a frame record."""
    got: dict[str, dict[int, set[int]]] = {}
    for record in records:
        if record.get("RecordType") == "Event":
            continue
        video = record["InputInformation"]["KinesisVideo"]
        got.setdefault(video["StreamName"], {}).setdefault(
            int(video["FragmentNumber"]), set()).add(video["FrameIndex"])
    return got


def expected_frames(media, name: str, last: int, fps: float | None) -> dict[int, set[int]]:
    """The frames a clean run analyses up to fragment `last` (GetMedia from EARLIEST, decoded
    with the same sampling: `fps`, or every frame for None); `media` is a kinesis-video-media
    client."""
    response = media.get_media(StreamName=name,
                               StartSelector={"StartSelectorType": "EARLIEST"})
    sampling = Sampling(mode="fps", fps=fps) if fps is not None else Sampling(mode="all")
    decoder = StreamDecoder(name, "arn", sampling)
    expected: dict[int, set[int]] = {}
    try:
        for fragment in iter_fragments(response["Payload"]):
            if fragment.fragment_number > last:
                break
            expected[fragment.fragment_number] = {f.source.frame_index
                                                  for f in decoder.decode(fragment)}
            if fragment.fragment_number == last:
                break  # not waiting for the response to end
    finally:
        response["Payload"].close()
        decoder.close()
    return expected


def assert_delivered_once_and_complete(records: list[dict], checkpoints: dict[str, int | None],
                                       media, fps: float | None) -> None:
    ids = Counter(r["RecordId"] for r in records)
    assert not [i for i, n in ids.items() if n > 1], "a record id was delivered twice"
    got = delivered_frames(records)
    for name, checkpoint in checkpoints.items():
        assert checkpoint is not None, f"{name} was never checkpointed"
        expected = expected_frames(media, name, checkpoint, fps)
        assert expected, name
        for number, frames in expected.items():
            assert got.get(name, {}).get(number) == frames, (name, number)
