"""Backtest: replay a history through the real pipeline code and judge its scores against what happened.

``stream-app backtest FILE`` reads contract JSON Lines (optionally gzip) with a ``topic``
field per line (``stream-app simulate`` writes them), and feeds them, in event-time order and
at full speed, through the same code the worker runs: ``Ingestor`` (decode, validate, event-time
ordering, apply to Redis) -> ``Scorer`` (per event: aggregates, scorecard, churn model, alert
rules, label snapshots) -> ``Learner`` (completes event-time days: resolves due labels, learns,
checkpoints the model each scored day is pinned to). Only the edges differ: records come from
the file instead of Kafka (keyed to the partitions ``stream-app replay`` would choose), the
learner runs inline (as in a single-process deployment), and outputs are collected in memory
instead of published. Redis is real, under a private key prefix that is deleted afterwards.

Judged against the history itself (no ground-truth file needed): a score is *positive* if the
customer cancelled within the label horizon (``LABEL_HORIZON_DAYS``, 30) after it. Evaluation
points are the last published score (``cs.scores``) of each customer on each event-time day;
points of customers already cancelled, and points whose horizon runs past the end of the
history (outcome unknown), are left out. Reported:

* ROC AUC and top-decile lift of the churn probability, and of the health score alone;
* the same AUC with the labels shuffled (a control: must be ~0.5);
* calibration of the served probability and of the model's raw probability: log loss,
  Brier score, a reliability table by decile, expected calibration error;
* ``churn_risk`` alert precision (cancelled within the horizon after the alert), recall
  (cancellations with an alert in the lookback before) and median lead time;
* alert volume per 1,000 customers per week (per kind), over the customers' active weeks;
* the AUC per week of event time;
* a comparison on weekly observation dates (``comparison``): the served probability against
  trivial baselines (health score alone, tenure alone) and, when supplied, an external score
  such as a batch reference model, pooled and per-date AUC over all dates and over the test
  period (the last third of the dates), with customer-clustered bootstrap 95 % intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from stream_app.model.evaluation import (
    DAY_MS,
    alert_metrics,
    brier,
    clustered_bootstrap,
    expected_calibration_error,
    log_loss,
    per_date_auc,
    reliability_table,
    roc_auc,
    threshold_table,
    top_decile_lift,
)
from stream_app.tools.backtest.history import WEEK_MS, History, iso
from stream_app.tools.backtest.run import RunResult


@dataclass
class Points:
    """Evaluation points: one per customer per event-time day with a known outcome."""

    customer: list[str]
    ts: np.ndarray
    health: np.ndarray
    served: np.ndarray
    raw: np.ndarray
    label: np.ndarray


def evaluation_points(scores: list[tuple[str, int, float, float, float]], history: History,
                      horizon_days: int) -> Points:
    """The last score per customer per day; leaves out cancelled customers and unknown outcomes."""
    last: dict[tuple[str, int], tuple[str, int, float, float, float]] = {}
    for s in scores:
        key = (s[0], s[1] // DAY_MS)
        if key not in last or s[1] >= last[key][1]:
            last[key] = s
    horizon = horizon_days * DAY_MS
    end = history.end_ms if history.end_ms is not None else 0
    rows = [s for s in last.values()
            if s[1] + horizon <= end and not history.is_cancelled_at(s[0], s[1])]
    rows.sort(key=lambda s: (s[1], s[0]))
    return Points(
        customer=[r[0] for r in rows],
        ts=np.array([r[1] for r in rows], dtype=np.int64),
        health=np.array([r[2] for r in rows], dtype=float),
        served=np.array([r[3] for r in rows], dtype=float),
        raw=np.array([r[4] for r in rows], dtype=float),
        label=np.array([history.cancelled_within(r[0], r[1], horizon) for r in rows], dtype=bool),
    )


def _r(v: float | None, nd: int = 4) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), nd)


def _calibration(p: np.ndarray, y: np.ndarray, thresholds: tuple[float, ...]) -> dict[str, Any]:
    rows = reliability_table(p, y)
    return {"log_loss": _r(log_loss(p, y)), "brier": _r(brier(p, y), 5), "mean_p": _r(float(p.mean()) if len(p) else None),
            "ece": _r(expected_calibration_error(rows), 5), "reliability": rows,
            "thresholds": threshold_table(p, y, thresholds)}


def _weekly_auc(pts: Points) -> list[dict[str, Any]]:
    if not len(pts.ts):
        return []
    out = []
    weeks = (pts.ts - pts.ts.min()) // WEEK_MS
    start = int(pts.ts.min())
    for w in np.unique(weeks):
        m = weeks == w
        y = pts.label[m]
        out.append({
            "week_start": datetime.fromtimestamp((start + int(w) * WEEK_MS) / 1000, tz=timezone.utc).date().isoformat(),
            "points": int(m.sum()), "positives": int(y.sum()),
            "churn_probability_auc": _r(roc_auc(pts.served[m], y)),
            "health_auc": _r(roc_auc(-pts.health[m], y)),
        })
    return out


# --- comparing with baselines on weekly observation dates -------------------------------------
#: the scores of the comparison, as rendered (higher = riskier for every one)
SCORE_NAMES: dict[str, str] = {"served": "served churn probability", "health": "health score alone",
                               "tenure": "tenure alone"}


@dataclass(frozen=True)
class Observation:
    """One customer on one observation date: is it cancelled within the horizon after it?"""

    customer: str
    date_ms: int
    label: bool
    tenure_days: float


def observation_dates(history: History, horizon_days: int) -> list[int]:
    """Weekly dates (UTC midnights) from a week after the history's first day up to the last
    date whose horizon ends inside the history (later outcomes are unknown)."""
    if history.start_ms is None or history.end_ms is None:
        return []
    first = history.start_ms // DAY_MS * DAY_MS + WEEK_MS
    last = history.end_ms - horizon_days * DAY_MS
    return list(range(first, last + 1, WEEK_MS)) if last >= first else []


def first_test_index(dates: list[int]) -> int:
    """Index of the first test date: the last third of the dates are the test period (at
    least one date on each side when there are two or more), the rest train a batch model.

    >>> [first_test_index(list(range(n))) for n in (0, 1, 2, 3, 12, 13)]
    [0, 1, 1, 2, 8, 9]
    """
    n = len(dates)
    return min(max(1, math.ceil(2 * n / 3)), n - 1) if n >= 2 else n


def first_scores(score_log: list[tuple[str, int, float, float, float]]) -> dict[str, int]:
    """Customer -> event time of its first published score."""
    out: dict[str, int] = {}
    for cid, ts, *_ in score_log:
        if ts < out.get(cid, 2**62):
            out[cid] = ts
    return out


def observation_rows(history: History, horizon_days: int,
                     scored_since: Mapping[str, int] | None = None) -> Iterator[Observation]:
    """The observation population, date by date: customers seen by the date and not cancelled
    at it (and, with ``scored_since``, with a published score at or before it). Shared by the
    comparison and the batch reference so that both judge exactly the same rows."""
    horizon = horizon_days * DAY_MS
    for t in observation_dates(history, horizon_days):
        for cid, first in history.first_seen.items():
            if first > t or history.is_cancelled_at(cid, t):
                continue
            if scored_since is not None and scored_since.get(cid, 2**62) > t:
                continue
            start = history.tenure_start(cid)
            tenure = max(0.0, (t - (first if start is None else start)) / DAY_MS)
            yield Observation(cid, t, history.cancelled_within(cid, t, horizon), tenure)


@dataclass
class ObservationTable:
    """The comparison's rows as arrays: each observation with its customer's latest score."""

    customer: np.ndarray
    date: np.ndarray
    label: np.ndarray
    tenure: np.ndarray
    health: np.ndarray
    served: np.ndarray
    test_from: int | None

    def score(self, name: str) -> np.ndarray:
        """A score by name, oriented so that higher = riskier."""
        return {"served": self.served, "health": -self.health, "tenure": -self.tenure}[name]


def observation_table(run: RunResult) -> ObservationTable:
    """Each observation with the customer's latest published score at or before the date."""
    by_customer: dict[str, list[tuple[int, float, float]]] = {}
    for cid, ts, health, served, _raw in run.outputs.score_log:
        by_customer.setdefault(cid, []).append((ts, health, served))
    series = {}
    for cid, rows in by_customer.items():
        rows.sort(key=lambda r: r[0])  # stable: of equal times, the last published wins
        series[cid] = (np.array([r[0] for r in rows], dtype=np.int64), rows)
    obs = list(observation_rows(run.history, run.settings.label_horizon_days, first_scores(run.outputs.score_log)))
    health, served = [], []
    for o in obs:
        ts, rows = series[o.customer]
        latest = rows[int(np.searchsorted(ts, o.date_ms, side="right")) - 1]
        health.append(latest[1])
        served.append(latest[2])
    dates = observation_dates(run.history, run.settings.label_horizon_days)
    k = first_test_index(dates)
    return ObservationTable(
        customer=np.array([o.customer for o in obs], dtype=object),
        date=np.array([o.date_ms for o in obs], dtype=np.int64),
        label=np.array([o.label for o in obs], dtype=bool),
        tenure=np.array([o.tenure_days for o in obs], dtype=float),
        health=np.array(health, dtype=float),
        served=np.array(served, dtype=float),
        test_from=dates[k] if k < len(dates) else None,
    )


