"""Portfolio KPIs from per-customer contributions: a hand-computed month, quarters, cohorts,
Prometheus gauges (pure: no Redis)."""

from __future__ import annotations

from collections import defaultdict

import pytest
from prometheus_client import CollectorRegistry

from stream_app.portfolio.cohorts import cohort_table
from stream_app.portfolio.contributions import FIELDS, Contribution, EventFacts, ScoreFacts, carry, combine, decode_values
from stream_app.ops.kpi_metrics import PortfolioCollector, PortfolioSnapshot
from stream_app.portfolio.kpis import compute_kpis
from stream_app.portfolio.periods import month, parse_label

FEB = parse_label("2026-02")


def sums_of(records: list[Contribution], group: str = "*", repeat_min_days: int = 4) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for r in records:
        for f, v in decode_values(r.encode(repeat_min_days)).get(group, {}).items():
            if v:  # as the Lua script: a zero changes no sum
                out[f] += v
    return dict(out)


def S(health: float, band: str, stage: str, risky: bool = False, seg: str = "seg0") -> ScoreFacts:
    return ScoreFacts(health10=int(health * 10), band=band, risky=risky, stage=stage, segment=seg)


@pytest.fixture
def february() -> list[Contribution]:
    """Five customers in February 2026 (MRR in cents):

    A  active throughout, upgraded 100 -> 150, NPS 10, CSAT 5, 10 active days, health 80 green, loyal
    B  active at the start, cancelled (200 -> 0), NPS 3, CSAT 2, 2 active days, churned
    C  active throughout, downgraded 300 -> 240, CSAT 4, 3 active days, health 50 yellow, at risk (p >= threshold)
    D  signed up in February at 50, NPS 8, no activity, health 60 yellow, onboarding
    E  active throughout at 100, NPS 9, 5 active days, health 75 green, established
    """
    jan = FEB.index - 1
    return [
        Contribution(FEB, EventFacts(a0=True, a1=True, m0=10000, m1=15000, up=1, nps=1, pro=1, csat=1, sat=1, ad=10),
                     S(80, "green", "loyal"), signup=jan - 12),
        Contribution(FEB, EventFacts(a0=True, a1=False, m0=20000, m1=0, nps=1, det=1, csat=1, ad=2),
                     S(30, "red", "churned", seg="seg1"), signup=jan - 3),
        Contribution(FEB, EventFacts(a0=True, a1=True, m0=30000, m1=24000, dn=1, csat=1, sat=1, ad=3),
                     S(50, "yellow", "at_risk", risky=True, seg="seg1"), signup=jan),
        Contribution(FEB, EventFacts(a0=False, a1=True, m0=0, m1=5000, started=1, nps=1), S(60, "yellow", "onboarding"),
                     signup=FEB.index),
        Contribution(FEB, EventFacts(a0=True, a1=True, m0=10000, m1=10000, nps=1, pro=1, ad=5),
                     S(75, "green", "established"), signup=jan),
    ]


