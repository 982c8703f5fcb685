"""The Firehose leg of the local stack: Kinesis Data Streams -> S3, as the stack's delivery
stream does it in AWS (infra/cloudformation/kvs-analytics.yaml, DeliveryStream). moto accepts a
delivery stream with a Kinesis source but never reads the source; this bridge does.

What it writes is what that delivery stream writes, so the demo and the tests build the same
lake as AWS:
- Partitions from each record, as its MetadataExtraction query says: `type` = RecordType,
  `stream` = the stream name (a batch file's video id), `date` = the UTC day of the fragment's
  producer timestamp; objects under
  `{prefix}records/type={type}/stream={stream}/date={YYYY-MM-DD}/`, named as Firehose names
  them (`{delivery stream}-1-{YYYY-MM-DD-HH-MM-SS}-{uuid}.json.gz`), GZIP, one JSON record a
  line (AppendDelimiterToRecord).
- Buffering hints: a partition's buffer is written when it holds `buffer_bytes` or its oldest
  record has waited `buffer_seconds`, and everything at `stop()`.
- A record that is not JSON, or lacks a partition key, goes to
  `{prefix}records-errors/processing-failed/date={today}/`, as Firehose's error output does.

Like Firehose, it delivers at least once: it keeps its shard positions in memory, so a bridge
started again reads each shard from its start (TRIM_HORIZON: a bridge started after the consumer
still sees every record; AWS's delivery stream starts at its creation).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from consumer.cloud.shards import ShardReader
from consumer.formats.s3_layout import check_stream_name

log = logging.getLogger(__name__)
RECORD_TYPE = re.compile(r"[A-Za-z]{1,32}")

DEFAULT_BUFFER_SECONDS = 60.0  # the stack's FirehoseBufferSeconds default
DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024  # its SizeInMBs
POLL_SECONDS = 0.5


def partition_of(record: dict) -> tuple[str, str, str]:
    """(type, stream, date) of a record, as the delivery stream's query extracts them; raises
    ValueError when one is missing or is not safe in a key."""
    where = record.get("InputInformation") or {}
    origin = where.get("KinesisVideo") or where.get("File") or {}
    kind = record.get("RecordType")
    stream = origin.get("StreamName") or origin.get("VideoId")
    timestamp = origin.get("ProducerTimestamp")
    if not isinstance(kind, str) or not RECORD_TYPE.fullmatch(kind) \
            or not isinstance(timestamp, int | float) or isinstance(timestamp, bool):
        raise ValueError("no RecordType or producer timestamp")
    check_stream_name(stream)  # before it becomes part of a key
    day = datetime.fromtimestamp(int(timestamp), UTC).strftime("%Y-%m-%d")
    return kind, stream, day


@dataclass
class _Buffer:
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    since: float = 0.0  # monotonic time of its oldest record


class FirehoseBridge:
    def __init__(self, kinesis, s3, stream: str, bucket: str, prefix: str = "",
                 delivery_stream: str = "kvs-analytics-records",
                 buffer_seconds: float = DEFAULT_BUFFER_SECONDS,
                 buffer_bytes: int = DEFAULT_BUFFER_BYTES):
        self.kinesis = kinesis
        self.s3 = s3
        self.stream = stream
        self.bucket = bucket
        self.prefix = prefix
        self.delivery_stream = delivery_stream
        self.buffer_seconds = buffer_seconds
        self.buffer_bytes = buffer_bytes
        self.records = 0  # read from the data stream
        self.objects = 0  # written to S3
        self.errors = 0  # records sent to the error output
        self._buffers: dict[tuple[str, str, str] | None, _Buffer] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="firehose", daemon=True)

    def start(self) -> FirehoseBridge:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Read what the shards hold now, write every buffer, and stop."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        # moto's data stream has no per-shard call limit to keep to
        reader = ShardReader(self.kinesis, self.stream, min_call_seconds=0)
        while True:
            stopping = self._stop.is_set()
            try:
                got = self._read(reader)
                self._flush(force=stopping)
            except Exception:  # a bad turn must not end the bridge: try again
                log.exception("firehose bridge: delivery failed; retrying")
                got = 0
            if stopping:
                return
            if not got:
                self._stop.wait(POLL_SECONDS)

    def _read(self, reader: ShardReader) -> int:
        got = 0
        for batch in reader.poll():
            for data in batch.records:
                self._add(data)
            got += len(batch.records)
        self.records += got
        return got

    def _add(self, data: bytes) -> None:
        try:
            key = partition_of(json.loads(data))
        except (ValueError, TypeError, AttributeError):
            key = None  # the error output
            self.errors += 1
        line = data.rstrip(b"\n") + b"\n"
        buffer = self._buffers.setdefault(key, _Buffer())
        if not buffer.lines:
            buffer.since = time.monotonic()
        buffer.lines.append(line)
        buffer.size += len(line)
        if buffer.size >= self.buffer_bytes:  # full: written now, not after the batch read
            self._write(key, buffer)
            del self._buffers[key]

    def _flush(self, force: bool) -> None:
        now = time.monotonic()
        for key, buffer in list(self._buffers.items()):
            if buffer.lines and (force or now - buffer.since >= self.buffer_seconds):
                self._write(key, buffer)
                del self._buffers[key]

    def _write(self, key: tuple[str, str, str] | None, buffer: _Buffer) -> None:
        stamp = datetime.now(UTC)
        if key is None:
            folder = f"records-errors/processing-failed/date={stamp:%Y-%m-%d}/"
        else:
            kind, stream, day = key
            folder = f"records/type={kind}/stream={stream}/date={day}/"
        name = f"{self.delivery_stream}-1-{stamp:%Y-%m-%d-%H-%M-%S}-{uuid.uuid4()}.json.gz"
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}{folder}{name}",
                           Body=gzip.compress(b"".join(buffer.lines)),
                           ContentType="application/json", ContentEncoding="gzip")
        self.objects += 1
