"""CPU time and memory of processes, read from /proc (Linux), for the benchmark's sampler.

    tree = process_tree(pid)                 # pid and every descendant alive now
    usage = read_usage(tree)                 # summed CPU seconds, RSS and peak RSS (VmHWM)

CPU seconds are utime + stime of each process (all its threads); a process that has exited
no longer counts, so the sampler reads its groups every second and keeps the last reading.
Peak RSS is each process's VmHWM (the kernel's high-water mark of its resident set), summed
over the group: an upper bound of the group's simultaneous peak.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Usage:
    """One reading of a group of processes."""

    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int
    processes: int


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # gone
        return None
    return text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process, 0 when it is gone."""
    fields = _stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants alive now (children of children too)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def read_usage(pids: list[int]) -> Usage:
    """Summed CPU seconds, RSS and VmHWM of the processes of `pids` still alive."""
    cpu, rss, peak, alive = 0.0, 0, 0, 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is None:
            continue
        alive += 1
        cpu += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        rss += int(fields[21]) * PAGE_BYTES
        peak += _status_kib(pid, "VmHWM") * 1024
    return Usage(cpu, rss, peak, alive)


def machine_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine (all cores, not idle or iowait), from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(value) for value in first[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return busy / CLOCK_TICKS
