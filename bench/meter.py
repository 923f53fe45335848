"""Counting progress inside a measured process, and the sustained rate from the counts.

A ``Meter`` records a (wall time, count, process CPU seconds) mark each time the count crosses another 0.1 % of
the expected total and writes its status as JSON to a file (at most every 0.2 s, and when
done), so the bench can watch a subprocess without slowing it down. ``sustained_rate``
turns marks into events/s, leaving out the warm-up (the first 10 %) and the tail.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class Meter:
    """Counts events toward ``expected`` and reports marks to ``status_path``."""

    def __init__(self, expected: int, status_path: str | Path | None = None) -> None:
        self.expected = max(1, expected)
        self.count = 0
        self.step = max(1, self.expected // 1000)
        self.next_mark = self.step
        self.marks: list[tuple[float, int, float]] = []
        self.path = Path(status_path) if status_path else None
        self._written = 0.0
        self.done = False
        self.extra: dict[str, object] = {}

    def add(self, n: int) -> None:
        self.count += n
        if self.count >= self.next_mark:
            now = time.time()
            self.marks.append((now, self.count, time.process_time()))
            self.next_mark = (self.count // self.step + 1) * self.step
            if self.count >= self.expected:
                self.done = True
                self.write()
            elif now - self._written >= 0.2:
                self.write()

    def write(self) -> None:
        """Write the status file atomically (the reader never sees half a file)."""
        self._written = time.time()
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"count": self.count, "done": self.done, "marks": self.marks,
                                   "pid": os.getpid(), **self.extra}))
        tmp.replace(self.path)


def read_status(path: str | Path) -> dict[str, object] | None:
    try:
        return json.loads(Path(path).read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return None


Mark = tuple[float, int, float] | list[float]


def window(marks: list[Mark], complete: bool, warmup: float = 0.1, tail: float = 0.9) -> tuple[Mark, Mark] | None:
    """The marks where ``warmup`` and ``tail`` of the final count were reached (the last mark
    instead of the tail when the run was cut short by a time budget), or None if too few."""
    if len(marks) < 2:
        return None
    final = marks[-1][1]
    lo = next(m for m in marks if m[1] >= warmup * final)
    hi = next(m for m in marks if m[1] >= tail * final) if complete else marks[-1]
    if hi[0] <= lo[0]:
        lo, hi = marks[0], marks[-1]
    return (lo, hi) if hi[0] > lo[0] else None


def sustained_rate(marks: list[Mark], complete: bool, warmup: float = 0.1, tail: float = 0.9) -> float:
    """Events/s over ``window``: the warm-up and the tail left out.

    >>> sustained_rate([(0.0, 0, 0.0), (1.0, 10, 0.5), (2.0, 50, 1.0), (3.0, 90, 1.5), (4.0, 100, 2.0)], True)
    40.0
    >>> sustained_rate([], complete=True)
    0.0
    """
    w = window(marks, complete, warmup, tail)
    return (w[1][1] - w[0][1]) / (w[1][0] - w[0][0]) if w else 0.0


def cpu_per_1k(marks: list[Mark], complete: bool, warmup: float = 0.1, tail: float = 0.9) -> float:
    """CPU seconds per 1,000 events over the same window (marks carry process CPU time).

    >>> cpu_per_1k([(0.0, 0, 0.0), (1.0, 10, 0.5), (2.0, 50, 1.0), (3.0, 90, 1.5), (4.0, 100, 2.0)], True)
    12.5
    """
    w = window(marks, complete, warmup, tail)
    if not w or len(w[0]) < 3 or w[1][1] == w[0][1]:
        return 0.0
    return (w[1][2] - w[0][2]) / (w[1][1] - w[0][1]) * 1000
