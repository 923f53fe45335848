"""How well a score predicts an outcome: ranking, calibration and alert metrics (pure, numpy).

Used by ``stream-app backtest`` and ``bench/evaluate.py``. Every function takes plain
sequences (scores or probabilities, boolean labels) and returns plain numbers or rows, so
each is checked against hand-computed examples.

* ``roc_auc``: the probability that a random positive scores above a random negative
  (ties count half); the Mann-Whitney statistic from average ranks.
* ``per_date_auc``: the mean over observation dates of the AUC within each date, so a
  score that is constant in some weeks (cold start) gets no credit for the base-rate
  difference between weeks.
* ``clustered_bootstrap``: a percentile interval of any statistic under resampling whole
  customers, whose repeated observations are correlated.
* ``top_decile_lift``: the positive rate among the highest-scored tenth over the overall rate.
* ``log_loss``, ``brier``: proper scoring rules of probabilities.
* ``reliability_table``: predictions cut into equal-count bins (deciles), mean prediction
  against observed rate per bin; ``expected_calibration_error`` is their weighted gap.
* ``alert_metrics``: precision of alerts (the customer cancelled within the horizon after
  the alert), recall (cancellations with an alert in the lookback before), lead times.

>>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
0.75
>>> round(top_decile_lift([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.05], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), 2)
10.0
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from stream_app.core import DAY_MS


def _arrays(scores: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-d and of equal length ({s.shape} vs {y.shape})")
    return s, y


def _average_ranks(s: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank.

    >>> _average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist()
    [3.5, 1.0, 3.5, 2.0]
    """
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=float)
    if not len(s):
        return ranks
    sorted_s = s[order]
    # runs of equal values share the mean of their 1-based positions (vectorised: the
    # bootstrap calls this thousands of times on ~100k points)
    first = np.r_[True, sorted_s[1:] != sorted_s[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(s)]
    ranks[order] = ((starts + 1 + ends) / 2.0)[np.cumsum(first) - 1]
    return ranks


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray) -> float | None:
    """Area under the ROC curve (higher score = more likely positive); None without both classes.

    >>> roc_auc([1, 2, 3], [0, 1, 1]), roc_auc([1, 1, 1], [0, 1, 1]), roc_auc([1, 2], [1, 1]) is None
    (1.0, 0.5, True)
    """
    s, y = _arrays(scores, labels)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def per_date_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray,
                 dates: Sequence[Any] | np.ndarray) -> float | None:
    """Mean over dates of the ROC AUC within each date; dates without both classes are skipped.

    Pooled over dates, a score that is constant in early weeks (a cold-start prior) and
    informative later is credited for whatever separates the weeks (base rate, population);
    within one date it cannot be: a constant score gives exactly 0.5 there. None when no
    date has both classes.

    Date 1 ranks perfectly (1.0), date 2 is a tie (0.5), date 3 has no negative (skipped):

    >>> per_date_auc([1, 2, 5, 5, 7, 8], [0, 1, 0, 1, 1, 1], [1, 1, 2, 2, 3, 3])
    0.75
    >>> per_date_auc([1, 2], [1, 1], [1, 2]) is None
    True
    """
    s, y = _arrays(scores, labels)
    d = np.asarray(dates)
    if d.shape != s.shape:
        raise ValueError(f"dates must match the scores ({d.shape} vs {s.shape})")
    if not len(s):
        return None
    order = np.argsort(d, kind="stable")
    sorted_d = d[order]
    cuts = np.flatnonzero(sorted_d[1:] != sorted_d[:-1]) + 1
    aucs = [a for idx in np.split(order, cuts) if (a := roc_auc(s[idx], y[idx])) is not None]
    return float(np.mean(aucs)) if aucs else None


