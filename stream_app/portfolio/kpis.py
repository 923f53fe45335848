"""Portfolio KPIs from one period's sums (pure): the formulas, in one place.

``sums`` maps ``FIELDS`` (see ``contributions``) to their totals over the customers of a
group (everyone or one segment). Money is in cents in the sums and in currency units here.
A ratio with an empty denominator is ``None`` (unknown), never 0.

Definitions (period = a calendar month or quarter, event time):

* **CSAT** = satisfied answers (4-5 of 5) / CSAT answers in the period.
* **NPS** = 100 x (promoters 9-10 - detractors 0-6) / NPS answers in the period.
* **Logo churn rate** = customers active at the start and not at the end / customers active
  at the start; **retention rate** = 1 - churn (customers new in the period excluded).
* **GRR** = sum over customers active at the start of min(MRR start, MRR end) / their MRR
  at the start (churn and contraction, no expansion); **NRR** = their MRR at the end / at
  the start (expansion included, new customers excluded).
* **Expansion rate**: share of customers active at the start with an upgrade in the period,
  and expansion MRR (sum of max(0, end - start) over them) / their MRR at the start.
* **ARPA** = MRR at the end / customers active at the end (monthly).
* **CLV** = ARPA x months in the period x gross margin / logo churn rate of the period
  (revenue per period over the expected number of periods a customer stays); ``None`` when
  nobody churned.
* **Engagement rate** = customers active at the end with any product activity in the period
  / customers active at the end; **repeat rate** = of those engaged, the share active on at
  least ``repeat_min_days`` per month of the period.
* **Average health** and the **band mix** over the scored customers active at the end.
* **MRR at risk** = MRR of the customers active at the end whose band is red or whose churn
  probability is at least the risk threshold.

>>> s = {"a0": 10, "a1": 10, "lost": 1, "new": 1, "m0": 100000, "m1": 105000, "rm": 99000, "gm": 88000,
...      "xm": 11000, "xc": 2, "csat": 8, "sat": 6, "nps": 10, "pro": 5, "det": 2, "eng": 9, "rep": 6,
...      "sc": 10, "hs": 6500, "g": 5, "y": 3, "r": 2, "risk": 3, "mar": 30000}
>>> k = compute_kpis(s, months=1, gross_margin=0.8)
>>> k.logo_churn_rate, k.logo_retention_rate, k.grr, k.nrr, k.csat, k.nps
(0.1, 0.9, 0.88, 0.99, 0.75, 30.0)
>>> k.arpa, k.clv, k.expansion_customer_rate, k.expansion_mrr_rate, k.avg_health, k.mrr_at_risk
(105.0, 840.0, 0.2, 0.11, 65.0, 300.0)
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from stream_app.portfolio.lifecycle import STAGES


def _ratio(a: float, b: float, digits: int = 4) -> float | None:
    return round(a / b, digits) if b else None


class Kpis(BaseModel):
    """The KPIs of one group (everyone or a segment) in one period."""

    period: str | None = None
    segment: str = Field("all", description="'all' or a segment label")
    partial: bool = Field(False, description="the period has not ended (figures as of now)")
    customers_start: int = 0
    customers_end: int = 0
    new_customers: int = 0
    churned_customers: int = 0
    signups: int = 0
    logo_churn_rate: float | None = None
    logo_retention_rate: float | None = None
    mrr_start: float = 0.0
    mrr_end: float = 0.0
    new_mrr: float = 0.0
    expansion_mrr: float = 0.0
    contraction_mrr: float = 0.0
    churned_mrr: float = 0.0
    grr: float | None = Field(None, description="gross revenue retention")
    nrr: float | None = Field(None, description="net revenue retention")
    expanded_customers: int = 0
    expansion_customer_rate: float | None = None
    expansion_mrr_rate: float | None = None
    upgrades: int = 0
    downgrades: int = 0
    arpa: float | None = Field(None, description="MRR per active account at the end")
    clv: float | None = None
    csat: float | None = None
    csat_responses: int = 0
    nps: float | None = None
    nps_responses: int = 0
    engagement_rate: float | None = None
    repeat_rate: float | None = None
    mean_active_days: float | None = None
    scored_customers: int = 0
    avg_health: float | None = None
    band_mix: dict[str, int] = Field(default_factory=dict)
    band_share: dict[str, float | None] = Field(default_factory=dict)
    at_risk_customers: int = 0
    mrr_at_risk: float = 0.0
    mrr_at_risk_share: float | None = None
    stage_mix: dict[str, int] = Field(default_factory=dict)


def compute_kpis(
    sums: Mapping[str, int], months: int, gross_margin: float, period: str | None = None,
    segment: str = "all", partial: bool = False,
) -> Kpis:
    """All KPIs of one group from its sums (missing fields count 0)."""
    def g(f: str) -> int:
        return int(sums.get(f, 0))

    a0, a1, lost = g("a0"), g("a1"), g("lost")
    m0, m1 = g("m0"), g("m1")
    churn = _ratio(lost, a0)
    arpa = round(m1 / 100 / a1, 2) if a1 else None
    clv = round(arpa * months * gross_margin / churn, 2) if (arpa is not None and churn) else None
    sc = g("sc")
    bands = {"green": g("g"), "yellow": g("y"), "red": g("r")}
    return Kpis(
        period=period, segment=segment, partial=partial,
        customers_start=a0, customers_end=a1, new_customers=g("new"), churned_customers=lost, signups=g("su"),
        logo_churn_rate=churn, logo_retention_rate=round(1 - churn, 4) if churn is not None else None,
        mrr_start=m0 / 100, mrr_end=m1 / 100, new_mrr=g("nm") / 100, expansion_mrr=g("xm") / 100,
        contraction_mrr=g("cm") / 100, churned_mrr=g("lm") / 100,
        grr=_ratio(g("gm"), m0), nrr=_ratio(g("rm"), m0),
        expanded_customers=g("xc"), expansion_customer_rate=_ratio(g("xc"), a0),
        expansion_mrr_rate=_ratio(g("xm"), m0), upgrades=g("up"), downgrades=g("dn"),
        arpa=arpa, clv=clv,
        csat=_ratio(g("sat"), g("csat")), csat_responses=g("csat"),
        nps=round(100 * (g("pro") - g("det")) / g("nps"), 2) if g("nps") else None, nps_responses=g("nps"),
        engagement_rate=_ratio(g("eng"), a1), repeat_rate=_ratio(g("rep"), g("eng")),
        mean_active_days=_ratio(g("ad"), a1, 2),
        scored_customers=sc, avg_health=round(g("hs") / 10 / sc, 2) if sc else None,
        band_mix=bands, band_share={b: _ratio(n, sc) for b, n in bands.items()},
        at_risk_customers=g("risk"), mrr_at_risk=g("mar") / 100, mrr_at_risk_share=_ratio(g("mar"), m1),
        stage_mix={st: g(f"s_{st}") for st in STAGES},
    )


def split_groups(raw_sums: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """``{"<group>:<field>": n}`` (the Redis sums hash) -> group -> field -> n.

    >>> split_groups({"*:a0": 3, "seg1:a0": 1, "c2026-01:su": 2})
    {'*': {'a0': 3}, 'seg1': {'a0': 1}, 'c2026-01': {'su': 2}}
    """
    out: dict[str, dict[str, int]] = {}
    for key, n in raw_sums.items():
        group, _, f = key.rpartition(":")
        out.setdefault(group, {})[f] = int(n)
    return out
