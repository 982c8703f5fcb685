"""`manifest.json`: what a batch did to which video, written as it goes.

One entry per video, keyed by the SHA-256 of its bytes (a file that cannot be hashed, such as one
that vanished, by `path:<its path>`): its path, size, video id, status (`running`, `done`,
`failed`, `interrupted`), the error when it failed, duration, frames read and analysed, persons,
events, outputs (key and bytes each), timings and attempts. Every change is written at once
through a temporary file and a rename, so the file on disk is always whole: after an
interruption (Ctrl-C, a crash, a power cut) the next run reads it, skips what is `done` and
redoes the rest. With a bucket, the manifest is also kept under the prefix, and read from there
when the folder has none (another machine, a fresh staging folder).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from consumer.batch.folder_sinks import write_atomically

VERSION = 1


class ManifestError(Exception):
    """The manifest exists but cannot be read: named, never overwritten."""


class Manifest:
    def __init__(self, path: Path | None, entries: dict[str, dict] | None = None):
        self.path = Path(path) if path is not None else None  # None: read only (a plan)
        self.videos: dict[str, dict] = entries or {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | None, fallback: bytes | None = None) -> Manifest:
        """The manifest at `path`; else the one in `fallback` (from S3); else an empty one.
        Without a path it is read only (what a plan looks at)."""
        path = Path(path) if path is not None else None
        text = path.read_bytes() if path is not None and path.exists() else fallback
        if text is None:
            return cls(path)
        try:
            data = json.loads(text)
            videos = data["videos"]
            if not isinstance(videos, dict):
                raise TypeError("videos is not a mapping")
        except (ValueError, KeyError, TypeError) as err:
            where = path if path is not None and path.exists() else "the bucket's manifest.json"
            raise ManifestError(f"{where}: not a batch manifest ({err}); move it away or give "
                                "another --output-dir") from None
        return cls(path, videos)

    def entry(self, key: str) -> dict | None:
        return self.videos.get(key)

    def is_done(self, key: str) -> bool:
        entry = self.videos.get(key)
        return entry is not None and entry.get("status") == "done"

    def update(self, key: str, **fields) -> dict:
        with self._lock:
            entry = self.videos.setdefault(key, {})
            entry.update(fields)
            entry["updated_at"] = time.time()
            self._write()
            return dict(entry)

    def save(self) -> None:
        """Write it as it is (a manifest read from the bucket, kept in the folder too)."""
        with self._lock:
            self._write()

    def to_bytes(self) -> bytes:
        with self._lock:
            return self._encode()

    def _encode(self) -> bytes:
        counts: dict[str, int] = {}
        for entry in self.videos.values():
            counts[entry.get("status", "?")] = counts.get(entry.get("status", "?"), 0) + 1
        return json.dumps({"version": VERSION, "updated_at": time.time(), "counts": counts,
                           "videos": self.videos}, indent=1, sort_keys=False).encode()

    def _write(self) -> None:
        if self.path is None:
            raise RuntimeError("a read-only manifest (a plan's) is never written")
        write_atomically(self.path, self._encode())
