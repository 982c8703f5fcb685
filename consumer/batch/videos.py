"""Which files a batch analyses, and who each one is: its content hash and its video id.

`find_videos` takes folders (searched recursively for the configured file name endings) and
files (taken whatever their ending: the user named them). A video's identity is the SHA-256 of
its bytes: a renamed or moved copy is the same video, an edited one is another. Its video id,
`<stem>-<first 12 hex of the hash>`, is the stream name its outputs are keyed by
(`stream=<video id>` in the S3 layout): readable, safe in a key (the stem is reduced to
[A-Za-z0-9_.-]) and distinct for different contents of one name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

HASH_CHUNK = 1 << 20
STEM_CHARS = 64


@dataclass(frozen=True)
class Video:
    path: Path  # as found (absolute when the input was)
    relative: str  # relative to the folder it was found in; its name when given as a file


@dataclass(frozen=True)
class Missing:
    path: str
    reason: str


def find_videos(inputs: Sequence[str | Path], extensions: Iterable[str]
                ) -> tuple[list[Video], list[Missing]]:
    """The videos under `inputs` in a stable order (each folder's files sorted by path), each
    once; inputs that do not exist come back as Missing."""
    endings = tuple(e.lower() for e in extensions)
    found: list[Video] = []
    missing: list[Missing] = []
    seen: set[Path] = set()
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            candidates = sorted(p for p in path.rglob("*")
                                if p.is_file() and p.name.lower().endswith(endings))
            pairs = [(p, p.relative_to(path).as_posix()) for p in candidates]
        elif path.is_file():
            pairs = [(path, path.name)]
        else:
            missing.append(Missing(str(given), "no such file or folder"))
            continue
        for file, relative in pairs:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                found.append(Video(file, relative))
    return found, missing


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def video_id(relative: str, sha256: str) -> str:
    """`<stem>-<hash[:12]>`, a legal Kinesis Video stream name (so every key rule applies)."""
    stem = re.sub(r"[^A-Za-z0-9_.\-]+", "_", Path(relative).stem).strip("._")[:STEM_CHARS]
    return f"{stem or 'video'}-{sha256[:12]}"
