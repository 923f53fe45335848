"""Is the served churn probability any good? Against trivial baselines and a batch model, in one run.

    python bench/model_eval.py history.jsonl.gz --out model_eval.json [--customers N] [--boot 200]
                               [--save-run run.pkl]
    python bench/model_eval.py --from-run run.pkl [history.jsonl.gz] --out model_eval.json

1. replays the history through the pipeline code (``stream-app backtest``'s ``run_sync``:
   default settings, the local Redis under a private key prefix that is deleted afterwards),
   or loads a run saved with ``--save-run`` (a 1M-event replay takes ~15 minutes; judging a
   saved run again takes seconds);
2. fits the batch reference (``bench/reference.py``: the "Fighting Churn With Data" recipe)
   on the first two thirds of the weekly observation dates of the same file and population;
3. prints and writes (``--out``) the backtest's comparison: served churn probability, health
   score alone, tenure alone and the batch reference, ROC AUC and per-date AUC with customer-
   clustered bootstrap 95 % intervals, top-decile lift; the reference like for like on the
   test dates, the built-in scores also over all dates.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reference import ReferenceFit, fit_reference  # noqa: E402
from rich.console import Console  # noqa: E402

from stream_app.tools.backtest.history import History
from stream_app.tools.backtest.run import backtest_settings, run_sync, RunResult
from stream_app.tools.backtest.report import comparison, first_scores
from stream_app.tools.backtest.render import render_comparison
from stream_app.settings import Settings  # noqa: E402

REFERENCE = "batch reference"


def replay(path: str, customers: int | None, console: Console) -> RunResult:
    """The backtest's replay (as ``stream-app backtest`` runs it), with a progress line now and then."""
    settings = backtest_settings(Settings())
    started = time.monotonic()
    total = [0]
    step = [0]

    def scanned(h: History) -> None:
        total[0] = h.routable
        console.print(f"scanned {h.path}: {h.lines:,} lines, {h.customers:,} customers "
                      f"({time.monotonic() - started:.0f} s); replaying")

    def progress(n: int) -> None:
        if total[0] and n * 10 // total[0] > step[0]:
            step[0] = n * 10 // total[0]
            dt = time.monotonic() - started
            console.print(f"  {n:,} / {total[0]:,} events, {dt:.0f} s ({n / dt:,.0f} events/s)")

    return run_sync(path, settings, customers_limit=customers, on_progress=progress, on_scanned=scanned)


def load_or_run(args: argparse.Namespace, console: Console) -> tuple[RunResult, str]:
    """The run (replayed or loaded) and the history file the reference reads."""
    if args.from_run:
        run = RunResult.load(args.from_run)
        path = args.history or run.history.path
        if args.customers is not None:
            console.print("--customers is ignored with --from-run: the saved run fixed its customers")
        return run, path
    if not args.history:
        raise SystemExit("a history file is needed (or --from-run RUN)")
    run = replay(args.history, args.customers, console)
    if args.save_run:
        run.save(args.save_run)
        console.print(f"saved the run to {args.save_run}")
    return run, args.history


def result(run: RunResult, fit: ReferenceFit, comp: dict[str, Any], timing: dict[str, float]) -> dict[str, Any]:
    """What ``--out`` holds: the comparison, the reference's fit and the run's essentials."""
    h = run.history
    return {
        "history": {"file": h.path, "customers": h.customers, "cancellations": len(h.cancellations()),
                    "events_fed": run.events},
        "run": {"replay_seconds": round(run.seconds, 1), "label_horizon_days": run.settings.label_horizon_days,
                "served_probability": "calibrated" if run.settings.model_calibration else "raw",
                "model": {k: run.model_summary.get(k) for k in ("serving", "labels_seen", "positives")}},
        "reference": fit.summary(),
        "comparison": comp,
        "timing_seconds": {k: round(v, 1) for k, v in timing.items()},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("history", nargs="?", help="contract JSON Lines (optionally .gz); with --from-run: default "
                                               "the file the run replayed")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    ap.add_argument("--customers", type=int, default=None, help="only the first N customers to appear in the file")
    ap.add_argument("--boot", type=int, default=200, help="bootstrap resamples of customers (0: no intervals)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--save-run", default=None, help="save the replayed run here (pickle), for --from-run")
    ap.add_argument("--from-run", default=None, help="judge a run saved with --save-run instead of replaying")
    args = ap.parse_args()
    console = Console(width=max(shutil.get_terminal_size((160, 40)).columns, 150))

    t0 = time.monotonic()
    run, path = load_or_run(args, console)
    t1 = time.monotonic()
    fit = fit_reference(path, run.history, run.settings, scored_since=first_scores(run.outputs.score_log))
    t2 = time.monotonic()
    comp = comparison(run, {REFERENCE: fit.predictions}, n_boot=args.boot, seed=args.seed)
    t3 = time.monotonic()

    render_comparison(comp, console)
    timing = {"run_or_load": t1 - t0, "reference": t2 - t1, "comparison": t3 - t2, "total": t3 - t0}
    console.print(f"model at the end: {run.model_summary.get('serving')}; reference: {len(fit.features)} features, "
                  f"trained on {fit.train['rows']:,} rows ({fit.train['positives']} positive)")
    first = (f"load run {timing['run_or_load']:.1f} s" if args.from_run else
             f"scan + replay {timing['run_or_load']:.1f} s ({run.events:,} events, {run.events / run.seconds:,.0f} events/s)")
    console.print(f"time: {first}, reference {timing['reference']:.1f} s, comparison ({args.boot} resamples) "
                  f"{timing['comparison']:.1f} s, total {timing['total']:.1f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(result(run, fit, comp, timing), indent=2))
        console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
