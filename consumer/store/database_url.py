"""The event store's database URL: where it comes from when not given, and how it is shown.
Nothing the project logs or serves holds its password."""

from __future__ import annotations

import re
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DATABASE_URL_ENV = "KVS_ANALYTICS_DATABASE_URL"  # for events sync, events kcl and serve


def display_dsn(dsn: str) -> str:
    """`dsn` as key=value without the password (a URL's too)."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    parts.pop("password", None)
    return make_conninfo("", **parts)


def redact(text: str, dsn: str) -> str:
    """`text` (an error message) with the password in `dsn`, plain or URL-quoted, masked."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None
    if password:
        for form in {password, quote(password, safe=""), quote(password)}:
            text = text.replace(form, "***")
    text = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)
