"""Commands that write files: the wire schemas, a simulated history."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from schemas import json_schemas
from stream_app.core import DAY_MS
from stream_app.tools.cli.common import console
from stream_app.tools.simulator import SimConfig, Simulator, write_jsonl, write_truth


@click.command()
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Directory to write <name>.schema.json")
def schemas(out: str | None) -> None:
    """Write (or print) the JSON Schema of every wire message."""
    all_schemas = json_schemas()
    if out is None:
        click.echo(json.dumps(all_schemas, indent=2))
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas.items():
        (Path(out) / f"{name}.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    console.print(f"wrote {len(all_schemas)} schemas to {out}")


@click.command()
@click.option("--customers", type=int, default=300, show_default=True)
@click.option("--days", type=int, default=90, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--start", default="2026-01-01T00:00:00+00:00", show_default=True, help="First simulated day (ISO)")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="JSON Lines output (.gz to compress)")
@click.option("--truth", type=click.Path(dir_okay=False), default=None, help="Ground truth per customer (JSON Lines)")
@click.option("--activity-scale", type=float, default=1.0, show_default=True, help="Multiplies activity volume")
def simulate(customers: int, days: int, seed: int, start: str, out: str, truth: str | None, activity_scale: float) -> None:
    """Generate a realistic event history (and its ground truth) to files."""
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
                    p.update(task, completed=min(days, (e.ts_ms - start_ms) // DAY_MS + 1), events=i)
                yield e

        n = write_jsonl(out, counted())
        p.update(task, completed=days, events=n)
    console.print(f"wrote {n} events for {customers} customers over {days} days to {out}")
    if truth:
        write_truth(truth, sim.truth())
        console.print(f"wrote ground truth to {truth}")
