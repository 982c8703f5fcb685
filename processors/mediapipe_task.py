"""The holder of a MediaPipe Tasks model (a landmarker or detector): one place for its lifetime.

`TaskHolder` is the base of processors.pose.PoseProcessor, processors.faces.FaceAnalyzer and
processors.hands.HandAnalyzer. The subclass builds its model and calls `_hold(model)`; then
`with self._using() as model:` runs the model under a lock (the native graph takes one call at a
time), raising RuntimeError("<ClassName> is closed") after close(); `_detect_image(rgb)` is the
common case, the model's detect() on one RGB image (made a mediapipe Image by `mp_image`, which
checks it). close() is idempotent: it swaps the model out under the lock and closes it; the
holder is a context manager that closes it on exit. Holders still open at interpreter exit are
closed by an atexit hook, since mediapipe's own finaliser prints a traceback when it runs that
late.
mediapipe is imported only by mp_image (the subclasses import it when they build their model).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Self

import numpy as np

_OPEN: weakref.WeakSet[TaskHolder] = weakref.WeakSet()


@atexit.register
def _close_open() -> None:
    """Close holders still open at exit, before mediapipe's own teardown makes that noisy."""
    for holder in list(_OPEN):
        holder.close()


def check_rgb(rgb: np.ndarray) -> None:
    """ValueError unless `rgb` is an HxWx3 uint8 (RGB) image."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got {rgb.shape} {rgb.dtype}")


def mp_image(rgb: np.ndarray):
    """`rgb` (HxWx3 uint8, checked by check_rgb) as a mediapipe SRGB Image."""
    import mediapipe as mp

    check_rgb(rgb)
    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))


class TaskHolder:
    """Holds one MediaPipe Tasks model (anything with close()); see the module docstring."""

    def _hold(self, model: Any) -> None:
        """Start holding `model` (None: a holder open without one, e.g. FaceAnalyzer with the dlib
        detector) and register for the close at exit. Call once, at the end of the constructor."""
        self._task_lock = threading.Lock()
        self._task = model
        self._task_closed = False
        _OPEN.add(self)

    @contextmanager
    def _using(self) -> Iterator[Any]:
        """The held model, under the lock; RuntimeError("<ClassName> is closed") after close()."""
        with self._task_lock:
            if self._task_closed:
                raise RuntimeError(f"{type(self).__name__} is closed")
            yield self._task

    def _detect_image(self, rgb: np.ndarray) -> Any:
        """The held model's detect() on `rgb` (HxWx3 uint8 RGB; ValueError otherwise), under the
        lock; RuntimeError after close()."""
        image = mp_image(rgb)
        with self._using() as model:
            return model.detect(image)

    def _release(self) -> None:
        """Drop what else the subclass holds; called under the lock by the first close()."""

    def close(self) -> None:
        """Release the model; idempotent. Using it after close() raises RuntimeError."""
        with self._task_lock:
            model, self._task = self._task, None
            if not self._task_closed:
                self._task_closed = True
                self._release()
        if model is not None:
            model.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
