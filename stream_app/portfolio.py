"""Portfolio tiles and the per-band ranking for the dashboard: one pass over customer state, cached.

Why a cached pass: counts by band, the average health, NPS, CSAT, the churn rate and the MRR at
risk are sums over every customer, and the state keeps no running totals of them (live KPIs
are another module's concern: ``portfolio_tiles`` is the one seam to point at them). One pass
reads a handful of fields per customer (SCAN of the customers' main hashes + pipelined HMGET,
1,000 at a time) and is refreshed in the background at most every ``DASHBOARD_REFRESH_S``
seconds, and only while someone is looking. Requests never scan: they read the cached result.

The same pass yields each band's ranking by churn probability (the at-risk list's band filter).

>>> bins = histogram([12.0, 47.5, 99.0, 100.0], green_min=70, yellow_min=45, width=25)
>>> [(b.lo, b.count, b.band) for b in bins]
[(0, 1, 'red'), (25, 1, 'red'), (50, 0, 'yellow'), (75, 2, 'green')]
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .aggregates import DAY_MS
from .settings import Settings
from .state import StateStore

log = logging.getLogger(__name__)

BANDS: tuple[str, ...] = ("red", "yellow", "green")
#: Fields of a customer's main hash the pass reads (CSAT day buckets are appended).
_FIELDS = ("hs", "hb", "cp", "mrr", "st", "cts", "npsl", "npst")
CHUNK = 1000


class HistBin(BaseModel):
    """One bar of the health-score distribution: scores in [lo, hi)."""

    lo: int
    hi: int
    count: int
    band: str


class PortfolioTiles(BaseModel):
    """The portfolio at a glance (active = not cancelled)."""

    customers: int
    active: int
    by_band: dict[str, int]
    avg_health: float | None
    nps: float | None  # latest NPS answer per active customer within 90 days: % promoters - % detractors
    nps_responses: int
    csat: float | None  # share of CSAT answers in the last 30 days that were satisfied (4-5)
    csat_responses: int
    churn_rate_30d: float | None  # cancelled in the last 30 days / (active + those)
    cancelled_30d: int
    mrr_total: float  # of active customers
    mrr_at_risk: float  # MRR of active customers at or above the churn_risk alert threshold
    at_risk: int
    expected_mrr_loss: float  # sum of churn probability x MRR
    histogram: list[HistBin]
    as_of_ms: int | None  # event time the pass saw as "now"
    computed_at: float  # wall clock (epoch s)
    duration_ms: float
    source: str


@dataclass
class PortfolioScan:
    """One pass: the tiles and each band's customers by churn probability (highest first)."""

    tiles: PortfolioTiles
    band_ids: dict[str, list[str]] = field(default_factory=dict)


