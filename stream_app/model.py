"""Online churn model: candidates learn from resolved labels, one at a time (river).

* ``features_from``: the model's input, built from the scorecard's signals at scoring time
  only (nothing from the future can leak in: a snapshot is frozen when it is taken).
* ``HealthPrior``: until the model has seen ``min_labels`` labels (and some positives), the
  churn probability is a fixed function of the health score, and ``model_version`` says so.
* ``ChurnModel``: a scaled logistic regression and a Hoeffding adaptive tree learn side by
  side; each example is first predicted (prequential evaluation: ROC AUC, log loss per
  candidate), then learnt. The candidate with the better prequential AUC serves. ADWIN
  watches the serving model's error stream for drift. Positives are rare, so they are
  up-weighted by the square root of the running negative/positive ratio (capped).

>>> m = ChurnModel(min_labels=4, min_positives=1)
>>> m.predict_one({"health_score": 20.0})[1]
'prior-health-v1'
>>> for i in range(200):   # churn that health alone does not explain: young accounts leave
...     m.learn_one({"health_score": 60.0, "tenure_days": 10.0 + 300 * (i % 2)}, y=(i % 2 == 0))
>>> p_young, version = m.predict_one({"health_score": 60.0, "tenure_days": 10.0})
>>> p_old, _ = m.predict_one({"health_score": 60.0, "tenure_days": 310.0})
>>> p_young > p_old, version.startswith("online-")
(True, True)
"""

from __future__ import annotations

import math
import pickle
from typing import Any

from river import drift, linear_model, metrics, optim, preprocessing, tree

from .calibration import PlattCalibrator

#: Signals the model reads (see ``scoring.signals_from``), plus the health score itself.
FEATURES: tuple[str, ...] = (
    "health_score",
    "activity_vs_baseline",
    "active_days_share_30d",
    "days_since_last_activity",
    "features_30d",
    "active_users_30d",
    "nps_mean_90d",
    "csat_90d",
    "open_ticket_load",
    "reopened_30d",
    "ticket_load_30d",
    "sentiment_30d",
    "mrr_change_pct_90d",
    "downgrades_90d",
    "tenure_days",
)


def features_from(signals: dict[str, float | None], health_score: float) -> dict[str, float]:
    """Model input: known signals only (river treats a missing key as 'no information')."""
    x = {k: float(v) for k, v in signals.items() if k in FEATURES and v is not None and not math.isnan(float(v))}
    x["health_score"] = float(health_score)
    return x


def encode_features(x: dict[str, float]) -> str:
    """Compact, order-fixed text for a pending snapshot in Redis ('' = missing).

    Three significant digits: the model's inputs are noisy aggregates, and short values keep
    the snapshot hash in Redis' compact encoding.

    >>> encode_features({"health_score": 55.54, "tenure_days": 12.0})
    '55.5,,,,,,,,,,,,,,12'
    >>> decode_features(encode_features({"health_score": 55.54, "tenure_days": 12.0}))
    {'health_score': 55.5, 'tenure_days': 12.0}
    """
    return ",".join("" if (v := x.get(f)) is None else f"{v:.3g}" for f in FEATURES)


def decode_features(text: str) -> dict[str, float]:
    return {f: float(v) for f, v in zip(FEATURES, text.split(",")) if v != ""}


class HealthPrior:
    """30-day churn probability from health alone: 0.5 at score 44, 0.08 at 62, 0.02 at 72.

    Calibrated once on simulated history (18,300 resolved snapshots, ``bench/evaluate.py``):
    observed churn within 30 days was 0.25 at scores 50-55, 0.085 at 60-65, 0.02 at 70-75
    and under 0.01 above 75. Only used until the online model has learnt enough labels.
    """

    version = "prior-health-v1"

    def predict_one(self, x: dict[str, float]) -> float:
        score = x.get("health_score", 50.0)
        return 1.0 / (1.0 + math.exp((score - 44.0) / 7.0))


def _make_candidates(seed: int) -> dict[str, Any]:
    return {
        "logreg": preprocessing.StandardScaler()
        | linear_model.LogisticRegression(optimizer=optim.SGD(0.02), l2=1e-4),
        "hat": tree.HoeffdingAdaptiveTreeClassifier(grace_period=100, max_depth=8, seed=seed),
    }


class _RunningMean:
    """A plain running mean (river has no Brier score)."""

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0

    def update(self, value: float) -> None:
        self.n += 1
        self.total += value

    def get(self) -> float:
        return self.total / self.n if self.n else 0.0