def clustered_bootstrap(stat: Callable[[np.ndarray], float | None], clusters: Sequence[Any] | np.ndarray,
                        n_boot: int = 200, seed: int = 0, alpha: float = 0.05) -> tuple[float, float] | None:
    """Percentile ``1 - alpha`` interval of ``stat`` when whole clusters (customers) are resampled.

    One customer's observations on successive dates are strongly correlated, so resampling
    rows would pretend to have far more independent evidence than there is; resampling
    customers with replacement keeps each customer's rows together. ``stat`` gets an index
    array into the rows (a customer drawn twice appears twice) and returns a number or None
    (e.g. an AUC of a resample without positives); None replicates are left out, and the
    result is None when none gives a value. Deterministic by ``seed``: the same seed draws
    the same customers, so intervals of two scores on the same rows are paired.

    Every customer here has one positive and one negative row, so any resample of whole
    customers has rate 0.5 exactly (a row bootstrap would scatter around it):

    >>> y = np.array([0, 1, 1, 0, 0, 1])
    >>> clustered_bootstrap(lambda idx: float(y[idx].mean()), ["a", "a", "b", "b", "c", "c"], n_boot=50)
    (0.5, 0.5)
    """
    c = np.asarray(clusters)
    if c.ndim != 1:
        raise ValueError("clusters must be 1-d")
    if n_boot <= 0 or not len(c):
        return None
    _, inverse = np.unique(c, return_inverse=True)
    order = np.argsort(inverse, kind="stable")      # rows grouped by cluster
    counts = np.bincount(inverse)
    starts = np.cumsum(counts) - counts             # each cluster's first position in ``order``
    k = len(counts)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(n_boot):
        pick = rng.integers(0, k, size=k)
        lens = counts[pick]
        out_starts = np.cumsum(lens) - lens
        idx = order[np.repeat(starts[pick] - out_starts, lens) + np.arange(int(lens.sum()))]
        v = stat(idx)
        if v is not None and not math.isnan(v):
            values.append(float(v))
    if not values:
        return None
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def top_decile_lift(scores: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray,
                    fraction: float = 0.1) -> float | None:
    """Positive rate in the top ``fraction`` by score over the overall positive rate.

    The top group is the ``ceil(n * fraction)`` highest scores; ties at its boundary are
    resolved by taking the tied group's average rate (so the order of equal scores does not
    matter). None when there are no positives.

    >>> top_decile_lift([5, 4, 3, 2, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0], fraction=0.2)
    5.0
    >>> top_decile_lift([1, 1, 1, 1], [1, 0, 0, 0], fraction=0.25)   # all tied: no lift
    1.0
    """
    s, y = _arrays(scores, labels)
    if len(s) == 0 or not y.any():
        return None
    k = max(1, math.ceil(len(s) * fraction))
    order = np.argsort(-s, kind="mergesort")
    threshold = s[order[k - 1]]
    above = s > threshold
    tied = s == threshold
    take_tied = k - int(above.sum())
    hits = y[above].sum() + take_tied * (y[tied].mean() if tied.any() else 0.0)
    return float((hits / k) / y.mean())


def log_loss(probs: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray, eps: float = 1e-6) -> float | None:
    """Mean negative log-likelihood (natural log), probabilities clipped to ``[eps, 1 - eps]``.

    >>> round(log_loss([0.5, 0.5], [1, 0]), 4), round(log_loss([0.9, 0.2], [1, 0]), 4)
    (0.6931, 0.1643)
    """
    p, y = _arrays(probs, labels)
    if len(p) == 0:
        return None
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


def brier(probs: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray) -> float | None:
    """Mean squared error of the probabilities.

    >>> brier([0.9, 0.2], [1, 0])
    0.025
    """
    p, y = _arrays(probs, labels)
    if len(p) == 0:
        return None
    return round(float(np.mean((p - y) ** 2)), 12)


def reliability_table(probs: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray,
                      bins: int = 10) -> list[dict[str, float]]:
    """Predictions cut into ``bins`` equal-count groups (by rank; deciles by default): per
    group its size, probability range, mean prediction and observed positive rate.

    >>> rows = reliability_table([0.1, 0.1, 0.3, 0.5, 0.7, 0.9], [0, 0, 1, 0, 1, 1], bins=3)
    >>> [(r["n"], r["mean_p"], r["observed"]) for r in rows]
    [(2, 0.1, 0.0), (2, 0.4, 0.5), (2, 0.8, 1.0)]
    """
    p, y = _arrays(probs, labels)
    if len(p) == 0:
        return []
    order = np.argsort(p, kind="mergesort")
    rows: list[dict[str, float]] = []
    for i, idx in enumerate(np.array_split(order, min(bins, len(p)))):
        if len(idx) == 0:
            continue
        rows.append({
            "bin": i + 1,
            "n": int(len(idx)),
            "p_min": round(float(p[idx].min()), 6),
            "p_max": round(float(p[idx].max()), 6),
            "mean_p": round(float(p[idx].mean()), 6),
            "observed": round(float(y[idx].mean()), 6),
            "positives": int(y[idx].sum()),
        })
    return rows


