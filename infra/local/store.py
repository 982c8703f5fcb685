"""Streams and their fragments, in memory or under a data directory, bounded by retention.

All methods run on the service's event loop thread, so no locks are needed. A new fragment wakes
every GetMedia reader of its stream through an asyncio.Event: no polling.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import shutil
import time
from collections import defaultdict, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import InvalidArgument, ResourceInUse, ResourceNotFound

STREAM_NAME = re.compile(r"^[a-zA-Z0-9_.\-]{1,256}$")
ACCOUNT_ID = "000000000000"
# Fragment numbers look like AWS's: 47 decimal digits, strictly increasing per stream.
FRAGMENT_NUMBER_BASE = 91343852333181432392682062600000000000000000000


@dataclass
class StoredFragment:
    number: int
    server_timestamp_ms: int
    producer_timestamp_ms: int
    duration_ms: int
    size: int
    head: bytes | None  # EBML header, Segment, Info, Tracks (None while only on disk)
    media: bytes | None  # the Cluster and producer Tags

    def listing(self) -> dict:
        return {
            "FragmentNumber": str(self.number),
            "FragmentSizeInBytes": self.size,
            "ProducerTimestamp": self.producer_timestamp_ms / 1000,
            "ServerTimestamp": self.server_timestamp_ms / 1000,
            "FragmentLengthInMilliseconds": self.duration_ms,
        }


@dataclass
class StreamInfo:
    name: str
    arn: str
    creation_time: float
    media_type: str = ""
    device_name: str = ""
    kms_key_id: str = ""
    retention_hours: int = 0
    version: str = "1"
    tags: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "StreamName": self.name, "StreamARN": self.arn, "Status": "ACTIVE",
            "CreationTime": self.creation_time, "MediaType": self.media_type,
            "DeviceName": self.device_name, "DataRetentionInHours": self.retention_hours,
            "KmsKeyId": self.kms_key_id or f"arn:aws:kms:local:{ACCOUNT_ID}:alias/aws/kinesisvideo",
            "Version": self.version,
        }


class Stream:
    def __init__(self, info: StreamInfo, directory: Path | None):
        self.info = info
        self.directory = directory
        self.fragments: list[StoredFragment] = []
        self.numbers: list[int] = []  # parallel to fragments, for bisect
        self.first_seq = 0  # sequence number of fragments[0]; grows as retention drops fragments
        self.last_number = FRAGMENT_NUMBER_BASE
        self.sequence = 0
        self.deleted = False
        self.putmedia_active = 0
        self.getmedia_active = 0
        self.calls: dict[str, deque] = defaultdict(deque)  # API name -> recent call times
        self._head_sizes: dict[int, int] = {}  # with a data directory: where head ends in a file
        self._changed = asyncio.Event()

    @property
    def end_seq(self) -> int:
        return self.first_seq + len(self.fragments)

    def next_fragment_number(self, server_ms: int) -> int:
        self.sequence += 1  # keeps the low digits telling apart, as AWS's numbers do
        number = max(self.last_number + 1,
                     FRAGMENT_NUMBER_BASE + server_ms * 10**10 + self.sequence % 10**10)
        self.last_number = number
        return number

    def fragment_at(self, seq: int) -> StoredFragment:
        return self.fragments[seq - self.first_seq]

    def seq_after(self, number: int) -> int:
        return self.first_seq + bisect.bisect_right(self.numbers, number)

    def seq_of(self, number: int) -> int | None:
        index = bisect.bisect_left(self.numbers, number)
        if index < len(self.numbers) and self.numbers[index] == number:
            return self.first_seq + index
        return None

    def append(self, fragment: StoredFragment) -> None:
        if self.directory is not None:
            (self.directory / f"{fragment.number}.mkv").write_bytes(fragment.head + fragment.media)
            with open(self.directory / "index.jsonl", "a") as index:
                entry = asdict(fragment) | {"head": len(fragment.head), "media": None}
                index.write(json.dumps(entry) + "\n")
            self._head_sizes[fragment.number] = len(fragment.head)
            fragment.head = fragment.media = None
        self.fragments.append(fragment)
        self.numbers.append(fragment.number)
        self.notify()

    def load(self, fragment: StoredFragment) -> tuple[bytes, bytes]:
        """The fragment's (head, media) bytes, from memory or from the data directory."""
        if fragment.head is not None and fragment.media is not None:
            return fragment.head, fragment.media
        data = (self.directory / f"{fragment.number}.mkv").read_bytes()
        head_size = self._head_sizes[fragment.number]
        return data[:head_size], data[head_size:]

    def notify(self) -> None:
        """Wake every waiting reader (new fragment, deletion)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def expire(self, cutoff_ms: int) -> None:
        drop = 0
        while drop < len(self.fragments) and self.fragments[drop].server_timestamp_ms < cutoff_ms:
            drop += 1
        if not drop:
            return
        if self.directory is not None:
            for fragment in self.fragments[:drop]:
                (self.directory / f"{fragment.number}.mkv").unlink(missing_ok=True)
        del self.fragments[:drop]
        del self.numbers[:drop]
        self.first_seq += drop


class StreamStore:
    """Every stream of the local service. `retention_seconds` caps what is kept per stream."""

    def __init__(self, region: str, data_dir: Path | None = None,
                 retention_seconds: float = 300.0):
        self.region = region
        self.data_dir = data_dir
        self.retention_seconds = retention_seconds
        self.streams: dict[str, Stream] = {}
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            self._load_data_dir()

    # --- streams ---------------------------------------------------------------------------

    def create(self, name: str, **fields) -> Stream:
        if not isinstance(name, str) or not STREAM_NAME.fullmatch(name):
            raise InvalidArgument(
                f"StreamName {name!r} must be 1-256 characters of a-z, A-Z, 0-9, '_', '.', '-'")
        if name in self.streams:
            raise ResourceInUse(f"The stream {name} already exists.")
        created = time.time()
        arn = f"arn:aws:kinesisvideo:{self.region}:{ACCOUNT_ID}:stream/{name}/{int(created * 1000)}"
        stream = Stream(StreamInfo(name, arn, created, **fields), self._stream_dir(name))
        self.streams[name] = stream
        self._save_info(stream)
        return stream

    def get(self, name: str | None = None, arn: str | None = None) -> Stream:
        if name:
            stream = self.streams.get(name)
        elif arn:
            stream = next((s for s in self.streams.values() if s.info.arn == arn), None)
        else:
            raise InvalidArgument("Specify either StreamName or StreamARN.")
        if stream is None:
            raise ResourceNotFound(f"The requested stream {name or arn} is not found or not active.")
        return stream

    def delete(self, stream: Stream) -> None:
        del self.streams[stream.info.name]
        stream.deleted = True
        stream.notify()
        if stream.directory is not None:
            shutil.rmtree(stream.directory, ignore_errors=True)

    def save(self, stream: Stream) -> None:
        self._save_info(stream)

    def expire_all(self, now_ms: int) -> None:
        for stream in self.streams.values():
            keep = self.retention_seconds
            if stream.info.retention_hours and self.data_dir is not None:
                keep = max(keep, stream.info.retention_hours * 3600)
            stream.expire(now_ms - int(keep * 1000))

    # --- persistence -----------------------------------------------------------------------

    def _stream_dir(self, name: str) -> Path | None:
        if self.data_dir is None:
            return None
        directory = self.data_dir / name
        directory.mkdir(exist_ok=True)
        return directory

    def _save_info(self, stream: Stream) -> None:
        if stream.directory is not None:
            (stream.directory / "stream.json").write_text(json.dumps(asdict(stream.info)))

    def _load_data_dir(self) -> None:
        for info_file in sorted(self.data_dir.glob("*/stream.json")):
            info = StreamInfo(**json.loads(info_file.read_text()))
            stream = Stream(info, info_file.parent)
            index = info_file.parent / "index.jsonl"
            if index.exists():
                for line in index.read_text().splitlines():
                    entry = json.loads(line)
                    if not (info_file.parent / f"{entry['number']}.mkv").exists():
                        continue  # expired
                    stream._head_sizes[entry["number"]] = entry.pop("head")
                    entry["media"] = None
                    fragment = StoredFragment(head=None, **entry)
                    stream.fragments.append(fragment)
                    stream.numbers.append(fragment.number)
                    stream.last_number = fragment.number
            self.streams[info.name] = stream
