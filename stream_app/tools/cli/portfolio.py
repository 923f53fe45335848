"""Portfolio commands (issue 7): KPIs per period, cohorts, segments."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from stream_app.tools.cli.common import console, fmt, load_settings, with_tracker

#: (label, Kpis attribute, format) rows of the KPI table
_KPI_ROWS: list[tuple[str, str, str]] = [
    ("customers at start", "customers_start", ""), ("customers now/at end", "customers_end", ""),
    ("new customers", "new_customers", ""), ("churned customers", "churned_customers", ""),
    ("logo churn rate", "logo_churn_rate", "%"), ("logo retention rate", "logo_retention_rate", "%"),
    ("MRR at start", "mrr_start", "$"), ("MRR now/at end", "mrr_end", "$"), ("new MRR", "new_mrr", "$"),
    ("expansion MRR", "expansion_mrr", "$"), ("contraction MRR", "contraction_mrr", "$"),
    ("churned MRR", "churned_mrr", "$"), ("gross revenue retention", "grr", "%"),
    ("net revenue retention", "nrr", "%"), ("customers expanding", "expansion_customer_rate", "%"),
    ("expansion MRR rate", "expansion_mrr_rate", "%"), ("ARPA (monthly)", "arpa", "$"), ("CLV", "clv", "$"),
    ("CSAT", "csat", "%"), ("CSAT answers", "csat_responses", ""), ("NPS", "nps", ""),
    ("NPS answers", "nps_responses", ""), ("engagement rate", "engagement_rate", "%"),
    ("repeat rate", "repeat_rate", "%"), ("average health", "avg_health", ""),
    ("at-risk customers", "at_risk_customers", ""), ("MRR at risk", "mrr_at_risk", "$"),
    ("MRR at risk share", "mrr_at_risk_share", "%"),
]


@click.command()
@click.option("--period", "kind", type=click.Choice(["month", "quarter"]), default="month", show_default=True)
@click.option("--periods", "count", type=click.IntRange(1, 24), default=3, show_default=True,
              help="How many periods, ending with the current one")
@click.option("--segment", default=None, help="One segment (seg0, seg1, ...); default: everyone")
@click.option("--json", "as_json", is_flag=True)
def kpis(kind: str, count: int, segment: str | None, as_json: bool) -> None:
    """Portfolio KPIs per period: churn, retention, GRR/NRR, CSAT, NPS, ARPA, CLV, health, MRR at risk."""
    settings = load_settings()
    rows = with_tracker(settings, lambda t, r: t.report(r, kind, count, segment))  # type: ignore[arg-type]
    if as_json:
        click.echo(json.dumps({"period": kind, "segment": segment or "all",
                               "periods": [k.model_dump(mode="json") for k in rows]}, indent=2))
        return
    if not rows:
        console.print("no portfolio data yet")
        sys.exit(1)
    table = Table(f"{kind} ({segment or 'all customers'})",
                  *[f"{k.period}{' (so far)' if k.partial else ''}" for k in rows])
    for label, attr, f in _KPI_ROWS:
        table.add_row(label, *[fmt(getattr(k, attr), pct=f == "%", money=f == "$") for k in rows])
    table.add_row("band mix g/y/r", *["/".join(str(n) for n in k.band_mix.values()) for k in rows])
    for stage in rows[-1].stage_mix:
        table.add_row(f"stage: {stage}", *[str(k.stage_mix.get(stage, 0)) for k in rows])
    Console().print(table)


@click.command()
@click.option("--json", "as_json", is_flag=True)
def cohorts(as_json: bool) -> None:
    """Cohort retention: per sign-up month, the share still active after 1..12 months."""
    settings = load_settings()
    rows = with_tracker(settings, lambda t, r: t.cohorts(r))
    if as_json:
        click.echo(json.dumps([row.model_dump(mode="json") for row in rows], indent=2))
        return
    if not rows:
        console.print("no cohorts yet")
        sys.exit(1)
    width = max(len(r.retention) for r in rows)
    table = Table("cohort", "size", *[f"+{i}m" for i in range(1, width + 1)])
    for row in rows:
        cells = [f"{100 * v:.0f}%" if v is not None else "-" for v in row.retention]
        if row.last_partial and cells:
            cells[-1] += "*"
        table.add_row(row.cohort, str(row.size), *cells, *([""] * (width - len(cells))))
    Console().print(table)
    Console().print("* the current month, so far")


@click.command()
@click.option("--json", "as_json", is_flag=True)
def segments(as_json: bool) -> None:
    """Behavioural segments: size and strongest traits (the current month's KPIs per segment)."""
    settings = load_settings()

    async def fetch(t: Any, r: Any) -> tuple[list[Any], dict[str, Any]]:
        return await t.describe_segments(r), await t.segment_reports(r, "month")

    infos, reports = with_tracker(settings, fetch)
    if as_json:
        click.echo(json.dumps([{**i.as_dict(), "kpis": reports[i.segment].model_dump(mode="json")
                                if i.segment in reports else None} for i in infos], indent=2))
        return
    table = Table("segment", "customers", "MRR", "churn", "avg health", "NPS", "traits")
    for i in infos:
        k = reports.get(i.segment)
        table.add_row(i.segment, fmt(k.customers_end if k else 0), fmt(k.mrr_end if k else None, money=True),
                      fmt(k.logo_churn_rate if k else None, pct=True), fmt(k.avg_health if k else None),
                      fmt(k.nps if k else None), "; ".join(t.text for t in i.traits))
    Console().print(table)