def _with_interval(stat: Callable[[np.ndarray], float | None], clusters: np.ndarray, n_boot: int,
                   seed: int) -> dict[str, Any]:
    """A statistic on all rows, and its customer-clustered bootstrap 95 % interval."""
    value = stat(np.arange(len(clusters)))
    ci = clustered_bootstrap(stat, clusters, n_boot=n_boot, seed=seed) if value is not None else None
    return {"value": _r(value), "ci": None if ci is None else [_r(ci[0]), _r(ci[1])]}


def _ranking(score: np.ndarray, y: np.ndarray, dates: np.ndarray, customers: np.ndarray, n_boot: int,
             seed: int) -> dict[str, Any]:
    """Pooled and per-date AUC (with intervals) and top-decile lift of one score on some rows."""
    return {
        "auc": _with_interval(lambda i: roc_auc(score[i], y[i]), customers, n_boot, seed),
        "per_date_auc": _with_interval(lambda i: per_date_auc(score[i], y[i], dates[i]), customers, n_boot, seed),
        "top_decile_lift": _r(top_decile_lift(score, y), 2),
    }


def _difference(a: np.ndarray, b: np.ndarray, y: np.ndarray, dates: np.ndarray, customers: np.ndarray,
                n_boot: int, seed: int) -> dict[str, Any]:
    """Score ``a`` minus score ``b``, pooled and per-date AUC on the test rows, with paired
    customer-clustered intervals (both judged on each resample): an interval above zero says
    ``a`` ranks better, which two overlapping marginal intervals cannot say."""
    def pooled(i: np.ndarray) -> float | None:
        ra, rb = roc_auc(a[i], y[i]), roc_auc(b[i], y[i])
        return None if ra is None or rb is None else ra - rb

    def per_date(i: np.ndarray) -> float | None:
        ra, rb = per_date_auc(a[i], y[i], dates[i]), per_date_auc(b[i], y[i], dates[i])
        return None if ra is None or rb is None else ra - rb

    return {"auc_test": _with_interval(pooled, customers, n_boot, seed),
            "per_date_auc_test": _with_interval(per_date, customers, n_boot, seed)}


