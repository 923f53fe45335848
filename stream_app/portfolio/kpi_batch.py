"""Portfolio sums recomputed in one batch from a raw event history (the reference, pure).

Independent of Redis and of the live path's state buckets: it reads the events themselves
(each customer's subscription history in event-time order, survey answers and active days),
so replaying the same history through the pipeline and comparing the live sums with these
checks the incremental design end to end. Score facts (health, band, risk, stage, segment)
come from the scorer and are not recomputed here: the ``EVENT_FIELDS`` are compared.

>>> evs = [
...     {"topic": "subscriptions", "event_id": "b1", "customer_id": "a", "ts": "2026-01-10T00:00:00Z", "status": "started", "mrr": 100},
...     {"topic": "surveys", "event_id": "s1", "customer_id": "a", "ts": "2026-02-03T00:00:00Z", "survey": "csat", "score": 5},
...     {"topic": "subscriptions", "event_id": "b2", "customer_id": "a", "ts": "2026-02-20T00:00:00Z", "status": "cancelled", "mrr": 0},
... ]
>>> sums = reference_sums(evs)
>>> from stream_app.portfolio.periods import parse_label
>>> sums[parse_label("2026-02")]["*"]["lost"], sums[parse_label("2026-02")]["*"]["sat"], sums[parse_label("2026-01")]["*"]["su"]
(1, 1, 1)
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas import parse_event_time, to_epoch_ms
from stream_app.portfolio.contributions import FIELDS, Contribution, EventFacts, decode_values
from stream_app.portfolio.periods import DAY_MS, KINDS, Period, PeriodKind, month_of, of_kind

#: Fields that depend on the events only (not on the scorer): compared with the live sums.
EVENT_FIELDS: tuple[str, ...] = FIELDS[: FIELDS.index("sc")]


@dataclass
class _Customer:
    first: int | None = None
    subs: list[tuple[int, int, str, int]] = field(default_factory=list)  # ts, seq, status, cents
    surveys: list[tuple[int, str, float]] = field(default_factory=list)  # day, survey, score
    active: set[int] = field(default_factory=set)  # days with product activity


def _ts(v: Any) -> int:
    return v if isinstance(v, int) else to_epoch_ms(parse_event_time(v))


def _load(events: Iterable[dict[str, Any]], dedupe: bool = True) -> tuple[dict[str, _Customer], int]:
    customers: dict[str, _Customer] = defaultdict(_Customer)
    seen: set[tuple[str, str]] = set()
    newest = -(2**62)
    for seq, e in enumerate(events):
        cid, eid = e["customer_id"], e["event_id"]
        if dedupe:
            if (cid, eid) in seen:  # a re-sent event is the same event
                continue
            seen.add((cid, eid))
        ts = _ts(e["ts"])
        newest = max(newest, ts)
        c = customers[cid]
        c.first = ts if c.first is None else min(c.first, ts)
        topic = e["topic"]
        if topic == "subscriptions":
            c.subs.append((ts, seq, e["status"], int(round(float(e["mrr"]) * 100))))
        elif topic == "surveys":
            c.surveys.append((ts // DAY_MS, e["survey"], float(e["score"])))
        elif topic == "activity":
            c.active.add(ts // DAY_MS)
    for c in customers.values():
        c.subs.sort()
    return customers, newest


def _facts(c: _Customer, p: Period) -> EventFacts:
    times = [s[0] for s in c.subs]

    def at(t: int) -> tuple[bool, int]:
        i = bisect_left(times, t) - 1  # the latest subscription event with ts < t
        if i < 0:
            return False, 0
        return c.subs[i][2] != "cancelled", c.subs[i][3]

    a0, m0 = at(p.start_ms)
    a1, m1 = at(p.end_ms)
    lo, hi = p.start_ms, p.end_ms
    inside = [s for s in c.subs if lo <= s[0] < hi]
    surveys = [s for s in c.surveys if p.start_day <= s[0] < p.end_day]
    nps = [s for _, kind, s in surveys if kind == "nps"]
    csat = [s for _, kind, s in surveys if kind == "csat"]
    return EventFacts(
        a0=a0, a1=a1, m0=m0, m1=m1,
        started=sum(1 for s in inside if s[2] == "started"),
        up=sum(1 for s in inside if s[2] == "upgraded"), dn=sum(1 for s in inside if s[2] == "downgraded"),
        nps=len(nps), pro=sum(1 for s in nps if s >= 9), det=sum(1 for s in nps if s <= 6),
        csat=len(csat), sat=sum(1 for s in csat if s >= 4),
        ad=sum(1 for d in c.active if p.start_day <= d < p.end_day),
    )


def reference_sums(
    events: Iterable[dict[str, Any]], kinds: Iterable[PeriodKind] = KINDS, repeat_min_days: int = 4,
    now_ms: int | None = None, dedupe: bool = True,
) -> dict[Period, dict[str, dict[str, int]]]:
    """Period -> group -> field -> sum, over every period from each customer's first event
    to ``now_ms`` (default: the newest event). Groups: ``*`` and the cohort groups.
    ``dedupe=False`` skips the event_id check (a history known to hold no re-sent events,
    without the memory of every id)."""
    customers, newest = _load(events, dedupe)
    now_m = month_of(now_ms if now_ms is not None else newest)
    out: dict[Period, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    for c in customers.values():
        if c.first is None:
            continue
        starts = [s[0] for s in c.subs if s[2] == "started"]
        signup = month_of(min(starts)) if starts else None
        for kind in kinds:
            first = of_kind(kind, month_of(c.first)).index
            for idx in range(first, of_kind(kind, now_m).index + 1):
                p = Period(kind, idx)
                rec = Contribution(p, _facts(c, p), signup=signup)
                for group, vals in decode_values(rec.encode(repeat_min_days)).items():
                    for f, v in vals.items():
                        if v and (f in EVENT_FIELDS):
                            out[p][group][f] += v
    return {p: {g: dict(v) for g, v in groups.items()} for p, groups in out.items()}
