"""Writing a simulation to files (JSON Lines, optionally gzip, byte-identical for identical
input) and the command line: ``python -m stream_app.tools.simulator --customers 2000 --days 180 --out ev.jsonl.gz``."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from stream_app.tools.simulator.engine import Simulator
from stream_app.tools.simulator.world import CustomerTruth, SimConfig, SimEvent


def open_text_out(path: Path) -> io.TextIOBase:
    """A text file to write, gzip if the name ends with ``.gz`` (byte-identical for identical input)."""
    if path.name.endswith(".gz"):
        raw = open(path, "wb")
        # mtime=0 and no file name in the header: byte-identical output for identical input.
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        return _GzipText(gz, raw)
    return open(path, "w", encoding="utf-8", newline="\n")


class _GzipText(io.TextIOWrapper):
    """Text wrapper over a GzipFile that also closes the underlying raw file."""

    def __init__(self, gz: gzip.GzipFile, raw: Any) -> None:
        super().__init__(gz, encoding="utf-8", newline="\n")  # type: ignore[arg-type]
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def write_jsonl(path: str | Path, events: Iterable[SimEvent]) -> int:
    """Write events as JSON Lines (the contract event plus ``"topic"``); gzip if ``.gz``.

    Returns the number of lines written.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "ev.jsonl.gz")
    >>> write_jsonl(p, Simulator(SimConfig(customers=2, days=1)).events()) > 0
    True
    """
    p = Path(path)
    n = 0
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with open_text_out(p) as f:
        buf: list[str] = []
        for e in events:
            row = dict(e.event)
            row["topic"] = e.topic
            buf.append(dumps(row))
            n += 1
            if len(buf) >= 4096:
                f.write("\n".join(buf))
                f.write("\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf))
            f.write("\n")
    return n


def write_truth(path: str | Path, truth: list[CustomerTruth]) -> None:
    """Write the ground truth as JSON Lines, one customer per line (gzip if ``.gz``).

    >>> import tempfile, os
    >>> sim = Simulator(SimConfig(customers=2, days=1)); _ = list(sim.events())
    >>> p = os.path.join(tempfile.mkdtemp(), "truth.jsonl"); write_truth(p, sim.truth())
    >>> len(open(p).read().splitlines())
    2
    """
    with open_text_out(Path(path)) as f:
        for t in truth:
            f.write(json.dumps(asdict(t), ensure_ascii=False, separators=(",", ":")))
            f.write("\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m stream_app.tools.simulator --customers 2000 --days 180 --out ev.jsonl.gz``."""
    ap = argparse.ArgumentParser(description="Generate a synthetic SaaS event stream (JSON Lines).")
    ap.add_argument("--customers", type=int, default=SimConfig.customers)
    ap.add_argument("--days", type=int, default=SimConfig.days)
    ap.add_argument("--start", default=SimConfig.start.date().isoformat(), help="UTC date, YYYY-MM-DD")
    ap.add_argument("--seed", type=int, default=SimConfig.seed)
    ap.add_argument("--activity-scale", type=float, default=1.0)
    ap.add_argument("--out", default=None, help="events file (.jsonl or .jsonl.gz); omit to only count")
    ap.add_argument("--truth", default=None, help="ground-truth file (.jsonl)")
    a = ap.parse_args(argv)
    start = datetime.fromisoformat(a.start)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    sim = Simulator(SimConfig(a.customers, a.days, start, a.seed, a.activity_scale))
    t0 = time.perf_counter()
    if a.out:
        n = write_jsonl(a.out, sim.events())
    else:
        n = sum(1 for _ in sim.events())
    dt = time.perf_counter() - t0
    truth = sim.truth()
    if a.truth:
        write_truth(a.truth, truth)
    churned = sum(1 for t in truth if t.cancelled_ts)
    print(f"{n} events in {dt:.2f} s ({n / max(dt, 1e-9):,.0f}/s); "
          f"{churned}/{len(truth)} customers cancelled", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
