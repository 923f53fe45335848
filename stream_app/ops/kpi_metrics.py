"""Portfolio KPIs as Prometheus gauges: a collector to register with ``prometheus_client``.

The collector never touches Redis itself (``collect`` runs on the scrape thread): it reads a
:class:`PortfolioSnapshot` from a callable, typically a :class:`KpiCache` that async code
refreshes (one sums read per period, O(1) in the number of customers)::

    cache = KpiCache(settings, ttl_s=15)
    registry.register(PortfolioCollector(cache))
    ...
    await cache.get(redis)              # e.g. on a scrape: re-reads at most every ttl_s

Series are labelled by period kind (``month``/``quarter``: the current period), segment
(``all`` or ``seg<i>``) and, for the mixes, band or stage; cohort retention by cohort month
and months since sign-up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_app.portfolio.cohorts import CohortRow
from stream_app.portfolio.kpis import Kpis
from stream_app.portfolio.tracker import PortfolioTracker

#: metric name (after the namespace) -> (Kpis attribute, help)
GAUGES: dict[str, tuple[str, str]] = {
    "portfolio_customers_active": ("customers_end", "Customers active now (end of the current period so far)"),
    "portfolio_customers_start": ("customers_start", "Customers active at the start of the current period"),
    "portfolio_new_customers": ("new_customers", "Customers new (or reactivated) in the current period"),
    "portfolio_churned_customers": ("churned_customers", "Customers lost in the current period"),
    "portfolio_logo_churn_rate": ("logo_churn_rate", "Customers lost / customers at the period start"),
    "portfolio_logo_retention_rate": ("logo_retention_rate", "1 - logo churn rate"),
    "portfolio_mrr": ("mrr_end", "MRR of the active customers"),
    "portfolio_mrr_start": ("mrr_start", "MRR at the period start"),
    "portfolio_grr": ("grr", "Gross revenue retention of the period-start base"),
    "portfolio_nrr": ("nrr", "Net revenue retention of the period-start base"),
    "portfolio_expansion_customer_rate": ("expansion_customer_rate", "Share of the period-start base that upgraded"),
    "portfolio_expansion_mrr_rate": ("expansion_mrr_rate", "Expansion MRR / period-start MRR"),
    "portfolio_arpa": ("arpa", "MRR per active account"),
    "portfolio_clv": ("clv", "ARPA x gross margin / churn rate"),
    "portfolio_csat": ("csat", "Satisfied CSAT answers / CSAT answers in the period"),
    "portfolio_nps": ("nps", "Net promoter score of the period's answers"),
    "portfolio_engagement_rate": ("engagement_rate", "Active customers with product activity in the period"),
    "portfolio_repeat_rate": ("repeat_rate", "Engaged customers active on enough days in the period"),
    "portfolio_avg_health": ("avg_health", "Mean health score of the active customers"),
    "portfolio_at_risk_customers": ("at_risk_customers", "Active customers in the red band or above the risk threshold"),
    "portfolio_mrr_at_risk": ("mrr_at_risk", "MRR of the at-risk customers"),
}


def _kind(k: Kpis) -> str:
    return "quarter" if k.period and "Q" in k.period else "month"


@dataclass
class PortfolioSnapshot:
    """The current period's KPIs (per kind and segment) and the cohort table."""

    kpis: list[Kpis] = field(default_factory=list)
    cohorts: list[CohortRow] = field(default_factory=list)


def kpi_gauges(snapshot: PortfolioSnapshot, namespace: str = "churn_stream") -> list[Metric]:
    """The snapshot as Prometheus metric families (unknown KPIs are left out, not 0)."""
    out: list[Metric] = []
    for name, (attr, doc) in GAUGES.items():
        fam = GaugeMetricFamily(f"{namespace}_{name}", doc, labels=["period", "segment"])
        for k in snapshot.kpis:
            v = getattr(k, attr)
            if v is not None:
                fam.add_metric([_kind(k), k.segment], float(v))
        out.append(fam)
    bands = GaugeMetricFamily(f"{namespace}_portfolio_customers_by_band", "Active scored customers per health band",
                              labels=["period", "segment", "band"])
    stages = GaugeMetricFamily(f"{namespace}_portfolio_customers_by_stage", "Customers per lifecycle stage",
                               labels=["period", "segment", "stage"])
    for k in snapshot.kpis:
        for band, n in k.band_mix.items():
            bands.add_metric([_kind(k), k.segment, band], float(n))
        for stage, n in k.stage_mix.items():
            stages.add_metric([_kind(k), k.segment, stage], float(n))
    cohorts = GaugeMetricFamily(f"{namespace}_cohort_retention", "Share of a sign-up cohort still active after N months",
                                labels=["cohort", "months"])
    for row in snapshot.cohorts:
        for i, share in enumerate(row.retention, start=1):
            if share is not None:
                cohorts.add_metric([row.cohort, str(i)], share)
    return out + [bands, stages, cohorts]


class PortfolioCollector(Collector):
    """A ``prometheus_client`` collector over a snapshot source (no I/O on the scrape)."""

    def __init__(self, source: Callable[[], PortfolioSnapshot | None], namespace: str = "churn_stream") -> None:
        self.source = source
        self.namespace = namespace

    def collect(self) -> Iterator[Metric]:
        snap = self.source()
        if snap is not None:
            yield from kpi_gauges(snap, self.namespace)

    def describe(self) -> Iterable[Metric]:
        return []  # registration must not call the source


class KpiCache:
    """The dashboard's and ``/metrics``' view of the live KPIs, re-read at most every ``ttl_s``.

    ``get`` returns a JSON-ready dict: the last ``months`` months and the current quarter
    (everyone), and the cohort table; ``snapshot`` is what :class:`PortfolioCollector` reads
    (the current month and quarter, overall and per segment).
    """

    def __init__(self, settings: Any, ttl_s: float = 5.0, months: int = 3,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.tracker = PortfolioTracker(settings)
        self.ttl_s, self.months = ttl_s, months
        self.enabled = bool(settings.portfolio_enabled)
        self.snapshot: PortfolioSnapshot | None = None
        self._view: dict[str, Any] | None = None
        self._read_at = -1e18
        self._lock = asyncio.Lock()
        self._clock = clock

    async def get(self, redis: Any) -> dict[str, Any]:
        async with self._lock:
            now = self._clock()
            if self._view is None or now - self._read_at >= self.ttl_s:
                # each period kind read once: the dashboard's columns, and the current period
                # (the last column) with its segments for the gauges
                reports: dict[str, list[Kpis]] = {}
                current: list[Kpis] = []
                for kind in self.tracker.cfg.periods:
                    reports[kind] = await self.tracker.report(redis, kind, self.months if kind == "month" else 1)
                    current += reports[kind][-1:]
                    current += (await self.tracker.segment_reports(redis, kind)).values()
                self.snapshot = PortfolioSnapshot(kpis=current, cohorts=await self.tracker.cohorts(redis))
                self._view = {
                    "enabled": self.enabled,
                    "months": [k.model_dump(mode="json") for k in reports.get("month", [])],
                    "quarters": [k.model_dump(mode="json") for k in reports.get("quarter", [])],
                    "cohorts": [c.model_dump(mode="json") for c in self.snapshot.cohorts],
                    "gross_margin": self.tracker.cfg.gross_margin,
                }
                self._read_at = now
            return self._view

    def __call__(self) -> PortfolioSnapshot | None:
        return self.snapshot
