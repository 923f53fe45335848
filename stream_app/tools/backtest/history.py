"""The backtest's input: a history file (contract JSON Lines, optionally gzip), scanned once for
its customers, cancellations and time span, then read in event-time order as Kafka records keyed
to the partitions ``stream-app replay`` would choose."""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from schemas import SubscriptionEvent
from stream_app.core import Record
from stream_app.model.evaluation import DAY_MS
from stream_app.pipeline.decoding import decode
from stream_app.settings import Settings
from stream_app.tools.replay import route

WEEK_MS = 7 * DAY_MS


def iso(ms: int | None) -> str | None:
    """Event time (ms) as ISO-8601 text."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat()


def _open_lines(path: str | Path) -> Iterator[bytes]:
    p = Path(path)
    raw = gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")  # noqa: SIM115
    with raw as fh:
        for line in io.BufferedReader(fh):  # type: ignore[arg-type]
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def _ts_ms(value: Any) -> int | None:
    """Event time of a raw ``ts`` for ordering only (validation is the ingestor's job)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if dt.tzinfo is None:
            return None
        return int(dt.timestamp() * 1000)
    return None


@dataclass
class History:
    """What the file says happened: its span, its customers, their cancellations."""

    path: str
    customers_limit: int | None = None
    lines: int = 0
    routable: int = 0
    unroutable: int = 0
    in_order: bool = True
    start_ms: int | None = None
    end_ms: int | None = None
    first_seen: dict[str, int] = field(default_factory=dict)
    #: customer -> [(event time, subscription status)], for cancellations and reactivations
    billing: dict[str, list[tuple[int, str]]] = field(default_factory=dict)

    @property
    def customers(self) -> int:
        return len(self.first_seen)

    def cancellations(self) -> dict[str, int]:
        """Customer -> event time of its first cancellation."""
        out: dict[str, int] = {}
        for cid, events in self.billing.items():
            cancels = [t for t, s in events if s == "cancelled"]
            if cancels:
                out[cid] = min(cancels)
        return out

    def is_cancelled_at(self, cid: str, ts_ms: int) -> bool:
        """Whether the customer's latest subscription status at ``ts_ms`` is ``cancelled``."""
        last = None
        for t, s in self.billing.get(cid, ()):
            if t <= ts_ms:
                last = s
        return last == "cancelled"

    def cancelled_within(self, cid: str, ts_ms: int, horizon_ms: int) -> bool:
        return any(s == "cancelled" and ts_ms < t <= ts_ms + horizon_ms for t, s in self.billing.get(cid, ()))

    def tenure_start(self, cid: str) -> int | None:
        """The customer's first ``started`` subscription event, else its first event of any kind.

        Derived from ``billing`` (which the scan already fills) rather than a new field, so
        runs saved before it existed are judged the same way.
        """
        started = [t for t, s in self.billing.get(cid, ()) if s == "started"]
        return min(started) if started else self.first_seen.get(cid)

    def active_weeks(self) -> float:
        """Sum over customers of the weeks from first event to cancellation (or the end)."""
        if self.end_ms is None:
            return 0.0
        cancels = self.cancellations()
        total = 0
        for cid, first in self.first_seen.items():
            total += max(0, min(cancels.get(cid, self.end_ms), self.end_ms) - first)
        return total / WEEK_MS


def scan_history(path: str | Path, settings: Settings, customers_limit: int | None = None) -> History:
    """First pass: span, customers (the first ``customers_limit`` to appear), cancellations,
    and whether the lines are already in event-time order."""
    h = History(path=str(path), customers_limit=customers_limit)
    last = -(2**62)
    for line in _open_lines(path):
        h.lines += 1
        routed = route(line, settings)
        if isinstance(routed, str):
            h.unroutable += 1
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            obj = {}
        cid = obj.get("customer_id") if isinstance(obj, dict) else None
        if not isinstance(cid, str):
            h.routable += 1
            continue
        if cid not in h.first_seen:
            if customers_limit is not None and len(h.first_seen) >= customers_limit:
                continue
            h.first_seen[cid] = 2**62
        h.routable += 1
        ts = _ts_ms(obj.get("ts"))
        if ts is None:
            continue
        if ts < last:
            h.in_order = False
        last = max(last, ts)
        h.first_seen[cid] = min(h.first_seen[cid], ts)
        h.start_ms = ts if h.start_ms is None else min(h.start_ms, ts)
        h.end_ms = ts if h.end_ms is None else max(h.end_ms, ts)
        topic = routed[0]
        if settings.input_topics.get(topic) == "subscriptions":
            event = decode(line, "subscriptions", settings.max_message_bytes)
            if isinstance(event, SubscriptionEvent):
                h.billing.setdefault(cid, []).append((event.ts_ms, event.status))
    for events in h.billing.values():
        events.sort()
    h.first_seen = {c: t for c, t in h.first_seen.items() if t < 2**62}
    return h


def _partition(key: bytes | None, partitions: int) -> int:
    """The partition ``stream-app replay`` (aiokafka's default partitioner) would choose."""
    if key is None:
        return 0
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def ordered_records(path: str | Path, history: History, settings: Settings) -> Iterator[tuple[int, Record]]:
    """(event time, record) in event-time order, with per-partition offsets. Lines already in
    order stream; otherwise they are sorted in memory (stable; an unreadable ``ts`` keeps its
    place after the line before it)."""
    def lines() -> Iterator[tuple[int, tuple[str, bytes | None, bytes]]]:
        last = history.start_ms or 0
        for line in _open_lines(path):
            routed = route(line, settings)
            if isinstance(routed, str):
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                obj = {}
            cid = obj.get("customer_id") if isinstance(obj, dict) else None
            if history.customers_limit is not None and isinstance(cid, str) and cid not in history.first_seen:
                continue
            ts = _ts_ms(obj.get("ts")) if isinstance(obj, dict) else None
            last = ts if ts is not None else last
            yield last, routed

    source: Iterator[tuple[int, tuple[str, bytes | None, bytes]]] = lines()
    if not history.in_order:
        source = iter(sorted(lines(), key=lambda t: t[0]))
    offsets: dict[tuple[str, int], int] = {}
    for ts, (topic, key, value) in source:
        p = _partition(key, settings.topic_partitions)
        off = offsets.get((topic, p), -1) + 1
        offsets[(topic, p)] = off
        # the log ends at this record: every partition is caught up, so the event-time
        # watermark is the newest event time fed (exact, since the feed is in order)
        yield ts, Record(topic, p, off, value, off + 1)


# --- running the pipeline -------------------------------------------------------------------
