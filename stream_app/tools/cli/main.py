"""``stream-app``: the command line (worker, demo, replay, simulate, customer, schemas)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stream_app.settings import EXAMPLES_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS, Settings

console = Console(stderr=True)


def load_settings() -> Settings:
    from stream_app.settings import describe_settings_error

    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: name the variable and the rule, never the value
        console.print(f"[red]configuration error:[/red] {escape(describe_settings_error(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def all_topics(settings: Settings) -> dict[str, int]:
    topics = {settings.topic(t): settings.topic_partitions for t in INPUT_TOPICS}
    topics.update({settings.topic(t): settings.topic_partitions for t in ("alerts", "scores")})
    topics[settings.topic("deadletter")] = 1
    topics[settings.topic(EXAMPLES_TOPIC)] = 1  # one partition: one learner, one model
    assert set(OUTPUT_TOPICS) <= {t[len(settings.topic_prefix) :] for t in topics}
    return topics


def broker_error(settings: Settings, exc: BaseException) -> str:
    """What failed when connecting to the broker, with the security settings that were used
    (user name and mechanism, never the password).

    >>> s = Settings(_env_file=None, broker_url="kafka://k:9093", broker_security_protocol="SASL_SSL",
    ...              broker_sasl_username="svc", broker_sasl_password="hunter2")
    >>> broker_error(s, ConnectionError("Unable to bootstrap"))
    "k:9093 (SASL_SSL, SCRAM-SHA-512 as 'svc'): ConnectionError: Unable to bootstrap; a rejected login or certificate is logged above by the Kafka client"
    """
    from stream_app.settings import redact_url

    how = settings.broker_security_protocol
    if how.startswith("SASL"):
        how += f", {settings.broker_sasl_mechanism} as {settings.broker_sasl_username!r}"
    where = ",".join(redact_url(h) for h in settings.bootstrap_servers())
    return (f"{where} ({how}): {type(exc).__name__}: {exc}; "
            "a rejected login or certificate is logged above by the Kafka client")


@click.group()
def main() -> None:
    """churn-stream: real-time customer health on Kafka, Faust and Redis."""


@main.command()
def worker() -> None:
    """Run the Faust worker (needs BROKER_URL and REDIS_URL)."""
    import faust

    from stream_app.pipeline.app import create_app
    from stream_app.tools.embedded import ensure_topics

    settings = load_settings()
    setup_logging(settings.log_level)
    try:
        asyncio.run(
            ensure_topics(
                settings.bootstrap_servers(),
                all_topics(settings),
                settings.topic_replication,
                settings.kafka_client_kwargs(),
            )
        )
    except Exception as exc:  # noqa: BLE001 - the first contact with the broker: say what was tried
        console.print(f"[red]cannot use the broker:[/red] {escape(broker_error(settings, exc))}", highlight=False,
                      soft_wrap=True)
        sys.exit(1)
    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible)")
def replay(file: str, rate: float | None) -> None:
    """Produce a JSON Lines file (optionally .gz) of contract events to Kafka."""
    from stream_app.tools.replay import replay as do_replay

    settings = load_settings()
    with Progress(
        TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("replay", total=None)
        report = asyncio.run(do_replay(file, settings, rate, lambda n: progress.update(task, completed=n)))
    console.print(f"produced {report.produced} events in {report.seconds:.1f}s ({report.rate:,.0f}/s): {report.by_topic}")
    for lineno, reason in report.unroutable[:20]:
        console.print(f"[yellow]line {lineno} not produced:[/yellow] {reason}")
    if report.unroutable:
        console.print(f"[yellow]{len(report.unroutable)} line(s) could not be routed to a topic[/yellow]")
        sys.exit(1)


@main.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
def rebuild(yes: bool) -> None:
    """Rebuild Redis state from the input topics (after Redis lost its data). Stop the workers first."""
    from stream_app.tools.rebuild import rebuild as do_rebuild

    settings = load_settings()
    if not yes:
        click.confirm(f"Delete every key under {settings.key_prefix!r} and rebuild it from Kafka "
                      f"(all workers of {settings.app_id!r} stopped)?", abort=True)
    with Progress(TextColumn("rebuild"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("rebuild", total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = _with_store(settings, lambda store: do_rebuild(settings, store.redis, step))
    console.print(f"rebuilt from {report['records']:,} records on {report['partitions']} partitions "
                  f"({report['deleted_keys']:,} stale keys deleted; not re-published: {report['not_republished']})")


def _with_store(settings: Settings, fn: Any) -> Any:
    """Run ``await fn(store)`` against the configured Redis."""
    from stream_app.pipeline.clients import redis_client
    from stream_app.state.store import StateStore

    from redis.exceptions import RedisError

    from stream_app.settings import redact_url

    async def run() -> Any:
        client = redis_client(settings)
        try:
            return await fn(StateStore(client, settings))
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except (RedisError, OSError) as exc:  # say what failed and where, without credentials
        where = redact_url(settings.redis_url or "")
        console.print(f"[red]Redis at {escape(where)}:[/red] {type(exc).__name__}: {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)


@main.command()
@click.argument("customer_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON")
@click.option("--as-of", default=None, help="Event time (ISO-8601); default: the newest event time applied")
def customer(customer_id: str, as_json: bool, as_of: str | None) -> None:
    """Print one customer's health and current aggregates."""
    from rich.table import Table

    from stream_app.read.queries import customer_view

    settings = load_settings()
    now_ms = int(datetime.fromisoformat(as_of).timestamp() * 1000) if as_of else None
    view = _with_store(settings, lambda store: customer_view(store, settings, customer_id, now_ms))
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


