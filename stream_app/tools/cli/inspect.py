"""Commands that look at the state: one customer, the riskiest, the alert feed, the model."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

import click
from rich.console import Console
from rich.table import Table

from stream_app.read.queries import customer_view, model_summary, riskiest
from stream_app.tools.alert_feed import alert_line, tail_alerts
from stream_app.tools.cli.common import console, load_settings, with_store


@click.command()
@click.argument("customer_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON")
@click.option("--as-of", default=None, help="Event time (ISO-8601); default: the newest event time applied")
def customer(customer_id: str, as_json: bool, as_of: str | None) -> None:
    """Print one customer's health and current aggregates."""
    settings = load_settings()
    now_ms = int(datetime.fromisoformat(as_of).timestamp() * 1000) if as_of else None
    view = with_store(settings, lambda store: customer_view(store, settings, customer_id, now_ms))
    if view is None:
        console.print(f"[red]no state for customer {customer_id!r}[/red]")
        sys.exit(1)
    if as_json:
        data = view.aggregates.model_dump(mode="json")
        data["health"] = view.health.model_dump(mode="json")
        click.echo(json.dumps(data, indent=2))
        return
    agg, h = view.aggregates, view.health
    colour = {"green": "green", "yellow": "yellow", "red": "red"}.get(h.health_band or "", "white")
    out = Console()
    out.print(f"[bold]{agg.customer_id}[/bold]  as of {agg.as_of:%Y-%m-%d %H:%M}  status={agg.subscription_status}  "
              f"plan={agg.plan}  MRR={agg.mrr}  MRR change {agg.mrr_change_window_days}d={agg.mrr_change}")
    out.print(f"health [{colour}]{h.health_score} ({h.health_band})[/{colour}]  trend 7d={h.trend_7d} 30d={h.trend_30d}  "
              f"churn probability={h.churn_probability} ({h.model_version})")
    for r in h.reasons:
        out.print(f"  - {r['factor']}: {r['impact']:+} points")
    if h.last_change:
        lc = h.last_change
        out.print(f"last change: health {lc['health_score_before']:g} -> {lc['health_score_after']:g} "
                  f"since the score of {lc['since'][:16].replace('T', ' ')}")
        for c in lc["changes"]:
            out.print(f"  - {c['name']}: {c['impact']:+g} points")
    table = Table("metric", *agg.windows.keys())
    rows = [k for k in next(iter(agg.windows.values())).model_dump() if k not in ("days",)]
    def cell(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:,.2f}"
        if isinstance(v, dict):
            return ", ".join(f"{a}={n}" for a, n in v.items()) or "-"
        return f"{v:,}" if isinstance(v, int) else str(v)

    for k in rows:
        table.add_row(k, *[cell(getattr(w, k)) for w in agg.windows.values()])
    out.print(table)


@click.command()
@click.option("--n", "count", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def top(count: int, as_json: bool) -> None:
    """The riskiest customers (highest churn probability)."""
    settings = load_settings()
    rows = with_store(settings, lambda store: riskiest(store, settings, count))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("customer", "churn p", "health", "band", "MRR", "top reasons", "model")
    for r in rows:
        colour = {"green": "green", "yellow": "yellow", "red": "red"}.get(r["health_band"] or "", "white")
        table.add_row(r["customer_id"], f"{r['churn_probability']:.2f}", str(r["health_score"]),
                      f"[{colour}]{r['health_band']}[/{colour}]", str(r["mrr"]), ", ".join(r["reasons"]),
                      r["model_version"] or "")
    Console().print(table)


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new alerts as they are published (Ctrl-C stops)")
@click.option("--last", "last", type=int, default=20, show_default=True, help="Start with the newest N alerts")
@click.option("--from-beginning", is_flag=True, help="Start with every alert on the topic")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for piping)")
def alerts(follow: bool, last: int, from_beginning: bool, as_json: bool) -> None:
    """The at-risk alert feed from the alerts topic, coloured by severity."""
    settings = load_settings()
    out = Console(highlight=False)

    async def run() -> int:
        n = 0
        async for alert in tail_alerts(settings.bootstrap_servers(), settings.topic("alerts"), last=last,
                                       from_beginning=from_beginning, follow=follow,
                                       **settings.kafka_client_kwargs()):
            n += 1
            if as_json:
                click.echo(json.dumps(alert, separators=(",", ":")), nl=True)
                sys.stdout.flush()
            else:
                out.print(alert_line(alert), soft_wrap=True)
        return n

    try:
        n = asyncio.run(run())
    except KeyboardInterrupt:
        return
    if n == 0 and not as_json:
        console.print(f"no alerts on {settings.topic('alerts')} yet")


@click.command()
@click.option("--json", "as_json", is_flag=True)
def model(as_json: bool) -> None:
    """The churn model: version, labels seen, prequential metrics, strongest features."""
    settings = load_settings()
    summary = with_store(settings, lambda store: model_summary(store, settings))
    if summary is None:
        console.print("no model checkpoint yet: scores use the health prior until labels resolve")
        summary = {"serving": "prior-health-v1", "labels_seen": 0}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    Console().print(summary)
