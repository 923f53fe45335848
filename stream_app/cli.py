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

from .settings import EXAMPLES_TOPIC, INPUT_TOPICS, OUTPUT_TOPICS, Settings

console = Console(stderr=True)


def load_settings() -> Settings:
    from .settings import describe_settings_error

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
    from .settings import redact_url

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

    from .app import create_app
    from .embedded import ensure_topics

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
    from .replay import replay as do_replay

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
    from .rebuild import rebuild as do_rebuild

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
    from .app import redis_client
    from .state import StateStore

    from redis.exceptions import RedisError

    from .settings import redact_url

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

    from .queries import customer_view

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

    from .queries import riskiest

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
@click.option("--json", "as_json", is_flag=True)
def model(as_json: bool) -> None:
    """The churn model: version, labels seen, prequential metrics, strongest features."""
    from .queries import model_summary

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
def simulate(customers: int, days: int, seed: int, start: str, out: str, truth: str | None) -> None:
    """Generate a realistic event history (and its ground truth) to files."""
    from .simulator import SimConfig, Simulator, write_jsonl, write_truth

    cfg = SimConfig(customers=customers, days=days, seed=seed, start=datetime.fromisoformat(start).astimezone(timezone.utc))
    sim = Simulator(cfg)
    with Progress(TextColumn("simulate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as p:
        task = p.add_task("simulate", total=None)

        def counted():  # type: ignore[no-untyped-def]
            for i, e in enumerate(sim.events(), start=1):
                if i % 5000 == 0:
                    p.update(task, completed=i)
                yield e

        n = write_jsonl(out, counted())
        p.update(task, completed=n)
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
    from .demo import run_demo

    setup_logging(os.environ.get("LOG_LEVEL", "warning"))
    sys.exit(run_demo(customers=customers, days=days, speed=speed, duration=duration))


if __name__ == "__main__":
    main()