@main.command()
@click.option("--n", "count", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def top(count: int, as_json: bool) -> None:
    """The riskiest customers (highest churn probability)."""
    from rich.table import Table

    from stream_app.read.queries import riskiest

    settings = load_settings()
    rows = _with_store(settings, lambda store: riskiest(store, settings, count))
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


@main.command()
@click.option("--follow", "-f", is_flag=True, help="Keep printing new alerts as they are published (Ctrl-C stops)")
@click.option("--last", "last", type=int, default=20, show_default=True, help="Start with the newest N alerts")
@click.option("--from-beginning", is_flag=True, help="Start with every alert on the topic")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for piping)")
def alerts(follow: bool, last: int, from_beginning: bool, as_json: bool) -> None:
    """The at-risk alert feed from the alerts topic, coloured by severity."""
    from stream_app.tools.alert_feed import alert_line, tail_alerts

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


@main.command()
@click.option("--json", "as_json", is_flag=True)
def model(as_json: bool) -> None:
    """The churn model: version, labels seen, prequential metrics, strongest features."""
    from stream_app.read.queries import model_summary

    settings = load_settings()
    summary = _with_store(settings, lambda store: model_summary(store, settings))
    if summary is None:
        console.print("no model checkpoint yet: scores use the health prior until labels resolve")
        summary = {"serving": "prior-health-v1", "labels_seen": 0}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    Console().print(summary)


