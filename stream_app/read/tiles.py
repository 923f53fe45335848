"""Dashboard tiles: a cached portfolio pass over the risk index (customers by band, health, NPS, CSAT, MRR at risk).

Why a cached pass: counts by band, the average health, NPS, CSAT, the churn rate and the MRR at
risk are sums over every customer, and the state keeps no running totals of them (live KPIs
are another module's concern: ``portfolio_tiles`` is the one seam to point at them). One pass
reads a handful of fields per customer (SCAN finds the customers' main hashes; a read-only Lua
script reads and sums 200 of them per call inside Redis) and is refreshed in the background
every ``DASHBOARD_REFRESH_S`` seconds or less often when slow (``PortfolioCache``), and only
while someone is looking. Requests never scan: they read the cached result.

The same pass yields each band's ranking by churn probability (the at-risk list's band filter).

>>> [(b.lo, b.count, b.band) for b in bins([1, 1, 0, 2], green_min=70, yellow_min=45, width=25)]
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
from redis.exceptions import ResponseError

from stream_app.core import DAY_MS, text
from stream_app.scoring.scorecard import ScorecardConfig
from stream_app.settings import Settings
from stream_app.state import layout
from stream_app.state.cluster import PipelinedScript, is_cluster
from stream_app.state.layout import customer_of_main_key
from stream_app.state.store import StateStore

log = logging.getLogger(__name__)

BANDS: tuple[str, ...] = ("red", "yellow", "green")
#: Customers per script call in the pass (each call blocks Redis for a few milliseconds).
CHUNK = 200
#: Histogram bin width (health points).
BIN_WIDTH = 5


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


def bins(counts: list[int], green_min: float, yellow_min: float, width: int = BIN_WIDTH) -> list[HistBin]:
    """Histogram bars from counts per ``width``-point bin, each coloured by the band of its middle."""
    out = []
    for i, c in enumerate(counts):
        lo = i * width
        mid = lo + width / 2
        band = "green" if mid >= green_min else "yellow" if mid >= yellow_min else "red"
        out.append(HistBin(lo=lo, hi=min(lo + width, 100), count=c, band=band))
    return out


def _glob_escape(s: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)


_PASS_SCRIPT = """
-- One chunk of the portfolio pass, read-only. KEYS: customers' main hashes.
-- ARGV: now ms ('' if unknown), churn_risk threshold, first and last CSAT day ('' if unknown), histogram bin width;
-- 6..13 the main-hash field names read (state/layout.py, in _PASS_FIELDS order), 14 the survey day bucket prefix.
-- Returns {aggregates, ranking}: ranking is flat (index in KEYS, band, churn probability) per active customer.
local now = tonumber(ARGV[1])
local thr = tonumber(ARGV[2])
local d0, d1 = tonumber(ARGV[3]), tonumber(ARGV[4])
local width = tonumber(ARGV[5])
local nb = math.ceil(100 / width)
local DAY = 86400000
local fields = {ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13]}
local survey_day = ARGV[14]
local customers, active, cancelled, hs_n, nps_n, prom, detr, csat_n, csat_ok, at_risk = 0, 0, 0, 0, 0, 0, 0, 0, 0, 0
local hs_sum, mrr_total, mrr_risk, expected = 0, 0, 0, 0
local hist = {}
for b = 1, nb do hist[b] = 0 end
local ranking = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HMGET', key, unpack(fields))
  local hs, hb, cp, st = v[1], v[2], v[3], v[5]
  if hs or st then
    customers = customers + 1
    if st == 'cancelled' then
      if now and v[6] and tonumber(v[6]) > now - 30 * DAY then cancelled = cancelled + 1 end
    else
      active = active + 1
      local p = tonumber(cp) or 0
      local m = tonumber(v[4]) or 0
      mrr_total = mrr_total + m
      expected = expected + p * m
      if p >= thr then at_risk = at_risk + 1; mrr_risk = mrr_risk + m end
      if hs then
        local x = tonumber(hs)
        hs_sum = hs_sum + x
        hs_n = hs_n + 1
        local b = math.min(math.floor(x / 10 / width), nb - 1) + 1
        hist[b] = hist[b] + 1
      end
      if hb and hb ~= '' then
        ranking[#ranking + 1] = i; ranking[#ranking + 1] = hb; ranking[#ranking + 1] = cp or '0'
      end
      if now and v[7] and v[8] and tonumber(v[8]) > now - 90 * DAY then
        local n = tonumber(v[7])
        nps_n = nps_n + 1
        if n >= 9 then prom = prom + 1 elseif n <= 6 then detr = detr + 1 end
      end
      -- survey day buckets s<day> = "nps n, ..., csat n (6th), csat sum, csat satisfied (8th), ...". One HSCAN
      -- walks the (usually compact) hash once; HMGET of 30 mostly absent days would walk it 30 times.
      local cur = d0 and '0' or nil
      while cur do
        local r = redis.call('HSCAN', key, cur, 'MATCH', survey_day .. '[0-9]*', 'COUNT', 1000)
        local kv = r[2]
        for j = 1, #kv, 2 do
          local d = tonumber(string.sub(kv[j], 2))
          if d and d >= d0 and d <= d1 then
            local k = 0
            for x in string.gmatch(kv[j + 1], '[^,]+') do
              k = k + 1
              if k == 6 then csat_n = csat_n + tonumber(x) elseif k == 8 then csat_ok = csat_ok + tonumber(x); break end
            end
          end
        end
        cur = r[1] ~= '0' and r[1] or nil
      end
    end
  end
end
local agg = {customers, active, cancelled, hs_n, string.format('%.0f', hs_sum), nps_n, prom, detr, csat_n, csat_ok,
             at_risk, string.format('%.0f', mrr_total), string.format('%.0f', mrr_risk), string.format('%.4f', expected)}
for b = 1, nb do agg[#agg + 1] = hist[b] end
return {agg, ranking}
"""
_N_AGG = 14
#: the main-hash fields the pass reads (ARGV 6..13), in the script's order
_PASS_FIELDS = (layout.HEALTH_SCORE, layout.HEALTH_BAND, layout.CHURN_P, layout.MRR, layout.STATUS,
                layout.CANCELLED_AT, layout.LAST_NPS, layout.LAST_NPS_AT)


async def scan_portfolio(store: StateStore, settings: Settings, with_csat: bool = True) -> PortfolioScan:
    """One full pass over customer state (see the module doc for why and how often).

    SCAN finds the customers' main hashes; a read-only Lua script reads and sums a chunk of
    them inside Redis (a few ms per call), so the pass costs one round trip per ``CHUNK``
    customers and Python handles only the band rankings. On Redis Cluster (keys of a chunk
    in different slots) the same script runs once per customer, pipelined.

    Most of the cost is CSAT (an HSCAN of each customer's survey day buckets);
    ``with_csat=False`` skips it.
    """
    started = time.perf_counter()
    prefix = settings.key_prefix
    card = ScorecardConfig.for_file(settings.scorecard_file)
    wm = await store.watermark()
    now_ms = wm if wm is not None and wm >= 0 else None
    day = now_ms // DAY_MS if now_ms is not None else None
    args = [
        "" if now_ms is None else now_ms, settings.risk_alert_threshold,
        "" if day is None or not with_csat else day - 29, "" if day is None or not with_csat else day, BIN_WIDTH,
        *_PASS_FIELDS, layout.SURVEY_DAY,
    ]
    script = store.redis.register_script(_PASS_SCRIPT)
    pipelined = PipelinedScript(_PASS_SCRIPT)
    totals = [0.0] * _N_AGG
    counts = [0] * ((100 + BIN_WIDTH - 1) // BIN_WIDTH)
    ranked: dict[str, list[tuple[float, str]]] = {b: [] for b in BANDS}
    # on a cluster the keys of a chunk are in different slots: one call per customer
    per_key = is_cluster(store.redis)

    def merge(keys: list[str], agg: list[Any], ranking: list[Any]) -> None:
        for i in range(_N_AGG):
            totals[i] += float(agg[i])
        for i, c in enumerate(agg[_N_AGG:]):
            counts[i] += int(c)
        for j in range(0, len(ranking), 3):
            band = text(ranking[j + 1])
            if band in ranked:
                ranked[band].append((-float(text(ranking[j + 2]) or 0), customer_of_main_key(prefix, keys[int(ranking[j]) - 1])))

    async def consume(keys: list[str]) -> None:
        nonlocal per_key
        if not per_key:
            try:
                agg, ranking = await script(keys=keys, args=args)
                merge(keys, agg, ranking)
                return
            except ResponseError as exc:
                if "CROSSSLOT" not in str(exc) and "cross" not in str(exc).lower():
                    raise
                per_key = True
        for k, (agg, ranking) in zip(keys, await pipelined.run(store.redis, [([k], args) for k in keys])):
            merge([k], agg, ranking)

    seen: set[str] = set()
    batch: list[str] = []
    async for key in store.redis.scan_iter(match=layout.main_key_pattern(_glob_escape(prefix)), count=1000):
        k = str(text(key))
        if k in seen:  # SCAN may return a key twice
            continue
        seen.add(k)
        batch.append(k)
        if len(batch) >= CHUNK:
            await consume(batch)
            batch = []
    if batch:
        await consume(batch)

    for ranking in ranked.values():
        ranking.sort()
    (customers, active, cancelled_30d, hs_n, hs_sum, nps_n, promoters, detractors, csat_n, csat_ok,
     at_risk, mrr_total, mrr_risk, expected) = totals
    tiles = PortfolioTiles(
        customers=int(customers),
        active=int(active),
        by_band={b: len(ranked[b]) for b in BANDS},
        avg_health=round(hs_sum / 10 / hs_n, 1) if hs_n else None,
        nps=round(100 * (promoters - detractors) / nps_n, 1) if nps_n else None,
        nps_responses=int(nps_n),
        csat=round(csat_ok / csat_n, 3) if csat_n else None,
        csat_responses=int(csat_n),
        churn_rate_30d=round(cancelled_30d / (active + cancelled_30d), 4) if active + cancelled_30d else None,
        cancelled_30d=int(cancelled_30d),
        mrr_total=round(mrr_total / 100, 2),
        mrr_at_risk=round(mrr_risk / 100, 2),
        at_risk=int(at_risk),
        expected_mrr_loss=round(expected / 100, 2),
        histogram=bins(counts, card.green_min, card.yellow_min, BIN_WIDTH),
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

    The pass repeats every ``DASHBOARD_REFRESH_S`` seconds, or less often when it is slow: never
    more than 1/``MAX_DUTY`` of the time (at 100k customers a pass takes seconds).
    ``tiles_source`` replaces the pass's own tiles (the band ranking still comes from the pass,
    which then skips the CSAT buckets, its most expensive part).
    """

    MAX_DUTY = 10

    def __init__(self, store: StateStore, settings: Settings, tiles_source: TilesSource | None = None) -> None:
        self.store = store
        self.settings = settings
        self.refresh_s = settings.dashboard_refresh_s
        self.tiles_source = tiles_source
        self.scan: PortfolioScan | None = None
        self._refreshed = 0.0
        self.last_duration_s = 0.0
        self._last_wanted = time.monotonic()
        self._lock = asyncio.Lock()

    async def refresh(self) -> PortfolioScan:
        async with self._lock:
            scan = await scan_portfolio(self.store, self.settings, with_csat=self.tiles_source is None)
            self.last_duration_s = scan.tiles.duration_ms / 1000
            if self.tiles_source is not None:
                scan.tiles = await self.tiles_source(self.store, self.settings)
            self.scan, self._refreshed = scan, time.monotonic()
            return scan

    async def get(self) -> PortfolioScan:
        """The cached pass; only the first request (or one after a long idle spell) waits for one."""
        self._last_wanted = time.monotonic()
        if self.scan is None or time.monotonic() - self._refreshed > 4 * self.interval_s():
            if self._lock.locked() and self.scan is not None:
                return self.scan
            return await self.refresh()
        return self.scan

    def age_s(self) -> float | None:
        return None if self.scan is None else round(time.monotonic() - self._refreshed, 1)

    def interval_s(self) -> float:
        return max(self.refresh_s, self.MAX_DUTY * self.last_duration_s)

    async def run(self) -> None:
        """Background loop: refresh every ``interval_s()`` while anyone asked within the last minute."""
        while True:
            await asyncio.sleep(self.interval_s())
            if time.monotonic() - self._last_wanted > max(60.0, 4 * self.interval_s()):
                continue
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - Redis away: keep serving the last pass, try again later
                log.warning("portfolio refresh failed", exc_info=True)
