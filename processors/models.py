"""Find a processor's model file; download a missing one once from its published URL.

`resolve_model(name, models_dir)` returns `models_dir/name` (with `~` expanded) when it exists;
`name` may also be a pose variant, `lite`, `full` or `heavy`, meaning
`pose_landmarker_{variant}.task` (`model_file_name`, the one place that mapping lives).
Otherwise, if downloads are allowed and the name has a published URL (Google's MediaPipe pose
landmarker bundles), it is fetched once into that folder: written to a temporary file beside it,
checked (a `.task` bundle is a ZIP archive, so an HTML error page is never kept), flushed, then
renamed into place, so a crash or a concurrent download never leaves a half model under the real
name. Any failure, or a missing file with downloads off, raises `ModelNotFoundError`, whose message
names the file, the folder to put it in and the URL to get it from.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

POSE_URL = ("https://storage.googleapis.com/mediapipe-models/pose_landmarker/"
            "pose_landmarker_{variant}/float16/latest/pose_landmarker_{variant}.task")
# `processing.pose.model` shorthands: each names Google's bundle pose_landmarker_{variant}.task
POSE_VARIANTS = ("lite", "full", "heavy")
PUBLISHED: dict[str, str] = {
    f"pose_landmarker_{variant}.task": POSE_URL.format(variant=variant)
    for variant in POSE_VARIANTS
}
DOWNLOAD_TIMEOUT_S = 120.0
_CHUNK = 1 << 16
_ZIP_MAGIC = b"PK\x03\x04"


class ModelNotFoundError(FileNotFoundError):
    """A model file is absent and could not be downloaded; `path` is where it belongs."""

    def __init__(self, message: str, path: Path, url: str | None):
        super().__init__(message)
        self.path = path
        self.url = url


def model_file_name(name: str) -> str:
    """The file a model name means: a pose variant (`lite`, `full`, `heavy`) is
    `pose_landmarker_{variant}.task`; any other name is a file name already."""
    return f"pose_landmarker_{name}.task" if name in POSE_VARIANTS else name


def published_url(name: str) -> str | None:
    """Google's published URL for a known model file name, else None."""
    return PUBLISHED.get(name)


def resolve_model(name: str, models_dir: str | os.PathLike[str], *, download: bool = True,
                  url: str | None = None, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """The path of model `name` in `models_dir`, downloading it first when missing and allowed.

    `url` overrides the published URL (tests point it at an unreachable address); `timeout`
    bounds the whole download in seconds. `name` may be a pose variant (model_file_name).
    Raises ModelNotFoundError.
    """
    name = model_file_name(name)
    folder = Path(models_dir).expanduser()
    path = folder / name
    if path.is_file():
        return path
    url = url or published_url(name)
    if not download or url is None:
        why = ("downloads are off (processing.pose.download: false)" if url is not None
               else "it has no known download URL")
        raise ModelNotFoundError(_message(path, url, f"it is missing and {why}"), path, url)
    try:
        _download(url, path, timeout)
    except Exception as err:
        reason = f"the download failed: {type(err).__name__}: {err}"
        raise ModelNotFoundError(_message(path, url, reason), path, url) from err
    return path


def _message(path: Path, url: str | None, reason: str) -> str:
    where = f"download it from {url} and " if url else ""
    return (f"model file {path.name} not found in {path.parent}: {reason}. To fix: {where}put "
            f"{path.name} into {path.parent} (or point processing.pose.models_dir, env "
            f"KVSA_PROCESSING__POSE__MODELS_DIR, at a folder that holds it).")


def _download(url: str, path: Path, timeout: float) -> None:
    """Fetch `url` to `path` atomically: temp file in the same folder, fsync, rename."""
    log.info("downloading model %s from %s", path.name, url)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            head = b""
            while chunk := response.read(_CHUNK):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not complete after {timeout:g} s")
                head = head or chunk[:4]
                out.write(chunk)
            if path.suffix == ".task" and head != _ZIP_MAGIC:
                raise ValueError("the response is not a .task bundle (not a ZIP archive)")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    log.info("model %s saved to %s", path.name, path)