def _rows_summary(tab: ObservationTable, mask: np.ndarray) -> dict[str, Any]:
    return {"n": int(mask.sum()), "positives": int(tab.label[mask].sum()), "dates": int(len(np.unique(tab.date[mask]))),
            "customers": int(len(np.unique(tab.customer[mask])))}


def comparison(run: RunResult, extra: Mapping[str, Mapping[tuple[str, int], float]] | None = None,
               n_boot: int = 200, seed: int = 0) -> dict[str, Any]:
    """The served probability against baselines on the same weekly observations.

    Per score (``SCORE_NAMES``): ROC AUC pooled over all dates and over the test dates,
    per-date AUC over both, top-decile lift on the test dates; every AUC with a customer-
    clustered bootstrap interval (``n_boot`` resamples; 0: none). Every score is judged on
    the same resamples (same ``seed``), so the intervals are comparable.

    ``extra``: name -> {(customer, date ms): score} from outside (a batch reference model
    predicting the test period). An extra score is judged on the test rows where it has a
    value, and the built-in scores are judged again on exactly those rows, like for like.
    """
    tab = observation_table(run)
    test = tab.date >= tab.test_from if tab.test_from is not None else np.zeros(len(tab.date), dtype=bool)
    out: dict[str, Any] = {
        "rule": "weekly dates from a week after the start to a horizon before the end; per date each customer "
                "seen, not cancelled and already scored, with its latest score; positive: cancelled within "
                f"{run.settings.label_horizon_days} days after the date; test: the last third of the dates",
        "all": _rows_summary(tab, np.ones(len(tab.date), dtype=bool)),
        "test": _rows_summary(tab, test),
        "first_date": iso(int(tab.date.min())) if len(tab.date) else None,
        "test_from": iso(tab.test_from),
        "n_boot": n_boot, "interval": 0.95, "seed": seed,
        "scores": {},
        "extra": {},
    }
    ct = tab.customer[test]
    for name, label in SCORE_NAMES.items():
        sc = tab.score(name)
        everything = _ranking(sc, tab.label, tab.date, tab.customer, n_boot, seed)
        on_test = _ranking(sc[test], tab.label[test], tab.date[test], ct, n_boot, seed)
        out["scores"][name] = {"label": label, "auc_test": on_test["auc"], "per_date_auc_test": on_test["per_date_auc"],
                               "auc_all": everything["auc"], "per_date_auc_all": everything["per_date_auc"],
                               "top_decile_lift_test": on_test["top_decile_lift"]}
    served_test = tab.score("served")[test]
    out["served_minus"] = {name: _difference(served_test, tab.score(name)[test], tab.label[test], tab.date[test], ct,
                                             n_boot, seed)
                           for name in SCORE_NAMES if name != "served"}
    for ename, values in (extra or {}).items():
        got = np.array([values.get((c, int(d))) for c, d in zip(tab.customer, tab.date)], dtype=object)
        mask = test & np.array([v is not None for v in got], dtype=bool)
        ex_score = np.array([float(v) for v in got[mask]], dtype=float)
        y, d, c = tab.label[mask], tab.date[mask], tab.customer[mask]
        scores = {ename: ex_score, **{n: tab.score(n)[mask] for n in SCORE_NAMES}}
        judged: dict[str, Any] = {}
        for n, sc in scores.items():
            r = _ranking(sc, y, d, c, n_boot, seed)
            judged[n] = {"label": SCORE_NAMES.get(n, n), "auc_test": r["auc"], "per_date_auc_test": r["per_date_auc"],
                         "top_decile_lift_test": r["top_decile_lift"]}
        out["extra"][ename] = {**_rows_summary(tab, mask), "missing_test_rows": int(test.sum() - mask.sum()),
                               "scores": judged,
                               "served_minus": _difference(scores["served"], ex_score, y, d, c, n_boot, seed)}
    return out