class ChurnModel:
    """The single learner's state; pickled into Redis as a versioned checkpoint."""

    def __init__(self, min_labels: int = 300, min_positives: int = 30, seed: int = 7, calibrate: bool = True) -> None:
        self.min_labels = min_labels
        self.min_positives = min_positives
        self.candidates = _make_candidates(seed)
        self.auc = {name: metrics.ROCAUC() for name in self.candidates}
        self.logloss = {name: metrics.LogLoss() for name in self.candidates}
        self.detector = drift.ADWIN()
        self.drifts = 0
        self.labels_seen = 0
        self.positives = 0
        self.version = 0
        self.prior = HealthPrior()
        self.prior_auc = metrics.ROCAUC()
        self._init_calibration(calibrate)

    def _init_calibration(self, calibrate: bool) -> None:
        self.calibrate = calibrate
        self.calibrators = {name: PlattCalibrator() for name in ("prior", *self.candidates)}
        # prequential quality of the serving model's probabilities, raw and calibrated
        self.calibration_logloss = {"raw": metrics.LogLoss(), "calibrated": metrics.LogLoss()}
        self.calibration_brier = {"raw": _RunningMean(), "calibrated": _RunningMean()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "calibrators" not in state:  # a checkpoint from before calibration existed
            self._init_calibration(True)

    # --- serving ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.labels_seen >= self.min_labels and self.positives >= self.min_positives

    @property
    def champion(self) -> str:
        """The serving model: ``prior`` unless a learnt candidate's prequential AUC beats it."""
        if not self.ready:
            return "prior"
        best = max(self.candidates, key=lambda n: (float(self.auc[n].get()), n == "logreg"))
        return best if float(self.auc[best].get()) > float(self.prior_auc.get()) else "prior"

    def _raw(self, name: str, x: dict[str, float]) -> float:
        if name == "prior":
            return self.prior.predict_one(x)
        return float(self.candidates[name].predict_proba_one(x).get(True, 0.0))

    def predict_detail(self, x: dict[str, float]) -> tuple[float, float, str]:
        """(served churn probability, raw probability, model version); the served one is
        calibrated unless ``calibrate`` is off."""
        name = self.champion
        raw = self._raw(name, x)
        version = self.prior.version if name == "prior" else f"online-{name}-v{self.version}"
        return (self.calibrators[name].predict(raw) if self.calibrate else raw), raw, version

    def predict_one(self, x: dict[str, float]) -> tuple[float, str]:
        """(churn probability, model version): calibrated unless ``calibrate`` is off."""
        served, _, version = self.predict_detail(x)
        return served, version

    def explain(self, x: dict[str, float], n: int = 3) -> list[tuple[str, float, float]]:
        """The features pushing this customer's risk up: (feature, value, coefficient x
        standardised value), strongest first. Only when the linear model serves; a tree's
        path is not an additive explanation, and the prior has nothing to add."""
        if self.champion != "logreg":
            return []
        pipeline = self.candidates["logreg"]
        scaled = pipeline["StandardScaler"].transform_one(x)
        weights = pipeline["LogisticRegression"].weights
        parts = [(f, x[f], weights.get(f, 0.0) * v) for f, v in scaled.items() if f in x]
        return sorted((p for p in parts if p[2] > 0), key=lambda p: -p[2])[:n]

    # --- learning -----------------------------------------------------------------------
    def _weight(self, y: bool) -> float:
        if not y:
            return 1.0
        ratio = (self.labels_seen - self.positives + 1) / (self.positives + 1)
        return min(10.0, math.sqrt(ratio))

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Prequential step: predict with every candidate, score it, then learn."""
        serving = self.champion
        p_prior = self.prior.predict_one(x)
        self.prior_auc.update(y, p_prior)
        if serving == "prior":
            self.detector.update(abs(float(y) - p_prior))
            if self.detector.drift_detected:
                self.drifts += 1
        self._learn_calibration("prior", p_prior, y, serving)
        w = self._weight(y)
        for name, model in self.candidates.items():
            p = model.predict_proba_one(x).get(True, 0.0)
            self._learn_calibration(name, p, y, serving)
            self.auc[name].update(y, p)
            self.logloss[name].update(y, min(max(p, 1e-6), 1 - 1e-6))
            if name == serving:
                self.detector.update(abs(float(y) - p))
                if self.detector.drift_detected:
                    self.drifts += 1
            model.learn_one(x, y, w=w)
        self.labels_seen += 1
        self.positives += int(y)
        self.version += 1

    def _learn_calibration(self, name: str, raw: float, y: bool, serving: str) -> None:
        """Prequential: score the serving model's raw and calibrated probability, then learn."""
        if name == serving:
            for kind, p in (("raw", raw), ("calibrated", self.calibrators[name].predict(raw))):
                self.calibration_logloss[kind].update(y, min(max(p, 1e-6), 1 - 1e-6))
                self.calibration_brier[kind].update((p - float(y)) ** 2)
        self.calibrators[name].learn(raw, y)  # unweighted: the real base rate

    # --- reporting and checkpoints ------------------------------------------------------
    def top_features(self, n: int = 8) -> list[dict[str, float]]:
        """Logistic regression weights (per standardised unit), strongest first."""
        lr = self.candidates["logreg"]["LogisticRegression"]
        weights = dict(lr.weights)
        ranked = sorted(weights.items(), key=lambda kv: -abs(kv[1]))[:n]
        return [{"feature": k, "weight": round(float(v), 4)} for k, v in ranked]

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "serving": self.predict_one({})[1],
            "labels_seen": self.labels_seen,
            "positives": self.positives,
            "ready": self.ready,
            "prequential": {
                name: {"roc_auc": round(float(self.auc[name].get()), 4), "log_loss": round(float(self.logloss[name].get()), 4)}
                for name in self.candidates
            }
            | {"prior": {"roc_auc": round(float(self.prior_auc.get()), 4)}},
            "drifts_detected": self.drifts,
            "calibration": {
                "serving_calibrated": self.calibrate,
                "prequential": {kind: {"log_loss": round(float(self.calibration_logloss[kind].get()), 4),
                                       "brier": round(self.calibration_brier[kind].get(), 5)}
                                for kind in ("raw", "calibrated")},
                "calibrators": {name: c.state() for name, c in self.calibrators.items()},
            },
            "top_features": self.top_features(),
        }

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(blob: bytes) -> "ChurnModel":
        model = pickle.loads(blob)  # noqa: S301 - our own checkpoint, from our own Redis
        if not isinstance(model, ChurnModel):
            raise TypeError("checkpoint is not a ChurnModel")
        return model
