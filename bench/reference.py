"""Batch reference model: the method of "Fighting Churn With Data" (Carl Gold), on a history file.

    python bench/reference.py history.jsonl.gz     # fits and prints the test AUC and coefficients

The question it answers: is the served (online, streaming) churn probability as good as a
plain batch model an analyst would build from the same events? The book's recipe, kept plain:

* observations: per weekly observation date, each active customer (the *same* dates and the
  same population as the backtest's comparison: ``stream_app.tools.backtest.report.observation_rows``);
* behavioural metrics: per action name, the ``count`` summed over the 28 days ending at the
  date (``cs.activity``), log-transformed (``log1p``: counts are heavy-tailed), plus tenure;
* standardised (``StandardScaler``), logistic regression (default ``C``, ``max_iter=1000``);
* trained on the first two thirds of the dates, predicting the last third (the test period
  of the comparison), so its score is honest out-of-time.

The file is streamed once: an event adds its count to the (at most four) weekly observations
whose 28-day window contains it, so memory is one small dict per observation, whatever the
order and length of the file. Events are validated with the pipeline's own decoder, so events
the pipeline would dead-letter are not counted here either.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas import ActivityEvent  # noqa: E402

from stream_app.tools.backtest.history import _open_lines, History, scan_history, WEEK_MS
from stream_app.tools.backtest.report import first_test_index, Observation, observation_dates, observation_rows
from stream_app.pipeline.decoding import decode  # noqa: E402
from stream_app.model.evaluation import DAY_MS, roc_auc  # noqa: E402
from stream_app.tools.replay import route  # noqa: E402
from stream_app.settings import Settings  # noqa: E402

WINDOW_DAYS = 28

#: (customer, observation date ms) -> action name -> summed count in the window ending at the date
Counts = dict[tuple[str, int], dict[str, int]]


def dates_covering(ts_ms: int, dates: list[int], window_days: int = WINDOW_DAYS) -> range:
    """Indices of the weekly ``dates`` whose window ``(date - window, date]`` contains ``ts_ms``.

    >>> d = [7 * DAY_MS, 14 * DAY_MS, 21 * DAY_MS, 28 * DAY_MS, 35 * DAY_MS, 42 * DAY_MS]
    >>> list(dates_covering(7 * DAY_MS, d)), list(dates_covering(7 * DAY_MS + 1, d))
    ([0, 1, 2, 3], [1, 2, 3, 4])
    """
    if not dates:
        return range(0)
    d0 = dates[0]
    lo = max(0, -((d0 - ts_ms) // WEEK_MS))                                  # first date >= ts
    hi = min(len(dates) - 1, (ts_ms + window_days * DAY_MS - 1 - d0) // WEEK_MS)  # last date < ts + window
    return range(lo, hi + 1)


def window_counts(path: str | Path, history: History, settings: Settings, dates: list[int],
                  window_days: int = WINDOW_DAYS) -> Counts:
    """One pass over the file: per (customer, date), the per-action counts of the window."""
    out: Counts = {}
    if not dates:
        return out
    for line in _open_lines(path):
        routed = route(line, settings)
        if isinstance(routed, str) or settings.input_topics.get(routed[0]) != "activity":
            continue
        ev = decode(line, "activity", settings.max_message_bytes)
        if not isinstance(ev, ActivityEvent) or ev.customer_id not in history.first_seen:
            continue
        for k in dates_covering(ev.ts_ms, dates, window_days):
            per_action = out.setdefault((ev.customer_id, dates[k]), {})
            per_action[ev.action] = per_action.get(ev.action, 0) + ev.count
    return out


def feature_matrix(rows: list[Observation], counts: Counts, actions: list[str]) -> np.ndarray:
    """log1p of each action's window count (0 when absent), then tenure in days."""
    x = np.zeros((len(rows), len(actions) + 1), dtype=float)
    for i, r in enumerate(rows):
        c = counts.get((r.customer, r.date_ms), {})
        x[i, :-1] = [math.log1p(c.get(a, 0)) for a in actions]
        x[i, -1] = r.tenure_days
    return x


