"""Writers for batch mode with the live writers' contracts, into a folder laid out as the bucket.

`FolderObjectWriter` has `S3ObjectWriter`'s `put(key, body, content_type, metadata, on_done)`:
the object is written to `<root>/<key>` through a temporary file and a rename (a reader, or a
crash, never sees half an object), then `on_written(key, path, size, content_type, metadata)`
is told (the uploader takes it from there) and `on_done(True)` is called: a local file is as
durable as a batch needs, since a crashed video is redone. A write that fails calls
`on_done(False)`; the session then fails the video.

`JsonLinesRecordWriter` has `KinesisRecordWriter`'s `put(data, partition_key, on_done, admit=)`:
one record a line in one file per video, `<root>/<key>`, truncated when the video (re)starts, so
a video redone after an interruption holds each record once.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)

Written = Callable[[str, Path, int, str, Mapping[str, str]], None]


class FolderObjectWriter:
    def __init__(self, root: Path, on_written: Written | None = None):
        self.root = Path(root)
        self.on_written = on_written
        self.objects = 0
        self.bytes = 0

    def put(self, key: str, body: bytes, content_type: str, metadata: Mapping[str, str],
            on_done: Callable[[bool], None]) -> None:
        path = self.root / key
        try:
            write_atomically(path, body)
        except OSError as err:
            log.error("cannot write %s: %s", path, err.strerror or err)
            on_done(False)
            return
        self.objects += 1
        self.bytes += len(body)
        if self.on_written is not None:
            self.on_written(key, path, len(body), content_type, dict(metadata))
        on_done(True)

    def nudge(self) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True


class JsonLinesRecordWriter:
    def __init__(self, root: Path, key: str):
        self.root = Path(root)
        self.key = key
        self.path = self.root / key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._lock = threading.Lock()

    def put(self, data: bytes, partition_key: str, on_done: Callable[[bool], None],
            admit: Callable[[], bool] | None = None) -> None:
        if admit is not None and not admit():
            on_done(False)
            return
        with self._lock:
            self._file.write(data + b"\n")
            self.records += 1
        on_done(True)

    def nudge(self) -> None:
        pass

    def flush(self, timeout: float | None = None) -> bool:
        with self._lock:
            self._file.flush()
            os.fsync(self._file.fileno())
        return True

    def close(self, timeout: float | None = None) -> bool:
        with self._lock:
            if not self._file.closed:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
        return True

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0


def write_atomically(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as f:
        f.write(body)
    os.replace(temporary, path)
