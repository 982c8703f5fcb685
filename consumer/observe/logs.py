"""The consumer's logging: `logging.format` text (the default) or json, on stderr.

JSON: one object a line with `time` (UTC, ISO 8601, milliseconds), `level`, `logger`,
`message`, and, when the record has them, `stream` and `fragment` (a string: fragment numbers
are ~47-digit decimals, beyond a JSON reader's exact integers), then `exception` with the
traceback. `stream`/`fragment` come from the record's attributes (`log.info(...,
extra={"stream": name, "fragment": number})`) or, as every stream's log line is written
today, from a message that begins `stream NAME: ` (then `fragment NUMBER` if it follows).

`native_logs_to(path)` moves what native libraries write to descriptor 2 (MediaPipe's C++ at
model load) into a file while Python's own stderr keeps the terminal (the demo, batch mode).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("botocore", "urllib3", "werkzeug")  # at WARNING or above, whatever the level
STREAM_PREFIX = re.compile(r"^stream (\S+): (?:fragment (\d+)\b)?")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line = {"time": datetime.fromtimestamp(record.created, UTC)
                .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "level": record.levelname, "logger": record.name, "message": message}
        stream = getattr(record, "stream", None)
        fragment = getattr(record, "fragment", None)
        if stream is None:
            found = STREAM_PREFIX.match(message)
            if found:
                stream = found[1]
                fragment = fragment if fragment is not None else found[2]
        if stream is not None:
            line["stream"] = str(stream)
        if fragment is not None:
            line["fragment"] = str(fragment)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(settings) -> None:
    """The root logger per the config's `logging` section (replacing any earlier set-up)."""
    handler = logging.StreamHandler()  # stderr; stdout carries the EMF lines
    handler.setFormatter(JsonFormatter() if settings.format == "json"
                         else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=settings.level, handlers=[handler], force=True)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.root.level))


@contextmanager
def native_logs_to(path: Path | None) -> Iterator[None]:
    """Send what native code writes to stderr (file descriptor 2) to the file `path` meanwhile,
    while Python's own stderr (sys.stderr, the logging handlers writing to it, tracebacks)
    keeps the terminal. None: change nothing.

    MediaPipe 1.x's C++ (absl logging, LiteRT, TFLite) writes straight to descriptor 2, at
    model load, at the first inference and at close; it reads neither GLOG_minloglevel nor
    TF_CPP_MIN_LOG_LEVEL (measured with mediapipe 1.2.3: no effect), so only the descriptor can
    be moved. Child processes started meanwhile inherit it unless given their own stderr."""
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    old = sys.stderr
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding=getattr(old, "encoding", None),
                         errors="backslashreplace")
    handlers = [h for h in _stream_handlers() if h.stream is old]
    target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        sys.stderr = terminal
        for handler in handlers:
            handler.setStream(terminal)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(terminal.fileno(), 2)
        os.close(target)
        for handler in handlers:
            handler.setStream(old)
        sys.stderr = old
        terminal.close()


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger()] + [logging.getLogger(name)
                                       for name in logging.root.manager.loggerDict]
    return [h for logger in loggers for h in getattr(logger, "handlers", ())
            if isinstance(h, logging.StreamHandler)]