def expected_calibration_error(rows: Iterable[Mapping[str, float]]) -> float | None:
    """Size-weighted mean of |mean prediction - observed rate| over reliability rows.

    >>> expected_calibration_error([{"n": 2, "mean_p": 0.1, "observed": 0.0}, {"n": 2, "mean_p": 0.8, "observed": 1.0}])
    0.15
    """
    rows = list(rows)
    total = sum(r["n"] for r in rows)
    if not total:
        return None
    return round(sum(r["n"] * abs(r["mean_p"] - r["observed"]) for r in rows) / total, 6)


def threshold_table(probs: Sequence[float] | np.ndarray, labels: Sequence[Any] | np.ndarray,
                    thresholds: Iterable[float] = (0.05, 0.1, 0.15, 0.25, 0.5)) -> list[dict[str, float | None]]:
    """Per threshold: the share of predictions at or above it, their precision (positive
    rate) and the share of all positives they cover (recall).

    >>> threshold_table([0.1, 0.3, 0.6, 0.9], [0, 1, 0, 1], thresholds=[0.5])
    [{'threshold': 0.5, 'flagged_share': 0.5, 'precision': 0.5, 'recall': 0.5}]
    """
    p, y = _arrays(probs, labels)
    rows: list[dict[str, float | None]] = []
    for t in thresholds:
        flagged = p >= t
        n = int(flagged.sum())
        rows.append({
            "threshold": float(t),
            "flagged_share": round(n / len(p), 6) if len(p) else None,
            "precision": round(float(y[flagged].mean()), 6) if n else None,
            "recall": round(float(y[flagged].sum() / y.sum()), 6) if y.any() else None,
        })
    return rows


def _ms(ts: Any) -> int:
    if isinstance(ts, (int, float)):
        return int(ts)
    if isinstance(ts, datetime):
        return int(ts.timestamp() * 1000)
    return int(datetime.fromisoformat(str(ts)).timestamp() * 1000)


def alert_metrics(alerts: Iterable[Mapping[str, Any]], cancellations: Mapping[str, int], kind: str,
                  horizon_days: float, lookback_days: float = 60, end_ms: int | None = None) -> dict[str, Any]:
    """Precision, recall and lead time of one kind of alert against known cancellations.

    ``alerts``: mappings with ``customer_id``, ``kind`` and ``ts`` (ISO text, datetime or
    epoch ms). ``cancellations``: customer -> epoch ms of the (first) cancellation.

    * precision: share of alerts whose customer cancelled within ``horizon_days`` after it.
      With ``end_ms`` (the end of the history), alerts less than a horizon before the end
      are left out: their outcome is not known yet.
    * recall: share of cancellations with an alert in the ``lookback_days`` before.
    * lead time: days from the first such alert to the cancellation (median).

    >>> day = DAY_MS
    >>> alerts = [{"customer_id": "a", "kind": "k", "ts": 0}, {"customer_id": "b", "kind": "k", "ts": 0},
    ...           {"customer_id": "a", "kind": "k", "ts": 5 * day}]
    >>> m = alert_metrics(alerts, {"a": 20 * day, "c": 30 * day}, "k", horizon_days=30)
    >>> m["precision_within_horizon"], m["recall_share"], m["median_lead_days"]
    (0.6667, 0.5, 20.0)
    """
    mine = [(a["customer_id"], _ms(a["ts"])) for a in alerts if a["kind"] == kind]
    horizon = horizon_days * DAY_MS
    judged = [(cid, t) for cid, t in mine if end_ms is None or t + horizon <= end_ms]
    hits = 0
    for cid, t in judged:
        c = cancellations.get(cid)
        if c is not None and t <= c <= t + horizon:
            hits += 1
    by_customer: dict[str, list[int]] = {}
    for cid, t in mine:
        by_customer.setdefault(cid, []).append(t)
    leads: list[float] = []
    caught = 0
    for cid, c in cancellations.items():
        before = [t for t in by_customer.get(cid, []) if c - lookback_days * DAY_MS <= t <= c]
        if before:
            caught += 1
            leads.append((c - min(before)) / DAY_MS)
    return {
        "alerts": len(mine),
        "customers_alerted": len(by_customer),
        "alerts_judged": len(judged),
        "precision_within_horizon": round(hits / len(judged), 4) if judged else None,
        "cancellations": len(cancellations),
        "cancellations_with_alert_before": caught,
        "recall_share": round(caught / len(cancellations), 4) if cancellations else None,
        "median_lead_days": round(statistics.median(leads), 1) if leads else None,
    }
