"""Commands that run something: the worker, the demo, the dashboard, a replay, a rebuild."""

from __future__ import annotations

import asyncio
import os
import sys

import click
import faust
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stream_app.pipeline.app import create_app
from stream_app.settings import all_topics
from stream_app.tools.cli.common import broker_error, console, load_settings, setup_logging, with_store
from stream_app.tools.demo import run_demo
from stream_app.tools.embedded import ensure_topics
from stream_app.tools.partitions import preflight
from stream_app.tools.rebuild import rebuild as do_rebuild
from stream_app.tools.replay import replay as do_replay
from stream_app.web.dashboard import dashboard_url, run_dashboard


@click.command()
def worker() -> None:
    """Run the Faust worker (needs BROKER_URL and REDIS_URL)."""
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
    # topics with another partition count, or Redis state built on other topics: stop here, clearly
    problems = with_store(settings, lambda store: preflight(settings, store.redis))
    for problem in problems:
        console.print(f"[red]partitions:[/red] {escape(problem)}", highlight=False, soft_wrap=True)
    if problems:
        sys.exit(2)
    app = create_app(settings)
    faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible)")
def replay(file: str, rate: float | None) -> None:
    """Produce a JSON Lines file (optionally .gz) of contract events to Kafka."""
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


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
def rebuild(yes: bool) -> None:
    """Rebuild Redis state from the input topics (after Redis lost its data). Stop the workers first."""
    settings = load_settings()
    if not yes:
        click.confirm(f"Delete every key under {settings.key_prefix!r} and rebuild it from Kafka "
                      f"(all workers of {settings.app_id!r} stopped)?", abort=True)
    with Progress(TextColumn("rebuild"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("rebuild", total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = with_store(settings, lambda store: do_rebuild(settings, store.redis, step))
    console.print(f"rebuilt from {report['records']:,} records on {report['partitions']} partitions "
                  f"({report['deleted_keys']:,} stale keys deleted; not re-published: {report['not_republished']})")


@click.command()
@click.option("--customers", type=int, default=300, show_default=True)
@click.option("--days", type=int, default=120, show_default=True, help="Simulated days of history to stream")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Simulated days per wall-clock second")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds (default: until Ctrl-C)")
def demo(customers: int, days: int, speed: float, duration: float | None) -> None:
    """Everything embedded: broker, Redis, worker, simulator and a live view. Ctrl-C stops it."""
    setup_logging(os.environ.get("LOG_LEVEL", "warning"))
    sys.exit(run_demo(customers=customers, days=days, speed=speed, duration=duration))


@click.command()
@click.option("--host", default="0.0.0.0", show_default=True, help="Interface to listen on")
def dashboard(host: str) -> None:
    """Serve the live dashboard on WEB_PORT (reads REDIS_URL, BROKER_URL for the alert feed)."""
    settings = load_settings()
    setup_logging(settings.log_level)
    if not settings.redis_url:
        console.print("[red]configuration error:[/red] redis_url: not set (REDIS_URL)")
        sys.exit(2)
    if not settings.broker_url:
        console.print("[yellow]BROKER_URL not set: no live alert feed[/yellow]")
    console.print(f"dashboard on {dashboard_url(settings)}")
    run_dashboard(settings, host=host)