def report(run: RunResult, lookback_days: float | None = None, shuffle_seed: int = 0, n_boot: int = 200,
           extra: Mapping[str, Mapping[tuple[str, int], float]] | None = None) -> dict[str, Any]:
    """Every figure of the backtest, JSON-serialisable (``n_boot``, ``extra``: see ``comparison``)."""
    s = run.settings
    h = run.history
    horizon = s.label_horizon_days
    lookback = horizon if lookback_days is None else lookback_days
    pts = evaluation_points(run.outputs.score_log, h, horizon)
    y = pts.label
    shuffled = np.random.default_rng(shuffle_seed).permutation(y)
    cancels = h.cancellations()
    weeks = h.active_weeks()
    kinds = sorted({a["kind"] for a in run.outputs.alert_log})
    per_kind = {k: sum(1 for a in run.outputs.alert_log if a["kind"] == k) for k in kinds}
    volume = {k: _r(n / weeks * 1000, 2) if weeks else None for k, n in per_kind.items()}
    volume["all"] = _r(len(run.outputs.alert_log) / weeks * 1000, 2) if weeks else None
    calibrated_served = bool(s.model_calibration)
    thresholds = tuple(sorted({0.05, 0.1, 0.15, float(s.risk_alert_threshold), 0.5}))
    return {
        "input": {
            "file": h.path, "lines": h.lines, "events_fed": run.events, "unroutable": h.unroutable,
            "dead_lettered": run.outputs.dead, "customers": h.customers, "in_event_time_order": h.in_order,
            "start": iso(h.start_ms), "end": iso(h.end_ms),
            "days": _r((h.end_ms - h.start_ms) / DAY_MS, 1) if h.start_ms is not None and h.end_ms is not None else None,
            "cancellations": len(cancels),
        },
        "run": {"seconds": _r(run.seconds, 1), "events_per_s": _r(run.events / run.seconds, 0) if run.seconds else None,
                "served_probability": "calibrated" if calibrated_served else "raw",
                "label_horizon_days": horizon, "batch_max": s.batch_max,
                "scores_published": len(run.outputs.score_log), "examples_learnt": run.outputs.examples_learnt},
        "model": {k: run.model_summary.get(k) for k in ("serving", "labels_seen", "positives", "prequential", "calibration")},
        "points": {"n": int(len(y)), "positives": int(y.sum()), "base_rate": _r(float(y.mean()) if len(y) else None, 5),
                   "rule": f"last score per customer per day; positive: cancelled within {horizon} days after it; "
                           f"left out: already cancelled, or less than {horizon} days before the end"},
        "churn_probability": {"roc_auc": _r(roc_auc(pts.served, y)), "top_decile_lift": _r(top_decile_lift(pts.served, y), 2)},
        "health_score": {"roc_auc": _r(roc_auc(-pts.health, y)), "top_decile_lift": _r(top_decile_lift(-pts.health, y), 2)},
        "control_shuffled_labels": {"churn_probability_auc": _r(roc_auc(pts.served, shuffled)),
                                    "health_auc": _r(roc_auc(-pts.health, shuffled))},
        "calibration": {"served": _calibration(pts.served, y, thresholds), "raw": _calibration(pts.raw, y, thresholds)},
        "alerts": {
            "by_kind": per_kind,
            "churn_risk": alert_metrics(run.outputs.alert_log, cancels, "churn_risk", horizon, lookback, end_ms=h.end_ms),
            "recall_lookback_days": lookback,
            "per_1000_customers_per_week": volume,
            "active_customer_weeks": _r(weeks, 1),
        },
        "auc_over_time": _weekly_auc(pts),
        "comparison": comparison(run, extra, n_boot=n_boot),
    }