@dataclass
class ReferenceFit:
    """The reference's test-period predictions and what it learnt."""

    predictions: dict[tuple[str, int], float]
    features: list[str]
    #: standardised coefficients (per standard deviation of the feature), and the intercept
    coefficients: dict[str, float]
    train: dict[str, int] = field(default_factory=dict)
    test: dict[str, int] = field(default_factory=dict)
    test_from_ms: int | None = None
    test_auc: float | None = None
    seconds: float = 0.0

    def summary(self) -> dict[str, object]:
        """JSON-serialisable, without the predictions."""
        return {"method": "Fighting Churn With Data: 28-day per-action counts (log1p) + tenure, "
                          "StandardScaler + LogisticRegression, trained on the first two thirds of the dates",
                "features": self.features, "coefficients": self.coefficients, "train": self.train, "test": self.test,
                "test_auc": None if self.test_auc is None else round(self.test_auc, 4), "seconds": round(self.seconds, 1)}


def fit_reference(path: str | Path, history: History, settings: Settings,
                  scored_since: dict[str, int] | None = None, window_days: int = WINDOW_DAYS) -> ReferenceFit:
    """Fit on the training dates, predict the test dates (see the module docstring).

    ``scored_since`` (customer -> first published score) restricts the population as the
    backtest's comparison does, so both judge the same rows.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    started = time.monotonic()
    horizon = settings.label_horizon_days
    dates = observation_dates(history, horizon)
    k = first_test_index(dates)
    if k == 0 or k >= len(dates):
        raise ValueError(f"{len(dates)} observation date(s): too short a history to train on some and test on others")
    test_from = dates[k]
    rows = list(observation_rows(history, horizon, scored_since))
    train = [r for r in rows if r.date_ms < test_from]
    test = [r for r in rows if r.date_ms >= test_from]
    counts = window_counts(path, history, settings, dates, window_days)
    actions = sorted({a for r in train for a in counts.get((r.customer, r.date_ms), {})})
    y = np.array([r.label for r in train], dtype=bool)
    if y.all() or not y.any():
        raise ValueError("the training dates need both customers who cancel and customers who stay")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(feature_matrix(train, counts, actions), y)
    p = model.predict_proba(feature_matrix(test, counts, actions))[:, 1] if test else np.zeros(0)
    names = [f"log1p_{a}_{window_days}d" for a in actions] + ["tenure_days"]
    lr = model[-1]
    coefs = {n: round(float(c), 4) for n, c in zip(names, lr.coef_[0])} | {"intercept": round(float(lr.intercept_[0]), 4)}
    y_test = np.array([r.label for r in test], dtype=bool)
    return ReferenceFit(
        predictions={(r.customer, r.date_ms): float(v) for r, v in zip(test, p)},
        features=names, coefficients=coefs,
        train={"rows": len(train), "positives": int(y.sum()), "dates": k},
        test={"rows": len(test), "positives": int(y_test.sum()), "dates": len(dates) - k},
        test_from_ms=test_from, test_auc=roc_auc(p, y_test) if len(test) else None,
        seconds=time.monotonic() - started,
    )


def batch_reference(path: str | Path, history: History, settings: Settings,
                    scored_since: dict[str, int] | None = None) -> dict[tuple[str, int], float]:
    """``{(customer, date ms): churn probability}`` for the test-period observations."""
    return fit_reference(path, history, settings, scored_since).predictions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("history", help="contract JSON Lines (optionally .gz) with a topic per line")
    ap.add_argument("--customers", type=int, default=None, help="only the first N customers to appear")
    args = ap.parse_args()
    settings = Settings()
    history = scan_history(args.history, settings, args.customers)
    fit = fit_reference(args.history, history, settings)
    import json

    print(json.dumps(fit.summary(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
