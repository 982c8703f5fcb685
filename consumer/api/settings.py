"""The read API's settings: a frozen dataclass, validated when made (a ValueError names the
command-line option).

`url_expiry` is at most an hour: a URL handed to a browser is a bearer token for the object,
and an event list is cheap to fetch again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from consumer.api import MAX_URL_EXPIRY
from consumer.store.database_url import DATABASE_URL_ENV, display_dsn


@dataclass(frozen=True)
class ApiSettings:
    database_url: str = field(repr=False)  # libpq key=value or postgresql:// URL; may hold a password
    url_expiry: int = 900  # seconds a presigned URL stays valid, 1..3600
    endpoint_url: str | None = None  # S3 endpoint (the local stack); None: AWS
    region: str | None = None  # None: the usual chain
    host: str = "127.0.0.1"
    port: int = 8080

    def __post_init__(self) -> None:
        if not isinstance(self.database_url, str) or not self.database_url.strip():
            raise ValueError(f"--database-url: no database given (or set {DATABASE_URL_ENV})")
        try:
            conninfo_to_dict(self.database_url)
        except psycopg.ProgrammingError:
            raise ValueError("--database-url: not a libpq connection string or "
                             "postgresql:// URL") from None
        if (not isinstance(self.url_expiry, int) or isinstance(self.url_expiry, bool)
                or not 1 <= self.url_expiry <= MAX_URL_EXPIRY):
            raise ValueError(f"--url-expiry must be 1..{MAX_URL_EXPIRY} seconds (presigned URLs "
                             f"last at most an hour): got {self.url_expiry!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be 0..65535: got {self.port!r}")
        if not self.host:
            raise ValueError("--host: empty")

    @property
    def safe_database_url(self) -> str:
        """The connection string without its password, for logs."""
        return display_dsn(self.database_url)

    def connect_info(self) -> str:
        """The connection string, with a 5 s connect timeout unless it sets one."""
        if "connect_timeout" in conninfo_to_dict(self.database_url):
            return self.database_url
        return make_conninfo(self.database_url, connect_timeout=5)
