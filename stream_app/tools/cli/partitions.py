"""``stream-app partitions``: is it safe to change the number of partitions now, and do it
(``tools/partitions.py``; the procedure: docs/operations.md, "Changing the number of partitions")."""

from __future__ import annotations

import sys

import click
from rich.markup import escape

from stream_app.tools.cli.common import console, load_settings, with_store
from stream_app.tools.partitions import MigrationRefused, assess, migrate as do_migrate, partition_counts


@click.group()
def partitions() -> None:
    """Change the number of partitions of a running deployment (TOPIC_PARTITIONS)."""


@partitions.command()
def check() -> None:
    """Whether every record of every input partition is handled and the workers are stopped.
    Exit 0: all handled (stop the workers, if any, then migrate); 1: not yet."""
    settings = load_settings()

    async def run(store):  # type: ignore[no-untyped-def]
        return await assess(settings, store, await partition_counts(settings, [settings.topic(t) for t in settings.input_topics.values()]))

    safety = with_store(settings, run)
    counts = {t: n for t, n in safety.counts.items()}
    console.print(f"input topics: {counts}; records handled: {sum(h + 1 for h in safety.handled.values()):,}",
                  highlight=False, soft_wrap=True)
    for line in safety.lines():
        console.print(f"[yellow]{escape(line)}[/yellow]", highlight=False, soft_wrap=True)
    if safety.drained:
        console.print("every record of every input partition is handled"
                      + ("" if safety.workers_stopped else ": stop the workers, then `stream-app partitions migrate`"))
        sys.exit(0)
    console.print("[red]not drained yet[/red]: stop the producers and let the workers finish")
    sys.exit(1)


@partitions.command()
@click.option("--to", "target", type=click.IntRange(1, 1024), required=True, help="The new number of partitions")
@click.option("--new-topic-prefix", default=None,
              help="Move to new topics (this prefix) instead of adding partitions (brokers that cannot add them)")
@click.option("--workers-stopped", is_flag=True,
              help="Every worker is stopped: skip the consumer-group check (brokers that keep departed members)")
def migrate(target: int, new_topic_prefix: str | None, workers_stopped: bool) -> None:
    """Move to TARGET partitions: refuses unless every input record is handled and every worker
    stopped; idempotent. Run it with the deployment's current settings."""
    settings = load_settings()
    try:
        report = with_store(settings, lambda store: do_migrate(settings, store, target, new_topic_prefix,
                                                                    workers_stopped=workers_stopped))
    except MigrationRefused as exc:
        console.print(f"[red]refused:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    after = report.after
    if report.already:
        console.print(f"already on {after.topic_prefix}* with {after.partitions} partitions: nothing to do")
        return
    for topic, (old, new) in sorted(report.added.items()):
        console.print(f"{topic}: {old} -> {new} partitions", highlight=False)
    if report.created:
        console.print(f"created {', '.join(report.created)}; forgot the old topics' offsets of "
                      f"{report.forgotten:,} customers", highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    for w in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)
    console.print(f"done: start the workers with TOPIC_PARTITIONS={after.partitions}"
                  + (f" TOPIC_PREFIX={after.topic_prefix}" if report.created else "")
                  + ", then restart the producers (so they use the new partition count"
                  + (" and topics)" if report.created else ")"), highlight=False, soft_wrap=True)
    if report.warnings:
        sys.exit(1)