@main.command()
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Directory to write <name>.schema.json")
def schemas(out: str | None) -> None:
    """Write (or print) the JSON Schema of every wire message."""
    from schemas import json_schemas

    all_schemas = json_schemas()
    if out is None:
        click.echo(json.dumps(all_schemas, indent=2))
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas.items():
        (Path(out) / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    console.print(f"wrote {len(all_schemas)} schemas to {out}")


@main.command()
@click.option("--customers", type=int, default=300, show_default=True)
@click.option("--days", type=int, default=90, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--start", default="2026-01-01T00:00:00+00:00", show_default=True, help="First simulated day (ISO)")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="JSON Lines output (.gz to compress)")
@click.option("--truth", type=click.Path(dir_okay=False), default=None, help="Ground truth per customer (JSON Lines)")
@click.option("--activity-scale", type=float, default=1.0, show_default=True, help="Multiplies activity volume")
def simulate(customers: int, days: int, seed: int, start: str, out: str, truth: str | None, activity_scale: float) -> None:
    """Generate a realistic event history (and its ground truth) to files."""
    from stream_app.tools.simulator.engine import SimConfig, Simulator, write_jsonl, write_truth

    cfg = SimConfig(customers=customers, days=days, seed=seed, start=datetime.fromisoformat(start).astimezone(timezone.utc),
                    activity_scale=activity_scale)
    sim = Simulator(cfg)
    start_ms = int(cfg.start.timestamp() * 1000)
    with Progress(TextColumn("simulate: day"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[events]:,} events"),
                  TimeElapsedColumn(), console=console) as p:
        task = p.add_task("simulate", total=days, events=0)

        def counted():  # type: ignore[no-untyped-def]
            for i, e in enumerate(sim.events(), start=1):
                if i % 5000 == 0:
                    p.update(task, completed=min(days, (e.ts_ms - start_ms) // 86_400_000 + 1), events=i)
                yield e

        n = write_jsonl(out, counted())
        p.update(task, completed=days, events=n)
    console.print(f"wrote {n} events for {customers} customers over {days} days to {out}")
    if truth:
        write_truth(truth, sim.truth())
        console.print(f"wrote ground truth to {truth}")


@main.command()
@click.option("--customers", type=int, default=300, show_default=True)
@click.option("--days", type=int, default=120, show_default=True, help="Simulated days of history to stream")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Simulated days per wall-clock second")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)")
def demo(customers: int, days: int, speed: float, duration: float | None) -> None:
    """Everything embedded: broker, Redis, worker, simulator and a live view. Ctrl-C stops it."""
    from stream_app.tools.demo import run_demo

    setup_logging(os.environ.get("LOG_LEVEL", "warning"))
    sys.exit(run_demo(customers=customers, days=days, speed=speed, duration=duration))


@main.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on")
def dashboard(host: str) -> None:
    """Serve the live dashboard on WEB_PORT (reads REDIS_URL, BROKER_URL for the alert feed)."""
    from stream_app.web.dashboard import dashboard_url, run_dashboard

    settings = load_settings()
    setup_logging(settings.log_level)
    if not settings.redis_url:
        console.print("[red]configuration error:[/red] redis_url: not set (REDIS_URL)")
        sys.exit(2)
    if not settings.broker_url:
        console.print("[yellow]BROKER_URL not set: no live alert feed[/yellow]")
    console.print(f"dashboard on {dashboard_url(settings)}")
    run_dashboard(settings, host=host)
# --- portfolio KPIs, cohorts, segments (issue 7) -----------------------------------------------


def _with_tracker(settings: Settings, fn: Any) -> Any:
    """Run ``await fn(tracker, redis)`` against the configured Redis (read side only)."""
    from stream_app.portfolio.tracker import PortfolioTracker

    try:
        tracker = PortfolioTracker(settings)
    except ValueError as exc:  # PortfolioConfigError: names the field and the rule
        console.print(f"[red]portfolio configuration error:[/red] {exc}")
        sys.exit(2)
    return _with_store(settings, lambda store: fn(tracker, store.redis))


def _fmt(v: Any, pct: bool = False, money: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.1f}%"
    if money:
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"


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


@main.command()
@click.option("--period", "kind", type=click.Choice(["month", "quarter"]), default="month", show_default=True)
@click.option("--periods", "count", type=click.IntRange(1, 24), default=3, show_default=True,
              help="How many periods, ending with the current one")
@click.option("--segment", default=None, help="One segment (seg0, seg1, ...); default: everyone")
@click.option("--json", "as_json", is_flag=True)
def kpis(kind: str, count: int, segment: str | None, as_json: bool) -> None:
    """Portfolio KPIs per period: churn, retention, GRR/NRR, CSAT, NPS, ARPA, CLV, health, MRR at risk."""
    from rich.table import Table

    settings = load_settings()
    rows = _with_tracker(settings, lambda t, r: t.report(r, kind, count, segment))  # type: ignore[arg-type]
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
        table.add_row(label, *[_fmt(getattr(k, attr), pct=f == "%", money=f == "$") for k in rows])
    table.add_row("band mix g/y/r", *["/".join(str(n) for n in k.band_mix.values()) for k in rows])
    for stage in rows[-1].stage_mix:
        table.add_row(f"stage: {stage}", *[str(k.stage_mix.get(stage, 0)) for k in rows])
    Console().print(table)


@main.command()
@click.option("--json", "as_json", is_flag=True)
def cohorts(as_json: bool) -> None:
    """Cohort retention: per sign-up month, the share still active after 1..12 months."""
    from rich.table import Table

    settings = load_settings()
    rows = _with_tracker(settings, lambda t, r: t.cohorts(r))
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


@main.command()
@click.option("--json", "as_json", is_flag=True)
def segments(as_json: bool) -> None:
    """Behavioural segments: size and strongest traits (the current month's KPIs per segment)."""
    from rich.table import Table

    settings = load_settings()

    async def fetch(t: Any, r: Any) -> tuple[list[Any], dict[str, Any]]:
        return await t.describe_segments(r), await t.segment_reports(r, "month")

    infos, reports = _with_tracker(settings, fetch)
    if as_json:
        click.echo(json.dumps([{**i.as_dict(), "kpis": reports[i.segment].model_dump(mode="json")
                                if i.segment in reports else None} for i in infos], indent=2))
        return
    table = Table("segment", "customers", "MRR", "churn", "avg health", "NPS", "traits")
    for i in infos:
        k = reports.get(i.segment)
        table.add_row(i.segment, _fmt(k.customers_end if k else 0), _fmt(k.mrr_end if k else None, money=True),
                      _fmt(k.logo_churn_rate if k else None, pct=True), _fmt(k.avg_health if k else None),
                      _fmt(k.nps if k else None), "; ".join(t.text for t in i.traits))
    Console().print(table)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (stdout)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: reliability curve and AUC over time")
@click.option("--customers-limit", type=int, default=None, help="Only the first N customers to appear in the file")
@click.option("--calibration/--no-calibration", default=None,
              help="Serve calibrated (default: MODEL_CALIBRATION) or raw churn probabilities")
@click.option("--lookback-days", type=float, default=None,
              help="churn_risk recall: an alert this many days before a cancellation catches it (default: the label horizon)")
@click.option("--save-run", type=click.Path(dir_okay=False), default=None,
              help="Also save the run's scores and alerts, to judge them again with --from-run")
@click.option("--from-run", is_flag=True, help="FILE is a run saved with --save-run: report it without replaying")
@click.option("--boot", "n_boot", type=click.IntRange(min=0), default=200, show_default=True,
              help="Customer-clustered bootstrap resamples for the comparison's AUC intervals (0: none)")
def backtest(file: str, as_json: bool, plot_path: str | None, customers_limit: int | None,
             calibration: bool | None, lookback_days: float | None, save_run: str | None, from_run: bool,
             n_boot: int) -> None:
    """Replay a history (JSON Lines, optionally .gz) through the real scoring, model and alert
    code in event-time order, and judge the scores against the cancellations that followed."""
    from stream_app.tools.backtest.report import RunResult, backtest_settings, report, run_sync

    if from_run:
        _backtest_output(report(RunResult.load(file), lookback_days=lookback_days, n_boot=n_boot), as_json, plot_path)
        return
    settings = backtest_settings(load_settings(), calibration)
    setup_logging(os.environ.get("LOG_LEVEL", "warning"))
    with Progress(TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[rate]}"), console=console, transient=as_json) as progress:
        task = progress.add_task("backtest", total=None, rate="reading")
        started = [0.0]

        def scanned(history: Any) -> None:
            import time as _t

            started[0] = _t.monotonic()
            progress.update(task, total=history.routable, rate="")

        def advance(n: int) -> None:
            import time as _t

            dt = _t.monotonic() - started[0]
            progress.update(task, completed=n, rate=f"{n / dt:,.0f} events/s" if dt > 0 else "")

        run = run_sync(file, settings, customers_limit=customers_limit, on_progress=advance, on_scanned=scanned)
    if save_run:
        run.save(save_run)
        console.print(f"saved the run to {save_run}")
    _backtest_output(report(run, lookback_days=lookback_days, n_boot=n_boot), as_json, plot_path)


def _backtest_output(rep: dict[str, Any], as_json: bool, plot_path: str | None) -> None:
    from stream_app.tools.backtest.report import plot, render

    if plot_path:
        plot(rep, plot_path)
        console.print(f"wrote {plot_path}")
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        render(rep, Console())


if __name__ == "__main__":
    main()
