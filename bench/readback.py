"""Reading the consumer's records back from Kinesis Data Streams while a probe runs.

`RecordPoller` polls every shard of the data stream from TRIM_HORIZON about four times a second
(GetRecords, at most 5 calls/s/shard in AWS) and keeps, per record, the camera it belongs to,
its frame's producer time, its size, the time it arrived in the stream (the record's
ApproximateArrivalTimestamp, set by Kinesis when PutRecord(s) accepted it) and the time this
poller saw it. Both record shapes are understood: this project's (the Rekognition-style
`InputInformation.KinesisVideo` block and `Frame.ProducerTime`) and the naive consumer's
(top-level `StreamName` and `ProducerTime`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Arrival:
    """One record read back."""

    stream: str
    producer_time: float  # the analysed frame's producer time, seconds since the epoch
    arrival: float  # ApproximateArrivalTimestamp (or the poll time when absent)
    polled: float  # when this poller received it
    size: int  # bytes of data
    persons: int


def parse_record(data: bytes) -> tuple[str, float, int] | None:
    """(stream, producer time, persons) of a frame record of either consumer, else None."""
    try:
        record = json.loads(data)
    except ValueError:
        return None
    video = record.get("InputInformation", {}).get("KinesisVideo")
    if video is not None:
        frame = record.get("Frame") or {}
        producer = frame.get("ProducerTime")
        if producer is None:
            producer = video["ProducerTimestamp"] + video.get("FrameOffsetInSeconds", 0.0)
        return video["StreamName"], float(producer), len(record.get("Persons") or [])
    if "StreamName" in record and "ProducerTime" in record:
        persons = record.get("PersonCount", len(record.get("Persons") or []))
        return record["StreamName"], float(record["ProducerTime"]), int(persons)
    return None


def _seconds(value) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value) if value is not None else None


class RecordPoller:
    """A thread that reads a data stream as records arrive; `stop()` returns what it read."""

    def __init__(self, kinesis_client, stream_name: str, interval: float = 0.25):
        self.client = kinesis_client
        self.stream_name = stream_name
        self.interval = interval
        self.arrivals: list[Arrival] = []
        self.unparsed = 0
        self.get_records_calls = 0
        self.errors = 0  # failed polls (retried); moto's server can fail a read racing a write
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="record-poller", daemon=True)

    def start(self) -> RecordPoller:
        shards = self.client.list_shards(StreamName=self.stream_name)["Shards"]
        self._iterators = {
            shard["ShardId"]: self.client.get_shard_iterator(
                StreamName=self.stream_name, ShardId=shard["ShardId"],
                ShardIteratorType="TRIM_HORIZON")["ShardIterator"] for shard in shards}
        self._thread.start()
        return self

    def stop(self, drain_seconds: float = 1.0) -> list[Arrival]:
        """Poll for `drain_seconds` more, stop, and return every record read."""
        time.sleep(drain_seconds)
        self._stop.set()
        self._thread.join(10)
        return self.arrivals

    def _run(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            for shard, iterator in list(self._iterators.items()):
                if iterator:
                    self._iterators[shard] = self._poll(iterator)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _poll(self, iterator: str) -> str | None:
        try:
            page = self.client.get_records(ShardIterator=iterator, Limit=10_000)
        except Exception:  # noqa: BLE001 - a throttled or failed poll is retried next time
            self.errors += 1
            return iterator
        self.get_records_calls += 1
        polled = time.time()
        for record in page["Records"]:
            parsed = parse_record(record["Data"])
            if parsed is None:
                self.unparsed += 1
                continue
            arrived = _seconds(record.get("ApproximateArrivalTimestamp")) or polled
            self.arrivals.append(Arrival(parsed[0], parsed[1], arrived, polled,
                                         len(record["Data"]), parsed[2]))
        return page.get("NextShardIterator")