def test_each_kpi_against_the_hand_computed_month(february: list[Contribution]) -> None:
    k = compute_kpis(sums_of(february), months=1, gross_margin=0.8)
    assert (k.customers_start, k.customers_end, k.new_customers, k.churned_customers, k.signups) == (4, 4, 1, 1, 1)
    assert k.logo_churn_rate == 0.25 and k.logo_retention_rate == 0.75
    assert (k.mrr_start, k.mrr_end, k.new_mrr) == (700.0, 540.0, 50.0)
    assert (k.expansion_mrr, k.contraction_mrr, k.churned_mrr) == (50.0, 60.0, 200.0)
    assert k.grr == round(440 / 700, 4)  # A 100 + B 0 + C 240 + E 100, no expansion
    assert k.nrr == 0.7  # A 150 + B 0 + C 240 + E 100 over 700
    assert k.expanded_customers == 1 and k.expansion_customer_rate == 0.25
    assert k.expansion_mrr_rate == round(50 / 700, 4)
    assert (k.upgrades, k.downgrades) == (1, 1)
    assert k.arpa == 135.0  # 540 / 4
    assert k.clv == 432.0  # 135 x 1 month x 0.8 / 0.25
    assert k.csat == round(2 / 3, 4) and k.csat_responses == 3  # A 5 and C 4 satisfied, B 2 not
    assert k.nps == 25.0 and k.nps_responses == 4  # promoters A, E; detractor B; passive D
    assert k.engagement_rate == 0.75  # A, C, E of the four active at the end (D had no activity)
    assert k.repeat_rate == round(2 / 3, 4)  # A (10 days) and E (5) of the engaged; C (3) below 4
    assert k.mean_active_days == 4.5  # (10 + 3 + 0 + 5) / 4
    assert k.avg_health == 66.25 and k.band_mix == {"green": 2, "yellow": 2, "red": 0}  # B (lost) not scored
    assert k.at_risk_customers == 1 and k.mrr_at_risk == 240.0 and k.mrr_at_risk_share == round(240 / 540, 4)
    assert k.stage_mix == {"onboarding": 1, "adopting": 0, "established": 1, "loyal": 1, "at_risk": 1, "churned": 1}


def test_segments_partition_the_portfolio(february: list[Contribution]) -> None:
    total = sums_of(february)
    by_segment = [sums_of(february, g) for g in ("seg0", "seg1")]
    assert {f: by_segment[0].get(f, 0) + by_segment[1].get(f, 0) for f in total} == total
    seg1 = compute_kpis(by_segment[1], months=1, gross_margin=0.8, segment="seg1")
    assert seg1.customers_start == 2 and seg1.logo_churn_rate == 0.5 and seg1.nrr == 0.48  # 240 / 500


def test_mrr_identities_hold_for_every_record(february: list[Contribution]) -> None:
    s = sums_of(february)
    assert s["m0"] == s["gm"] + s["cm"] + s["lm"]  # the start base: kept, contracted or lost
    assert s["rm"] == s["gm"] + s["xm"]  # the start base at the end: kept plus expansion
    assert s["m1"] == s["rm"] + s["nm"]  # all MRR at the end: start base plus new


def test_unknown_ratios_are_none_not_zero() -> None:
    k = compute_kpis({}, months=1, gross_margin=0.8)
    assert k.logo_churn_rate is None and k.nrr is None and k.csat is None and k.nps is None and k.arpa is None
    no_churn = compute_kpis({"a0": 2, "a1": 2, "m0": 100, "m1": 100}, months=1, gross_margin=0.8)
    assert no_churn.logo_churn_rate == 0.0 and no_churn.clv is None  # nobody left: lifetime unbounded


def test_quarter_combines_its_months_and_carry_is_consistent() -> None:
    q1 = parse_label("2026Q1")
    jan, feb, mar = (month(m) for m in q1.month_indices)
    recs = {
        jan.index: Contribution(jan, EventFacts(a0=True, a1=True, m0=100, m1=120, up=1, nps=2, pro=1, ad=6), S(70, "green", "loyal")),
        feb.index: Contribution(feb, EventFacts(a0=True, a1=False, m0=120, m1=0, csat=1, sat=1, ad=2), S(40, "red", "churned")),
        mar.index: Contribution(mar, EventFacts(a0=False, a1=True, m0=0, m1=90, ad=4), S(65, "yellow", "adopting")),
    }
    q = combine(q1, recs, mar.index)
    assert (q.facts.a0, q.facts.m0, q.facts.a1, q.facts.m1) == (True, 100, True, 90)
    assert (q.facts.up, q.facts.nps, q.facts.pro, q.facts.csat, q.facts.ad) == (1, 2, 1, 1, 12)
    assert q.score.stage == "adopting"  # the latest month's scoring
    # a reactivated customer is retained over the quarter even though it churned in a month
    assert dict(zip(FIELDS, q.values()))["lost"] == 0
    # combined so far (the quarter not over): the end state is the latest month's
    assert combine(q1, recs, feb.index).facts.a1 is False
    # months with no events are carried: the quarter of carried months is the carried quarter
    dec = Contribution(parse_label("2025-12"), EventFacts(a0=True, a1=True, m0=80, m1=100, nps=3), S(70, "green", "loyal"))
    carried = {m: carry(dec, month(m)) for m in q1.month_indices}
    q4 = Contribution(parse_label("2025Q4"), EventFacts(a0=True, a1=True, m0=50, m1=100, nps=3), S(70, "green", "loyal"))
    assert combine(q1, carried, mar.index).facts == carry(q4, q1).facts


