"""Helpers of the health and metrics tests: a free port, GETs, a parsed Prometheus scrape, and
the JSON lines of a consumer's log (its JSON log lines and EMF lines, apart)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """(status, body); (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def get_json(url: str) -> tuple[int, dict | None]:
    status, body = get(url)
    return status, json.loads(body) if body else None


def scrape(base: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label pairs): value} of `base`/metrics (AssertionError unless 200)."""
    status, body = get(base + "/metrics")
    assert status == 200, (status, body[:500])
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def log_lines(path: Path) -> tuple[list[dict], list[dict], list[str]]:
    """(JSON log lines, EMF lines, lines that are not JSON) of a consumer's log."""
    logs, emf, other = [], [], []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            other.append(line)
            continue
        (emf if "_aws" in parsed else logs).append(parsed)
    return logs, emf, other
