"""Live portfolio KPIs in Redis: per-period contributions and sums, kept exactly once.

Layout (every key shares the hash tag ``{pf}``: one slot, so every script is Cluster-safe;
the names: ``state.layout.PortfolioKeys``):

    {prefix}pf:{pf}:meta               hash  rolled:<kind> (newest period carried into),
                                              floor:<kind> (oldest period still writable)
    {prefix}pf:{pf}:<m|q>:<label>:c    hash  customer id -> its record in that period
    {prefix}pf:{pf}:<m|q>:<label>:s    hash  "<group>:<field>" -> sum over the records
    {prefix}pf:{pf}:obs:<day>          hash  customer id -> its first scoring's behaviour that day
    {prefix}pf:{pf}:seg:blob:<day>     string segmentation model through that day (JSON);
    {prefix}pf:{pf}:seg:days           zset   the days checkpointed (see ``segment_days``)
    {prefix}pf:{pf}:ver                hash  customer id -> newest state version written

Per batch of scored customers (``PortfolioTracker.update``): one read round trip (meta and the
stored records the batch needs), the records computed in Python (``contributions``), one
write round trip (``lua/portfolio_apply.lua``, which replaces each record and applies the
delta to the sums atomically). A query reads one sums hash: O(1) in the number of customers.

Which periods a customer's update writes: every month its state still holds completely (the
longest window back from its newest event: with 90 days, the current and the two previous
months), so a late event, or one consumed late because its topic lagged behind the others
during a backlog, corrects the closed month it belongs to; up to the newest period the
portfolio has reached (a customer whose latest event is older still has current records).
A month before the scoring month keeps the score facts it had (the health at that month's
end is not known any more); quarters are combined from their months. The stored records are
read first (one pipelined HMGET per period), so only records that changed are written.

When event time enters a new period (``rollover``), every customer active at the end of the
previous period and not yet in the new one gets the carried-over record (set only where
absent, so it is idempotent and never overwrites a real update). Records older than
``keep_months`` are dropped and their periods closed (the sums stay).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import orjson

from stream_app.core import DAY_MS, text
from stream_app.portfolio.assess import (
    Assessment,
    Observation,
    PortfolioAssessor,
    PortfolioItem,
    ReplayedObservation,
    decode_scoring,
    encode_scoring,
)
from stream_app.portfolio.config import PortfolioConfig
from stream_app.portfolio.contributions import FIELDS, Contribution, carry, combine, facts_from_state, signup_month
from stream_app.portfolio.periods import Period, PeriodKind, month, month_of, month_of_day, month_start_day, of_kind
from stream_app.portfolio.reports import Meta, PortfolioReports, read_meta
from stream_app.portfolio.segment_days import DailySegments
from stream_app.settings import Settings
from stream_app.state import layout
from stream_app.state.cluster import PipelinedScript
from stream_app.state.layout import Keys, PortfolioKeys

__all__ = ["Assessment", "Observation", "PortfolioItem", "PortfolioTracker", "ReplayedObservation", "decode_scoring",
           "encode_scoring", "read_meta"]

log = logging.getLogger(__name__)

_FIELD_NAMES = ",".join(FIELDS)
#: records per script call: big enough to amortise the call, small enough not to block Redis
_CHUNK = 200


@dataclass
class PortfolioStats:
    updates: int = 0
    records_written: int = 0
    records_changed: int = 0
    rollovers: int = 0
    carried: int = 0
    seconds: float = 0.0  # wall time spent in update() (reads, records, writes, rollovers)


class Stored:
    """A record as stored (text), decoded on first use."""

    __slots__ = ("_rec", "period", "text")

    def __init__(self, period: Period, text: str) -> None:
        self.period, self.text, self._rec = period, text, None

    @property
    def contribution(self) -> Contribution:
        if self._rec is None:
            self._rec = Contribution.decode(self.period, self.text)
        return self._rec


_ABSENT = Stored(Period("month", 0), "")


class PortfolioTracker(PortfolioAssessor, PortfolioReports):
    """Keeps the portfolio's per-period sums current as customers are scored (the write side);
    assesses scorings (``PortfolioAssessor``) and reports (``PortfolioReports``) on the same keys."""

    def __init__(self, settings: Settings, config: PortfolioConfig | None = None) -> None:
        self.settings = settings
        cfg = config or PortfolioConfig.for_file(settings.portfolio_file)
        PortfolioAssessor.__init__(self, cfg, cfg.risk_threshold or settings.risk_alert_threshold)
        self.keys = PortfolioKeys(settings.key_prefix)
        self.names = Keys(settings.key_prefix)
        self.segments = DailySegments(self.names, self.keys, self.cfg.segments, settings.model_lag_days)
        self.stats = PortfolioStats()
        self._script = PipelinedScript(
            resources.files("stream_app.state").joinpath("lua/portfolio_apply.lua").read_text())
        # a worker's agents refresh concurrently: one update at a time, so that each update's
        # read of the stored records (which decides what to write) sees the previous one's writes
        self._lock = asyncio.Lock()

    async def assign_segments(self, redis: Any, items: Sequence[PortfolioItem],
                              replayed: Sequence[ReplayedObservation] = ()) -> list[PortfolioItem]:
        """Store the scorings' segmentation inputs (and ``replayed`` ones, see ``update``), learn
        the days now complete, and give each month's record the segment of its latest scoring,
        assigned by the model pinned to that scoring's day (``segment_days``): the same however
        the input was batched."""
        obs = [o for it in items for o in it.observations]
        await self.segments.observe(redis, [*replayed, *((k, cid, f) for k, cid, _, f, learn in obs if learn)])
        await self.segments.advance(redis)
        latest: dict[tuple[str, int], tuple[int, dict[str, float]]] = {}
        for k, cid, m, features, _ in obs:
            if (cid, m) not in latest or k >= latest[(cid, m)][0]:
                latest[(cid, m)] = (k, features)
        seg = {key: self.segments.model_for(k // DAY_MS).assign(f, learn=False) for key, (k, f) in latest.items()}
        return [replace(it, scores={m: sf._replace(segment=seg.get((it.customer_id, m), sf.segment))
                                    for m, sf in it.scores.items()}) for it in items]

    # --- per batch ------------------------------------------------------------------------------
    async def prepare(self, redis: Any) -> None:
        """Before a batch: learn the segmentation days completed since (cheap when none)."""
        await self.segments.advance(redis)

    async def update(self, redis: Any, items: Sequence[PortfolioItem], now_ms: int | None = None,
                     replayed: Sequence[ReplayedObservation] = ()) -> int:
        """Write the scored customers' records; ``now_ms`` is the event-time watermark;
        ``replayed``: segmentation observations ``(order time, customer id, features)`` of
        scorings before a crash, recovered from the customers' outboxes.

        Returns the number of records that changed.
        """
        if not items and not replayed:
            return 0
        async with self._lock:
            if not items:
                await self.segments.observe(redis, replayed)
                return 0
            return await self._update(redis, items, now_ms, replayed)

    async def _update(self, redis: Any, items: Sequence[PortfolioItem], now_ms: int | None,
                      replayed: Sequence[ReplayedObservation] = ()) -> int:
        t0 = time.perf_counter()
        items = await self.assign_segments(redis, items, replayed)
        now_m = month_of(now_ms if now_ms is not None else max(i.as_of_ms for i in items))
        meta = await read_meta(redis, self.keys)
        if meta.rolled.get("month") is None or now_m > meta.rolled["month"]:
            meta = await self.rollover(redis, now_m, meta)
        plans = [self._plan(it, meta) for it in items]
        need: dict[Period, list[str]] = {}
        for it, plan in zip(items, plans):
            for p in plan.reads:
                need.setdefault(p, []).append(it.customer_id)
        old = await self._read(redis, need)
        writes: list[tuple[Any, ...]] = []
        for it, plan in zip(items, plans):
            version = int(it.raw.main.get(layout.EVENTS, "0"))
            # the version first: it rejects this update if a newer state was written meanwhile
            writes.append((None, it.customer_id, "", version))
            writes.extend((p, c, text, version) for p, c, text in self._records(it, plan, old))
        changed = await self.apply_records(redis, writes, "r")
        self.stats.updates += len(items)
        self.stats.records_written += len(writes) - len(items)
        self.stats.records_changed += changed
        self.stats.seconds += time.perf_counter() - t0
        return changed

    # --- planning ---------------------------------------------------------------------------
    @dataclass
    class _Plan:
        months: range
        as_month: int
        quarters: list[Period]
        reads: list[Period]

    def _plan(self, it: PortfolioItem, meta: Meta) -> PortfolioTracker._Plan:
        main = it.raw.main
        lts = int(main.get(layout.LAST_EVENT, it.as_of_ms))
        first = int(main.get(layout.FIRST_SEEN, lts))
        as_m = month_of(it.as_of_ms)
        floor_m = meta.floor.get("month")
        # every month the state's day buckets still hold completely (the longest window back
        # from the customer's newest event): a late event, or one consumed late because its
        # topic lagged behind the others, lands in a month that is restated
        horizon = lts // DAY_MS - self.settings.max_window_days + 1
        covered = month_of_day(horizon)
        if month_start_day(covered) < horizon:
            covered += 1
        lo = max(min(covered, as_m), month_of(first), floor_m if floor_m is not None else -(10**9))
        hi = max(month_of(lts), meta.rolled.get("month", as_m), as_m)
        months = range(lo, hi + 1) if lo <= hi else range(0)
        # stored records: for the score facts of past months and to send only what changed
        reads = [month(m) for m in months]
        quarters: list[Period] = []
        if "quarter" in self.cfg.periods and months:
            for qi in range(months[0] // 3, months[-1] // 3 + 1):
                q = Period("quarter", qi)
                qfloor = meta.floor.get("quarter")
                if qfloor is not None and qi < qfloor:
                    continue
                if floor_m is not None and q.month_indices[0] < floor_m:
                    continue
                quarters.append(q)
                reads.append(q)
                reads.extend(month(m) for m in q.month_indices if m < lo)
        return self._Plan(months, as_m, quarters, sorted(set(reads)))

    def _records(self, it: PortfolioItem, plan: PortfolioTracker._Plan,
                 old: dict[tuple[Period, str], Stored]) -> list[tuple[Period, str, str]]:
        cid = it.customer_id
        fresh = it.scores[plan.as_month]
        periods = [month(m) for m in plan.months]
        facts = facts_from_state(it.raw, periods)
        signup = signup_month(it.raw)
        out: list[tuple[Period, str, str]] = []
        month_recs: dict[int, Contribution] = {}
        for p in periods:
            score = it.scores.get(p.index, fresh)
            if (p.index < plan.as_month or it.recovered) and p.index not in it.scores:
                prev = old.get((p, cid))
                if prev is not None:
                    score = prev.contribution.score
            rec = Contribution(p, facts[p], score, signup)
            out.append((p, cid, self._encode(rec, old.get((p, cid)))))
            if not rec.empty():
                month_recs[p.index] = rec
        hi = plan.months[-1] if plan.months else plan.as_month
        for q in plan.quarters:
            recs = {}
            for m in q.month_indices:
                if m in month_recs:
                    recs[m] = month_recs[m]
                elif m not in plan.months and (month(m), cid) in old:
                    recs[m] = old[(month(m), cid)].contribution
            out.append((q, cid, self._encode(combine(q, recs, min(q.month_indices[-1], hi)), old.get((q, cid)))))
        # unchanged records need no write (the script would find them equal and do nothing)
        return [(p, c, text) for p, c, text in out if text != old.get((p, c), _ABSENT).text]

    def _encode(self, rec: Contribution, stored: Stored | None) -> str:
        """The record's text; the stored text when its facts and score are the same (most past
        months at most updates), without recomputing the values."""
        if rec.empty():
            return ""
        tail = rec.tail()
        if stored is not None and stored.text.endswith(tail) and stored.text[-len(tail) - 1] == "|":
            return stored.text
        return rec.encode(self.cfg.repeat_min_days, tail)

    # --- Redis ------------------------------------------------------------------------------
    async def _read(self, redis: Any, need: dict[Period, list[str]]) -> dict[tuple[Period, str], Stored]:
        if not need:
            return {}
        pipe = redis.pipeline(transaction=False)
        order = list(need.items())
        for p, cids in order:
            pipe.hmget(self.keys.contributions(p), cids)
        out: dict[tuple[Period, str], Stored] = {}
        for (p, cids), vals in zip(order, await pipe.execute()):
            for cid, v in zip(cids, vals):
                if v:
                    out[(p, cid)] = Stored(p, text(v))
        return out

    async def apply_records(self, redis: Any, writes: Sequence[tuple[Any, ...]], mode: str = "r") -> int:
        """Replace (mode "r") or carry in (mode "n": only where absent) encoded records,
        ``(period, customer id, record[, version])``; a ``None`` period only records the
        version. Returns how many records changed."""
        if not writes:
            return 0
        calls = []
        for i in range(0, len(writes), _CHUNK):
            chunk = writes[i : i + _CHUNK]
            pairs: dict[Period, int] = {}
            keys = [self.keys.meta, self.keys.versions]
            items = []
            for w in chunk:
                p, cid, rec = w[0], w[1], w[2]
                version = w[3] if len(w) > 3 else False
                if p is None:
                    items.append([0, "", "", cid, "", version])
                    continue
                if p not in pairs:
                    pairs[p] = len(pairs) + 1
                    keys += [self.keys.contributions(p), self.keys.sums(p)]
                items.append([pairs[p], p.kind, p.label, cid, rec, version])
            calls.append((keys, [_FIELD_NAMES, mode, orjson.dumps(items)]))
        # every key shares {pf}: one slot, on a cluster too (the whole pipeline goes to one node)
        return sum(int(n) for n in await self._script.run(redis, calls))

    async def rollover(self, redis: Any, now_month: int, meta: Meta | None = None) -> Meta:
        """Carry customers into every period event time has entered since the last rollover,
        then move the floors and drop the records below them. Idempotent."""
        meta = meta or await read_meta(redis, self.keys)
        for kind in self.cfg.periods:
            target = of_kind(kind, now_month).index
            rolled = meta.rolled.get(kind)
            start = target if rolled is None else rolled + 1
            for idx in range(start, target + 1):
                self.stats.carried += await self._carry(redis, Period(kind, idx - 1), Period(kind, idx))
        floor_m = now_month - self.cfg.keep_months + 1
        floors: dict[PeriodKind, int] = {"month": floor_m, "quarter": -(-floor_m // 3)}
        fields: dict[str, str] = {}
        dropped: list[str] = []
        for kind in self.cfg.periods:
            target = of_kind(kind, now_month).index
            fields[self.keys.meta_field(layout.META_ROLLED, kind)] = Period(kind, max(target, meta.rolled.get(kind, target))).label
            new_floor = max(floors[kind], meta.floor.get(kind, floors[kind]))
            fields[self.keys.meta_field(layout.META_FLOOR, kind)] = Period(kind, new_floor).label
            old_floor = meta.floor.get(kind)
            if old_floor is not None:
                dropped += [self.keys.contributions(Period(kind, i)) for i in range(old_floor, new_floor)]
        await redis.hset(self.keys.meta, mapping=fields)
        if dropped:
            await redis.unlink(*dropped)
        self.stats.rollovers += 1
        return await read_meta(redis, self.keys)

    async def _carry(self, redis: Any, prev: Period, cur: Period) -> int:
        n = 0
        cursor = 0
        rmd = self.cfg.repeat_min_days
        while True:
            cursor, chunk = await redis.hscan(self.keys.contributions(prev), cursor, count=500)
            writes = []
            for cid, stored in chunk.items():
                c = Contribution.decode(prev, text(stored))
                if c.facts.a1:
                    writes.append((cur, text(cid), carry(c, cur).encode(rmd)))
            n += await self.apply_records(redis, writes, "n")
            if cursor == 0:
                return n