def test_encoding_round_trips() -> None:
    r = Contribution(FEB, EventFacts(a0=True, a1=True, m0=1, m1=2, started=1, up=3, dn=4, nps=5, pro=6, det=7,
                                     csat=8, sat=9, ad=10), S(55.5, "yellow", "at_risk", risky=True), signup=FEB.index)
    assert Contribution.decode(FEB, r.encode()) == r
    assert Contribution(FEB, EventFacts()).encode() == ""  # nothing to count: no record


def test_cohort_table_from_monthly_sums(february: list[Contribution]) -> None:
    # cohort 2026-01 (C, E) in February: both still active; cohort 2026-02 (D): its own month
    feb = {g: s for g in ("c2026-01", "c2026-02") if (s := sums_of(february, g))}
    assert feb == {"c2026-01": {"a1": 2}, "c2026-02": {"su": 1, "a1": 1}}
    jan = {"c2026-01": {"su": 2, "a1": 2}}
    rows = cohort_table({FEB.index - 1: jan, FEB.index: feb}, current_month=FEB.index)
    assert [(r.cohort, r.size, r.retention, r.last_partial) for r in rows] == [
        ("2026-01", 2, [1.0], True), ("2026-02", 1, [], False)]


def test_prometheus_gauges_yield_the_kpis(february: list[Contribution]) -> None:
    k = compute_kpis(sums_of(february), months=1, gross_margin=0.8, period="2026-02")
    seg1 = compute_kpis(sums_of(february, "seg1"), months=1, gross_margin=0.8, period="2026-02", segment="seg1")
    rows = cohort_table({FEB.index - 1: {"c2026-01": {"su": 2, "a1": 2}}, FEB.index: {"c2026-01": {"a1": 1}}}, FEB.index)
    snap = PortfolioSnapshot(kpis=[k, seg1], cohorts=rows)
    registry = CollectorRegistry()
    registry.register(PortfolioCollector(lambda: snap))
    get = registry.get_sample_value
    assert get("churn_stream_portfolio_nrr", {"period": "month", "segment": "all"}) == 0.7
    assert get("churn_stream_portfolio_nrr", {"period": "month", "segment": "seg1"}) == 0.48
    assert get("churn_stream_portfolio_mrr_at_risk", {"period": "month", "segment": "all"}) == 240.0
    assert get("churn_stream_portfolio_nps", {"period": "month", "segment": "all"}) == 25.0
    assert get("churn_stream_portfolio_customers_by_band", {"period": "month", "segment": "all", "band": "green"}) == 2
    assert get("churn_stream_portfolio_customers_by_stage", {"period": "month", "segment": "all", "stage": "loyal"}) == 1
    assert get("churn_stream_cohort_retention", {"cohort": "2026-01", "months": "1"}) == 0.5
    # an unknown ratio is no sample, not a misleading 0
    empty = CollectorRegistry()
    empty.register(PortfolioCollector(lambda: PortfolioSnapshot(kpis=[compute_kpis({}, 1, 0.8)])))
    assert empty.get_sample_value("churn_stream_portfolio_nrr", {"period": "month", "segment": "all"}) is None
    nothing = CollectorRegistry()
    nothing.register(PortfolioCollector(lambda: None))
    assert nothing.get_sample_value("churn_stream_portfolio_mrr", {"period": "month", "segment": "all"}) is None
