"""``stream-app backtest``: replay a history through the real pipeline and judge its scores."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from stream_app.tools.backtest.run import backtest_settings, run_sync, RunResult
from stream_app.tools.backtest.render import plot, render
from stream_app.tools.backtest.report import report
from stream_app.tools.cli.common import console, load_settings, setup_logging


@click.command()
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
            started[0] = time.monotonic()
            progress.update(task, total=history.routable, rate="")

        def advance(n: int) -> None:
            dt = time.monotonic() - started[0]
            progress.update(task, completed=n, rate=f"{n / dt:,.0f} events/s" if dt > 0 else "")

        run = run_sync(file, settings, customers_limit=customers_limit, on_progress=advance, on_scanned=scanned)
    if save_run:
        run.save(save_run)
        console.print(f"saved the run to {save_run}")
    _backtest_output(report(run, lookback_days=lookback_days, n_boot=n_boot), as_json, plot_path)


def _backtest_output(rep: dict[str, Any], as_json: bool, plot_path: str | None) -> None:
    if plot_path:
        plot(rep, plot_path)
        console.print(f"wrote {plot_path}")
    if as_json:
        click.echo(json.dumps(rep, indent=2))
    else:
        render(rep, Console())
