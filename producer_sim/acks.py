"""PutMedia acknowledgements: what the service streams back while the body is still going up.

The response body of a PutMedia request is JSON objects, one per line: BUFFERING, RECEIVED,
PERSISTED, ERROR (with ErrorId/ErrorCode) and IDLE keep-alives. This module holds their model
(`AckEvent`, `Ack`), the incremental parser of the response bytes (`AckParser`), and the
classification of ack error ids (`ACK_ERRORS`, `ack_error_action`) into what the producer should
do (`ErrorAction`: retry, skip the fragment, or stop). The transport is `putmedia`.
"""

from __future__ import annotations

import codecs
import enum
import json
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


class AckEvent(str, enum.Enum):
    BUFFERING = "BUFFERING"
    RECEIVED = "RECEIVED"
    PERSISTED = "PERSISTED"
    ERROR = "ERROR"
    IDLE = "IDLE"


class ErrorAction(str, enum.Enum):
    """What an error means for the producer."""

    RETRY = "retry"  # transient: reconnect with backoff, send the fragment again
    SKIP = "skip"  # this fragment is rejected for good: drop it and go on
    FATAL = "fatal"  # nothing this producer does will help (a person must act): stop


# PutMedia acknowledgement error ids (AWS PutMedia documentation), with their handling.
ACK_ERRORS: dict[int, tuple[str, ErrorAction]] = {
    4000: ("STREAM_READ_ERROR", ErrorAction.RETRY),
    4001: ("MAX_FRAGMENT_SIZE_REACHED", ErrorAction.SKIP),  # over 50 MB
    4002: ("MAX_FRAGMENT_DURATION_REACHED", ErrorAction.SKIP),  # over 10 s
    4003: ("MAX_CONNECTION_DURATION_REACHED", ErrorAction.RETRY),  # 45 min: reconnect
    4004: ("FRAGMENT_TIMECODE_LESSER_THAN_PREVIOUS", ErrorAction.SKIP),
    4005: ("MORE_THAN_ALLOWED_TRACKS_FOUND", ErrorAction.SKIP),
    4006: ("INVALID_MKV_DATA", ErrorAction.SKIP),
    4007: ("INVALID_PRODUCER_TIMESTAMP", ErrorAction.SKIP),
    4008: ("STREAM_NOT_ACTIVE", ErrorAction.RETRY),
    4009: ("FRAGMENT_METADATA_LIMIT_REACHED", ErrorAction.SKIP),
    4010: ("TRACK_NUMBER_MISMATCH", ErrorAction.SKIP),
    4011: ("FRAMES_MISSING_FOR_TRACK", ErrorAction.SKIP),
    4500: ("KMS_KEY_ACCESS_DENIED", ErrorAction.FATAL),
    4501: ("KMS_KEY_DISABLED", ErrorAction.FATAL),
    4502: ("KMS_KEY_VALIDATION_ERROR", ErrorAction.FATAL),
    4503: ("KMS_KEY_UNAVAILABLE", ErrorAction.RETRY),
    4504: ("KMS_KEY_INVALID_USAGE", ErrorAction.FATAL),
    4505: ("KMS_KEY_INVALID_STATE", ErrorAction.FATAL),
    4506: ("KMS_KEY_NOT_FOUND", ErrorAction.FATAL),
    5000: ("INTERNAL_ERROR", ErrorAction.RETRY),
    5001: ("ARCHIVAL_ERROR", ErrorAction.RETRY),
}


def ack_error_action(error_id: int | None) -> ErrorAction:
    if error_id in ACK_ERRORS:
        return ACK_ERRORS[error_id][1]
    if error_id is not None and 4500 <= error_id < 4600:
        return ErrorAction.FATAL
    if error_id is not None and 4000 <= error_id < 4500:
        return ErrorAction.SKIP
    return ErrorAction.RETRY  # 5xxx and unknown: the service's trouble, try again


@dataclass(frozen=True, slots=True)
class Ack:
    """One PutMedia acknowledgement."""

    event_type: str
    fragment_timecode: int | None = None
    fragment_number: str | None = None
    error_id: int | None = None
    error_code: str | None = None

    @classmethod
    def from_json(cls, obj: dict) -> Ack:
        def integer(value):
            try:
                return int(value) if value is not None else None
            except (TypeError, ValueError):
                return None

        number = obj.get("FragmentNumber")
        return cls(
            event_type=str(obj.get("EventType", "")).upper(),
            fragment_timecode=integer(obj.get("FragmentTimecode")),
            fragment_number=str(number) if number is not None else None,
            error_id=integer(obj.get("ErrorId")),
            error_code=obj.get("ErrorCode"),
        )

    @property
    def is_error(self) -> bool:
        return self.event_type == AckEvent.ERROR

    @property
    def action(self) -> ErrorAction | None:
        return ack_error_action(self.error_id) if self.is_error else None

    @property
    def error_name(self) -> str:
        if self.error_code:
            return self.error_code
        return ACK_ERRORS.get(self.error_id, ("UNKNOWN_ERROR", None))[0]

    def describe(self) -> str:
        where = f" for fragment {self.fragment_timecode}" if self.fragment_timecode is not None else ""
        if self.is_error:
            return f"PutMedia error {self.error_id} {self.error_name}{where}"
        return f"{self.event_type}{where}"


class AckParser:
    """Acknowledgements from response body bytes: JSON objects separated by newlines (or not)."""

    MAX_BUFFER = 64 * 1024

    def __init__(self):
        self._decoder = json.JSONDecoder()
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buf = ""

    def feed(self, data: bytes, final: bool = False) -> list[Ack]:
        self._buf += self._text.decode(data, final)
        acks: list[Ack] = []
        while True:
            buf = self._buf.lstrip()
            if not buf:
                self._buf = ""
                return acks
            if not buf.startswith("{"):
                skip = buf.find("\n")
                skip = len(buf) if skip < 0 else skip + 1
                log.warning("ignoring non-JSON PutMedia response data: %r", buf[:skip][:200])
                self._buf = buf[skip:]
                continue
            try:
                obj, end = self._decoder.raw_decode(buf)
            except json.JSONDecodeError:
                if final or len(buf) > self.MAX_BUFFER:
                    line_end = buf.find("\n")
                    cut = len(buf) if line_end < 0 or final else line_end + 1
                    log.warning("ignoring malformed PutMedia acknowledgement: %r", buf[:cut][:200])
                    self._buf = buf[cut:]
                    continue
                self._buf = buf  # incomplete: wait for more bytes
                return acks
            self._buf = buf[end:]
            if isinstance(obj, dict):
                acks.append(Ack.from_json(obj))