def histogram(scores: list[float], green_min: float, yellow_min: float, width: int = 5) -> list[HistBin]:
    """Counts of health scores in bins of ``width`` points (100 falls in the top bin)."""
    n = (100 + width - 1) // width
    counts = [0] * n
    for s in scores:
        counts[min(int(s // width), n - 1)] += 1
    out = []
    for i, c in enumerate(counts):
        lo = i * width
        mid = lo + width / 2
        band = "green" if mid >= green_min else "yellow" if mid >= yellow_min else "red"
        out.append(HistBin(lo=lo, hi=min(lo + width, 100), count=c, band=band))
    return out


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


def customer_of_main_key(prefix: str, key: str) -> str:
    """Customer id from a main-hash key ``{prefix}c:{<tag>}`` (inverse of ``state.hash_tag``).

    >>> customer_of_main_key("cs:", "cs:c:{acme%7D%7B1%25}")
    'acme}{1%'
    """
    tag = key[len(prefix) + 3 : -1]
    return tag.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def _s(v: Any) -> str | None:
    return v.decode() if isinstance(v, bytes) else v


async def scan_portfolio(store: StateStore, settings: Settings) -> PortfolioScan:
    """One full pass over customer state (see the module doc for why and how often)."""
    started = time.perf_counter()
    prefix = settings.key_prefix
    card = settings.scorecard()
    wm = await store.watermark()
    now_ms = wm if wm is not None and wm >= 0 else None
    day = now_ms // DAY_MS if now_ms is not None else None
    csat_fields = [f"s{d}" for d in range(day - 29, day + 1)] if day is not None else []
    fields = [*_FIELDS, *csat_fields]
    threshold = settings.risk_alert_threshold

    seen: set[str] = set()
    ranked: dict[str, list[tuple[float, str]]] = {b: [] for b in BANDS}
    scores: list[float] = []
    customers = active = nps_n = promoters = detractors = csat_n = csat_ok = cancelled_30d = at_risk = 0
    mrr_total = mrr_at_risk = expected = 0.0

    async def consume(keys: list[str]) -> None:
        nonlocal customers, active, nps_n, promoters, detractors, csat_n, csat_ok, cancelled_30d, at_risk
        nonlocal mrr_total, mrr_at_risk, expected
        pipe = store.redis.pipeline(transaction=False)
        for k in keys:
            pipe.hmget(k, fields)
        for k, values in zip(keys, await pipe.execute()):
            hs, hb, cp, mrr, st, cts, npsl, npst = (_s(v) for v in values[: len(_FIELDS)])
            if hs is None and st is None:
                continue  # not (yet) a customer the worker has scored or billed
            customers += 1
            if st == "cancelled":
                if cts is not None and now_ms is not None and int(cts) > now_ms - 30 * DAY_MS:
                    cancelled_30d += 1
                continue
            active += 1
            p = float(cp) if cp else 0.0
            money = int(mrr) / 100 if mrr else 0.0
            mrr_total += money
            expected += p * money
            if p >= threshold:
                at_risk += 1
                mrr_at_risk += money
            if hs is not None:
                scores.append(int(hs) / 10)
            if hb in ranked:
                ranked[hb].append((-p, customer_of_main_key(prefix, k)))
            if npsl is not None and now_ms is not None and npst is not None and int(npst) > now_ms - 90 * DAY_MS:
                nps_n += 1
                score = int(npsl)
                promoters += score >= 9
                detractors += score <= 6
            for raw in values[len(_FIELDS) :]:
                if raw:
                    v = _s(raw).split(",")  # type: ignore[union-attr]
                    if len(v) > 7:
                        csat_n += int(v[5])
                        csat_ok += int(v[7])

    batch: list[str] = []
    async for key in store.redis.scan_iter(match=f"{_glob_escape(prefix)}c:{{*}}", count=CHUNK):
        k = str(_s(key))
        if k in seen:  # SCAN may return a key twice
            continue
        seen.add(k)
        batch.append(k)
        if len(batch) >= CHUNK:
            await consume(batch)
            batch = []
    if batch:
        await consume(batch)

    for b in ranked:
        ranked[b].sort()
    tiles = PortfolioTiles(
        customers=customers,
        active=active,
        by_band={b: len(ranked[b]) for b in BANDS},
        avg_health=round(sum(scores) / len(scores), 1) if scores else None,
        nps=round(100 * (promoters - detractors) / nps_n, 1) if nps_n else None,
        nps_responses=nps_n,
        csat=round(csat_ok / csat_n, 3) if csat_n else None,
        csat_responses=csat_n,
        churn_rate_30d=round(cancelled_30d / (active + cancelled_30d), 4) if active + cancelled_30d else None,
        cancelled_30d=cancelled_30d,
        mrr_total=round(mrr_total, 2),
        mrr_at_risk=round(mrr_at_risk, 2),
        at_risk=at_risk,
        expected_mrr_loss=round(expected, 2),
        histogram=histogram(scores, card.green_min, card.yellow_min),
        as_of_ms=now_ms,
        computed_at=time.time(),
        duration_ms=round((time.perf_counter() - started) * 1000, 1),
        source="full pass over customer state, cached",
    )
    return PortfolioScan(tiles=tiles, band_ids={b: [cid for _, cid in ranked[b]] for b in BANDS})


async def portfolio_tiles(store: StateStore, settings: Settings) -> PortfolioTiles:
    """The portfolio tiles. The one seam for another source (e.g. live KPIs kept by the worker)."""
    return (await scan_portfolio(store, settings)).tiles


TilesSource = Callable[[StateStore, Settings], Awaitable[PortfolioTiles]]


class PortfolioCache:
    """The latest portfolio pass, refreshed in the background while the dashboard is in use.

    ``tiles_source`` replaces the pass's own tiles (the band ranking still comes from the pass).
    """

    def __init__(self, store: StateStore, settings: Settings, tiles_source: TilesSource | None = None) -> None:
        self.store = store
        self.settings = settings
        self.refresh_s = settings.dashboard_refresh_s
        self.tiles_source = tiles_source
        self.scan: PortfolioScan | None = None
        self._refreshed = 0.0
        self._last_wanted = time.monotonic()
        self._lock = asyncio.Lock()

    async def refresh(self) -> PortfolioScan:
        async with self._lock:
            scan = await scan_portfolio(self.store, self.settings)
            if self.tiles_source is not None:
                scan.tiles = await self.tiles_source(self.store, self.settings)
            self.scan, self._refreshed = scan, time.monotonic()
            return scan

    async def get(self) -> PortfolioScan:
        """The cached pass; only the first request (or one after a long idle spell) waits for one."""
        self._last_wanted = time.monotonic()
        if self.scan is None or time.monotonic() - self._refreshed > 4 * self.refresh_s:
            if self._lock.locked() and self.scan is not None:
                return self.scan
            return await self.refresh()
        return self.scan

    def age_s(self) -> float | None:
        return None if self.scan is None else round(time.monotonic() - self._refreshed, 1)

    async def run(self) -> None:
        """Background loop: refresh every ``refresh_s`` while anyone asked within the last minute."""
        while True:
            await asyncio.sleep(self.refresh_s)
            if time.monotonic() - self._last_wanted > max(60.0, 4 * self.refresh_s):
                continue
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - Redis away: keep serving the last pass, try again later
                log.warning("portfolio refresh failed", exc_info=True)
