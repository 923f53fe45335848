"""Online Platt calibration: recovers known parameters, fixes inflated probabilities, keeps the ranking."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from stream_app.model.calibration import PlattCalibrator, logit, sigmoid
from stream_app.model.evaluation import expected_calibration_error, log_loss, reliability_table, roc_auc
from stream_app.model.churn import ChurnModel


def test_identity_until_labels_arrive() -> None:
    cal = PlattCalibrator()
    assert [cal.predict(p) for p in (0.01, 0.3, 0.9)] == [0.01, 0.3, 0.9]
    assert cal.state()["labels"] == 0


def test_recovers_known_platt_parameters() -> None:
    rng = random.Random(5)
    cal = PlattCalibrator(half_life_labels=1e9, refit_every=500)
    for _ in range(40_000):
        z = rng.uniform(-4, 2)
        cal.learn(sigmoid(z), rng.random() < sigmoid(0.6 * z - 1.5))
    cal.fit()
    assert cal.a == pytest.approx(0.6, abs=0.06) and cal.b == pytest.approx(-1.5, abs=0.12)


def test_inflated_probabilities_become_calibrated_and_the_ranking_is_kept() -> None:
    """A model that up-weights positives says 30 % where 5 % churn: after calibration the
    shown probability matches the observed rate decile by decile (prequential: each label is
    predicted before it is learnt)."""
    rng = np.random.default_rng(11)
    cal = PlattCalibrator()
    raw_ps, cal_ps, ys = [], [], []
    for _ in range(30_000):
        true_p = float(rng.beta(0.6, 12))                  # base rate ~5 %
        raw = sigmoid(logit(true_p) + 1.8)                  # the learner's inflated view
        y = bool(rng.random() < true_p)
        raw_ps.append(raw)
        cal_ps.append(cal.predict(raw))
        ys.append(y)
        cal.learn(raw, y)
    # judge the second half (the calibrator has learnt by then)
    raw_h, cal_h, y_h = raw_ps[15_000:], cal_ps[15_000:], ys[15_000:]
    assert log_loss(cal_h, y_h) < log_loss(raw_h, y_h) - 0.05  # type: ignore[operator]
    ece_raw = expected_calibration_error(reliability_table(raw_h, y_h))
    ece_cal = expected_calibration_error(reliability_table(cal_h, y_h))
    assert ece_raw > 0.05 and ece_cal < 0.01, (ece_raw, ece_cal)
    assert np.mean(cal_h) == pytest.approx(np.mean(y_h), abs=0.01)
    # monotone: one calibrator keeps the ranking exactly (the prequential one changes over time)
    assert roc_auc([cal.predict(r) for r in raw_h], y_h) == pytest.approx(roc_auc(raw_h, y_h), abs=1e-12)


def test_old_labels_fade_so_a_drifting_scale_is_followed() -> None:
    rng = random.Random(2)
    cal = PlattCalibrator(half_life_labels=2_000)
    for _ in range(20_000):  # regime 1: raw is 3x too high
        raw = rng.uniform(0.05, 0.6)
        cal.learn(raw, rng.random() < raw / 3)
    before = cal.predict(0.3)
    for _ in range(20_000):  # regime 2: raw is right
        raw = rng.uniform(0.05, 0.6)
        cal.learn(raw, rng.random() < raw)
    assert before == pytest.approx(0.1, abs=0.03) and cal.predict(0.3) == pytest.approx(0.3, abs=0.04)


def test_bad_parameters_rejected() -> None:
    with pytest.raises(ValueError):
        PlattCalibrator(half_life_labels=0)


def _imbalanced(rng: random.Random, n: int) -> list[tuple[dict[str, float], bool]]:
    out = []
    for _ in range(n):
        health = rng.uniform(20, 95)
        p = sigmoid((45 - health) / 6) * 0.3            # ~4 % base rate, risk falls with health
        out.append(({"health_score": health, "tenure_days": rng.uniform(10, 500)}, rng.random() < p))
    return out


def test_churn_model_serves_calibrated_probabilities() -> None:
    rng = random.Random(3)
    m = ChurnModel(min_labels=300, min_positives=30)
    data = _imbalanced(rng, 12_000)
    for x, y in data:
        m.learn_one(x, y)
    test = _imbalanced(rng, 6_000)
    details = [m.predict_detail(x) for x, _ in test]
    ys = [y for _, y in test]
    cal = [c for c, _, _ in details]
    raw = [r for _, r, _ in details]
    assert details[0][2] != "" and m.predict_one(test[0][0])[0] == cal[0]
    # the served probabilities match the observed rate far better than the raw ones
    assert abs(np.mean(cal) - np.mean(ys)) < abs(np.mean(raw) - np.mean(ys))
    assert log_loss(cal, ys) <= log_loss(raw, ys)  # type: ignore[operator]
    summary = m.summary()["calibration"]
    assert summary["serving_calibrated"] is True
    assert summary["prequential"]["calibrated"]["log_loss"] <= summary["prequential"]["raw"]["log_loss"]
    # calibrate=False serves the raw probability; the calibrator still learns for diagnostics
    m.calibrate = False
    assert m.predict_one(test[0][0])[0] == raw[0]


def test_checkpoints_keep_the_calibrators_and_old_checkpoints_load() -> None:
    rng = random.Random(4)
    m = ChurnModel(min_labels=50, min_positives=5)
    for x, y in _imbalanced(rng, 2_000):
        m.learn_one(x, y)
    restored = ChurnModel.from_bytes(m.to_bytes())
    x = {"health_score": 40.0, "tenure_days": 30.0}
    assert restored.predict_detail(x) == m.predict_detail(x)
    # a checkpoint written before calibration existed: loads, serves, starts calibrating
    old = ChurnModel(min_labels=50, min_positives=5)
    for attr in ("calibrate", "calibrators", "calibration_logloss", "calibration_brier"):
        delattr(old, attr)
    loaded = ChurnModel.from_bytes(pickle.dumps(old))
    p, raw, _ = loaded.predict_detail(x)
    assert p == raw and loaded.calibrate is True
