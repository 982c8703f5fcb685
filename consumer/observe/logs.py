"""The consumer's logging: `logging.format` text (the default) or json, on stderr.

JSON: one object a line with `time` (UTC, ISO 8601, milliseconds), `level`, `logger`,
`message`, and, when the record has them, `stream` and `fragment` (a string: fragment numbers
are ~47-digit decimals, beyond a JSON reader's exact integers), then `exception` with the
traceback. `stream`/`fragment` come from the record's attributes (`log.info(...,
extra={"stream": name, "fragment": number})`) or, as every stream's log line is written
today, from a message that begins `stream NAME: ` (then `fragment NUMBER` if it follows).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

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
