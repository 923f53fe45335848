"""Evaluation metrics against hand-computed examples and brute-force definitions (pure)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.model.evaluation import (
    DAY_MS,
    alert_metrics,
    brier,
    expected_calibration_error,
    log_loss,
    reliability_table,
    roc_auc,
    threshold_table,
    top_decile_lift,
)


def brute_auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed() -> None:
    # pairs (pos, neg): (0.35 vs 0.1) win, (0.35 vs 0.4) loss, (0.8 vs both) wins: 3 of 4
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    # a tie between a positive and a negative counts half: (0.5 vs 0.5) = 0.5, (0.5 vs 0.2) = 1
    assert roc_auc([0.5, 0.5, 0.2], [1, 0, 0]) == 0.75
    assert roc_auc([3, 2, 1], [1, 0, 0]) == 1.0 and roc_auc([1, 2, 3], [1, 0, 0]) == 0.0
    assert roc_auc([1, 2], [0, 0]) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=40))
def test_auc_equals_the_pairwise_definition(pairs: list[tuple[int, bool]]) -> None:
    scores = [float(s) for s, _ in pairs]
    labels = [y for _, y in pairs]
    if all(labels) or not any(labels):
        assert roc_auc(scores, labels) is None
    else:
        assert roc_auc(scores, labels) == pytest.approx(brute_auc(scores, labels))


def test_auc_of_an_uninformative_score_is_near_half() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(20_000) < 0.05
    assert abs(roc_auc(rng.random(20_000), y) - 0.5) < 0.03  # type: ignore[operator]


def test_top_decile_lift_hand_computed() -> None:
    # 20 items, 4 positives (rate 0.2); top 2 (10 %) hold 1 positive: rate 0.5 -> lift 2.5
    scores = list(range(20, 0, -1))
    labels = [0, 1] + [0] * 14 + [1, 1, 1, 0]
    assert top_decile_lift(scores, labels) == pytest.approx(2.5)
    # ceil: 15 items -> the top 2
    assert top_decile_lift(list(range(15, 0, -1)), [1, 1] + [0] * 13) == pytest.approx(7.5)
    assert top_decile_lift([1, 2, 3], [0, 0, 0]) is None


def test_log_loss_and_brier_hand_computed() -> None:
    assert log_loss([0.8, 0.3, 0.6], [1, 0, 0]) == pytest.approx(-(math.log(0.8) + math.log(0.7) + math.log(0.4)) / 3)
    assert brier([0.8, 0.3, 0.6], [1, 0, 0]) == pytest.approx((0.04 + 0.09 + 0.36) / 3)
    assert log_loss([0.0], [1]) == pytest.approx(-math.log(1e-6))  # clipped, finite


def test_reliability_table_deciles_and_ece() -> None:
    p = [i / 100 for i in range(100)]              # 0.00 .. 0.99
    y = [i % 10 == 0 for i in range(100)]          # one positive in each block of ten
    rows = reliability_table(p, y)
    assert [r["n"] for r in rows] == [10] * 10
    assert rows[0]["mean_p"] == pytest.approx(0.045) and rows[9]["mean_p"] == pytest.approx(0.945)
    assert all(r["observed"] == 0.1 and r["positives"] == 1 for r in rows)
    # |0.045-0.1| + |0.145-0.1| + ... + |0.945-0.1|, each bin 10 %
    expected = sum(abs(0.045 + 0.1 * k - 0.1) for k in range(10)) / 10
    assert expected_calibration_error(rows) == pytest.approx(expected)


def test_alert_metrics_censors_alerts_without_a_known_outcome() -> None:
    d = DAY_MS
    alerts = [
        {"customer_id": "a", "kind": "churn_risk", "ts": 10 * d},   # a cancels on day 25: hit, lead 15
        {"customer_id": "a", "kind": "churn_risk", "ts": 20 * d},   # hit
        {"customer_id": "b", "kind": "churn_risk", "ts": 10 * d},   # b never cancels: miss
        {"customer_id": "c", "kind": "churn_risk", "ts": 90 * d},   # within a horizon of the end: not judged
        {"customer_id": "d", "kind": "health_drop", "ts": 10 * d},  # another kind
    ]
    m = alert_metrics(alerts, {"a": 25 * d, "d": 12 * d, "e": 50 * d}, "churn_risk", horizon_days=30,
                      lookback_days=30, end_ms=100 * d)
    assert (m["alerts"], m["alerts_judged"], m["precision_within_horizon"]) == (4, 3, round(2 / 3, 4))
    assert (m["cancellations"], m["cancellations_with_alert_before"], m["median_lead_days"]) == (3, 1, 15.0)
    assert m["recall_share"] == round(1 / 3, 4)


def test_threshold_table_hand_computed() -> None:
    p = [0.02, 0.08, 0.12, 0.2, 0.3, 0.6]
    y = [0, 0, 1, 0, 1, 1]
    rows = {r["threshold"]: r for r in threshold_table(p, y, [0.1, 0.25, 0.9])}
    assert rows[0.1] == {"threshold": 0.1, "flagged_share": round(4 / 6, 6), "precision": 0.75, "recall": 1.0}
    assert rows[0.25] == {"threshold": 0.25, "flagged_share": round(2 / 6, 6), "precision": 1.0, "recall": round(2 / 3, 6)}
    assert rows[0.9] == {"threshold": 0.9, "flagged_share": 0.0, "precision": None, "recall": 0.0}
