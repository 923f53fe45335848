"""The portfolio's read side: KPIs per period and segment, cohorts, the segments, from the
per-period sums the write side (``portfolio.tracker``) keeps. A query reads one sums hash per
period: O(1) in the number of customers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_app.core import text
from stream_app.portfolio.cohorts import CohortRow, cohort_table
from stream_app.portfolio.config import PortfolioConfig
from stream_app.portfolio.kpis import Kpis, compute_kpis, split_groups
from stream_app.portfolio.periods import KINDS, Period, PeriodKind, month, month_of, of_kind, parse_label
from stream_app.portfolio.segment_days import DailySegments
from stream_app.portfolio.segments import SegmentInfo
from stream_app.state import layout
from stream_app.state.layout import Keys, PortfolioKeys


@dataclass
class Meta:
    rolled: dict[str, int] = field(default_factory=dict)
    floor: dict[str, int] = field(default_factory=dict)


def _from_label(kind: str, label: str) -> int:
    p = parse_label(label)
    if p.kind != kind:
        raise ValueError(f"{label!r} is not a {kind}")
    return p.index


async def read_meta(redis: Any, keys: PortfolioKeys) -> Meta:
    raw = {text(k): text(v) for k, v in (await redis.hgetall(keys.meta)).items()}
    meta = Meta()
    into = {layout.META_ROLLED: meta.rolled, layout.META_FLOOR: meta.floor}
    for k, v in raw.items():
        what, _, kind = k.partition(":")
        if what in into and kind in KINDS:
            into[what][kind] = _from_label(kind, v)
    return meta


class PortfolioReports:
    """Reads of the per-period sums (``keys``, ``cfg``, ``segments``: set by the tracker)."""

    keys: PortfolioKeys
    names: Keys
    cfg: PortfolioConfig
    segments: DailySegments

    async def now_month(self, redis: Any) -> int | None:
        """The portfolio's current month: the newest it rolled into, or of the watermark."""
        meta = await read_meta(redis, self.keys)
        wm = await redis.get(self.names.watermark)
        candidates = [m for m in (meta.rolled.get("month"), month_of(int(wm)) if wm is not None else None) if m is not None]
        return max(candidates) if candidates else None

    async def sums(self, redis: Any, periods: Sequence[Period]) -> dict[Period, dict[str, dict[str, int]]]:
        """Each period's sums by group (one HGETALL per period)."""
        pipe = redis.pipeline(transaction=False)
        for p in periods:
            pipe.hgetall(self.keys.sums(p))
        return {p: split_groups({text(k): int(v) for k, v in raw.items()}) for p, raw in zip(periods, await pipe.execute())}

    async def report(self, redis: Any, kind: PeriodKind = "month", count: int = 3,
                     segment: str | None = None, now_ms: int | None = None) -> list[Kpis]:
        """KPIs of the last ``count`` periods of ``kind`` (oldest first), overall or one segment;
        periods before the portfolio's first data are left out."""
        now_m = month_of(now_ms) if now_ms is not None else await self.now_month(redis)
        if now_m is None:
            return []
        current = of_kind(kind, now_m)
        periods = [current.prev(i) for i in range(count - 1, -1, -1)]
        data = await self.sums(redis, periods)
        while len(periods) > 1 and not data[periods[0]]:
            periods.pop(0)
        group = segment or "*"
        wm = await redis.get(self.names.watermark)
        now = int(wm) if wm is not None else current.start_ms
        return [
            compute_kpis(data[p].get(group, {}), p.months, self.cfg.gross_margin, period=p.label,
                         segment=segment or "all", partial=p.end_ms > now)
            for p in periods
        ]

    async def segment_reports(self, redis: Any, kind: PeriodKind = "month", now_ms: int | None = None) -> dict[str, Kpis]:
        """The current period's KPIs for every segment present in it."""
        now_m = month_of(now_ms) if now_ms is not None else await self.now_month(redis)
        if now_m is None:
            return {}
        p = of_kind(kind, now_m)
        groups = (await self.sums(redis, [p]))[p]
        return {
            g: compute_kpis(s, p.months, self.cfg.gross_margin, period=p.label, segment=g, partial=True)
            for g, s in sorted(groups.items()) if g.startswith("seg")
        }

    async def cohorts(self, redis: Any, now_ms: int | None = None) -> list[CohortRow]:
        now_m = month_of(now_ms) if now_ms is not None else await self.now_month(redis)
        if now_m is None:
            return []
        periods = [month(m) for m in range(now_m - 12, now_m + 1)]
        data = await self.sums(redis, periods)
        return cohort_table({p.index: g for p, g in data.items()}, now_m)

    async def describe_segments(self, redis: Any) -> list[SegmentInfo]:
        """The newest segmentation checkpoint's segments and traits."""
        return (await self.segments.latest(redis)).describe()
