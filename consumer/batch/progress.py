"""What a batch shows while it runs.

On a terminal (`BarReporter`, tqdm): an overall bar in seconds of video (so its rate is video
seconds per second and its ETA counts what is left of every video, not the number of files) with
frames analysed per second and the videos done, skipped and failed, and one bar per worker with
the video in hand. Elsewhere
(`LineReporter`: CI, a log file, a pipe): one line per video when it ends, and nothing else.
Both print skipped and failed videos with their reason.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from consumer.batch.plan import Planned


def describe(outcome: dict) -> str:
    """One line's worth of a finished video: what it gave and how fast."""
    seconds = outcome.get("seconds") or 0.0
    duration = outcome.get("video_seconds")
    speed = f", {duration / seconds:.1f}x real time" if duration and seconds else ""
    return (f"{outcome.get('frames_analysed', 0)} frames analysed, "
            f"{outcome.get('persons', 0)} persons, {outcome.get('events', 0)} events, "
            f"{len(outcome.get('outputs', []))} outputs, {seconds:.1f} s{speed}")


class LineReporter:
    def __init__(self, out: TextIO | None = None):
        self.out = out or sys.stdout

    def _line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def start(self, planned: list[Planned], workers: int) -> None:
        todo = [p for p in planned if p.action == "analyse"]
        seconds = sum(p.duration_seconds or 0 for p in todo)
        self._line(f"batch: {len(todo)} video{'s' if len(todo) != 1 else ''} to analyse ({seconds:.0f} s of video) with "
                   f"{workers} worker{'s' if workers != 1 else ''}; "
                   f"{sum(p.action == 'skip' for p in planned)} skipped")

    def skipped(self, item: Planned) -> None:
        self._line(f"skipped  {item.relative}: {item.reason}")

    def started(self, worker: int, item: Planned) -> None:
        pass

    def progress(self, worker: int, item: Planned, seconds: float, frames: int = 0) -> None:
        pass

    def finished(self, worker: int, item: Planned, outcome: dict) -> None:
        status = outcome.get("status")
        if status == "done":
            self._line(f"done     {item.relative}: {describe(outcome)}")
        else:
            self._line(f"{status:<8} {item.relative}: {outcome.get('error') or 'stopped'}")

    def message(self, text: str) -> None:
        self._line(text)

    def close(self) -> None:
        pass


class BarReporter(LineReporter):
    def __init__(self, out: TextIO | None = None):
        super().__init__(out or sys.stderr)
        self.total = None
        self.bars: dict[int, object] = {}
        self.done: dict[str, float] = {}  # per video, seconds read
        self.frames: dict[str, int] = {}  # per video, frames analysed
        self.began = time.monotonic()
        self.counts = {"done": 0, "failed": 0, "skipped": 0, "interrupted": 0}

    def _line(self, text: str) -> None:
        if self.total is not None:
            self.total.write(text, file=self.out)
        else:
            super()._line(text)

    def start(self, planned: list[Planned], workers: int) -> None:
        from tqdm import tqdm
        super().start(planned, workers)
        todo = [p for p in planned if p.action == "analyse"]
        self.counts["skipped"] = sum(p.action == "skip" for p in planned)
        self.total = tqdm(total=round(sum(p.duration_seconds or 0 for p in todo), 1),
                          unit="s", desc="all videos", position=0, file=self.out,
                          dynamic_ncols=True, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                          "{n:.0f}/{total:.0f} s of video [{elapsed}<{remaining}, "
                          "{rate_fmt}]{postfix}")
        self.total.set_postfix_str(self._counts())
        for index in range(workers):
            self.bars[index] = tqdm(total=1, unit="s", desc=f"worker {index + 1}: waiting",
                                    position=index + 1, file=self.out, dynamic_ncols=True,
                                    leave=False, bar_format="{desc} {percentage:3.0f}%|{bar}|")

    def _counts(self) -> str:
        rate = sum(self.frames.values()) / max(1e-6, time.monotonic() - self.began)
        counts = ", ".join(f"{n} {name}" for name, n in self.counts.items() if n)
        return f"{rate:.1f} frames/s analysed" + (f", {counts}" if counts else "")

    def started(self, worker: int, item: Planned) -> None:
        bar = self.bars.get(worker)
        if bar is not None:
            bar.reset(total=max(1.0, round(item.duration_seconds or 1.0, 1)))
            bar.set_description_str(f"worker {worker + 1}: {item.relative[-40:]}")

    def progress(self, worker: int, item: Planned, seconds: float, frames: int = 0) -> None:
        before = self.done.get(item.key, 0.0)
        if seconds > before and self.total is not None:
            self.total.update(round(seconds - before, 3))
            self.done[item.key] = seconds
        self.frames[item.key] = max(self.frames.get(item.key, 0), frames)
        if self.total is not None:
            self.total.set_postfix_str(self._counts())
        bar = self.bars.get(worker)
        if bar is not None:
            bar.n = min(bar.total, seconds)
            bar.refresh()

    def finished(self, worker: int, item: Planned, outcome: dict) -> None:
        status = outcome.get("status", "failed")
        self.counts[status] = self.counts.get(status, 0) + 1
        if status == "done" and item.duration_seconds:
            self.progress(worker, item, item.duration_seconds)
        if self.total is not None:
            self.total.set_postfix_str(self._counts())
        bar = self.bars.get(worker)
        if bar is not None:
            bar.reset(total=1)
            bar.set_description_str(f"worker {worker + 1}: waiting")
        super().finished(worker, item, outcome)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        if self.total is not None:
            self.total.close()
            self.total = None


def reporter_for(out: TextIO | None = None) -> LineReporter:
    stream = out or sys.stderr
    return BarReporter(stream) if stream.isatty() else LineReporter(sys.stdout)
