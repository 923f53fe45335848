"""Online churn model: candidates learn from resolved labels, one at a time (river).

* Inputs (``features.py``): behaviour per action and overall, breadth, recency, tenure,
  commercial and support signals, and the health score; each value goes through
  ``sign(x) * log1p(|x|)`` and is standardised online.
* ``HealthPrior``: until the model has seen ``min_labels`` labels (and some positives), the
  churn probability is a fixed function of the health score, and ``model_version`` says so.
* ``ChurnModel``: two plain online logistic regressions (``LinearChurnScorer``: small SGD
  step, no class weights; the Platt calibrator, not the learner, maps scores to
  probabilities) learn beside the prior: ``logreg`` on the features alone, ``residual`` on
  top of the prior's logit. Each label is first predicted by every candidate
  (prequential), then learnt.
* **Champion**: decided by :meth:`ChurnModel.decide` when the learner writes a checkpoint,
  stored with it, never recomputed per prediction. Candidates are compared by exact rank ROC
  AUC (Mann-Whitney, ties half) over the most recent ``window`` resolved labels, counting
  only predictions made after the learnt candidate had warmed up; a challenger must beat
  the serving model by ``margin`` to take over (hysteresis: a near tie never flips back
  and forth). Ranks, not probabilities: a better model on a compressed scale wins.
* ``ActivityLevels``: the population's distribution of activity levels, learnt from the same
  resolved snapshots, so the scorecard can rank a customer against the population
  (``scoring.py``); pinned to event time with the checkpoint like the model itself.

>>> m = ChurnModel(min_labels=4, min_positives=1, warmup=10)
>>> m.predict_one({"health_score": 20.0})[1]
'prior-health-v1'
>>> for i in range(400):   # churn that health alone does not explain: young accounts leave
...     m.learn_one({"health_score": 60.0 + i % 3, "tenure_days": 10.0 + 300 * (i % 2)}, y=(i % 2 == 0))
>>> m.decide()
'logreg'
>>> p_young, version = m.predict_one({"health_score": 60.0, "tenure_days": 10.0})
>>> p_old, _ = m.predict_one({"health_score": 60.0, "tenure_days": 310.0})
>>> p_young > p_old, version.startswith("online-logreg")
(True, True)
"""

from __future__ import annotations

import bisect
import math
import pickle
from collections import deque
from typing import Any

from river import drift, metrics, preprocessing

from stream_app.model.calibration import PlattCalibrator
from stream_app.model.evaluation import roc_auc
from stream_app.model.features import (
    BASE_FEATURES,
    LEVEL_FEATURE,
    decode_features,
    encode_features,
    features_from,
    slog,
)
from stream_app.settings import ModelSettings

__all__ = ["ActivityLevels", "BASE_FEATURES", "ChurnModel", "HealthPrior", "decode_features", "new_model", "encode_features",
           "features_from"]


class HealthPrior:
    """30-day churn probability from health alone: 0.5 at score 44, 0.08 at 62, 0.02 at 72.

    Calibrated once on simulated history (18,300 resolved snapshots, ``bench/evaluate.py``):
    observed churn within 30 days was 0.25 at scores 50-55, 0.085 at 60-65, 0.02 at 70-75
    and under 0.01 above 75. Only used until the online model has learnt enough labels.
    """

    version = "prior-health-v1"

    def logit(self, x: dict[str, float]) -> float:
        return (44.0 - x.get("health_score", 50.0)) / 7.0

    def predict_one(self, x: dict[str, float]) -> float:
        return _sigmoid(self.logit(x))


def _sigmoid(z: float) -> float:
    z = max(-35.0, min(35.0, z))
    return 1.0 / (1.0 + math.exp(-z))


class ActivityLevels:
    """Where an activity level stands in the population: an exact histogram on a log grid.

    Counts commute, so the result does not depend on the order observations arrive in; the
    state is a fixed ``bins + 1`` integers.

    >>> levels = ActivityLevels()
    >>> for v in [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]:
    ...     levels.learn(v)
    >>> levels.percentile(0.0), round(levels.percentile(3.0), 2), levels.percentile(1000.0)
    (0.05, 0.4, 1.0)
    """

    def __init__(self, step: float = 0.125, bins: int = 96) -> None:
        self.step = step
        self.edges = [i * step for i in range(1, bins + 1)]  # in log1p units; bin 0 holds zero
        self.counts = [0] * (bins + 2)
        self.n = 0

    def _bin(self, level: float) -> int:
        if level <= 0.0:
            return 0
        return 1 + bisect.bisect_left(self.edges, math.log1p(level))

    def learn(self, level: float) -> None:
        self.counts[self._bin(level)] += 1
        self.n += 1

    def percentile(self, level: float) -> float | None:
        """Share of the population below this level (its own bin counts half); None while
        nothing was learnt."""
        if not self.n:
            return None
        i = self._bin(level)
        below = sum(self.counts[:i])
        return (below + 0.5 * self.counts[i]) / self.n


def _slog_all(x: dict[str, float]) -> dict[str, float]:
    return {k: slog(v) for k, v in x.items()}


class LinearChurnScorer:
    """Online logistic regression on ``slog``-transformed, standardised features; with an
    ``offset``, on top of that model's logit (it then learns only what the offset misses).

    Plain SGD with a small step and no class weights: labels arrive a horizon late and
    positives are rare, and a large step or up-weighting trades ranking quality for a scale
    the calibrator fixes anyway. Missing features contribute nothing (river's convention).

    >>> lr = LinearChurnScorer(learning_rate=0.05)
    >>> for i in range(2000):
    ...     lr.learn_one({"tenure_days": 10.0 if i % 3 == 0 else 400.0}, i % 3 == 0)
    >>> lr.predict_proba_one({"tenure_days": 10.0})[True] > 0.5 > lr.predict_proba_one({"tenure_days": 400.0})[True]
    True
    >>> residual = LinearChurnScorer(offset=HealthPrior())
    >>> round(residual.predict_proba_one({"health_score": 44.0})[True], 3)   # untrained: the prior itself
    0.5
    """

    def __init__(self, learning_rate: float = 0.005, l2: float = 1e-4, offset: HealthPrior | None = None) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self.offset = offset
        self.scaler = preprocessing.StandardScaler()
        self.weights: dict[str, float] = {}
        self.intercept = 0.0

    def _logit(self, x: dict[str, float], z: dict[str, float]) -> float:
        w = self.weights
        total = self.intercept + sum(w.get(k, 0.0) * v for k, v in z.items())
        return total + (self.offset.logit(x) if self.offset is not None else 0.0)

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        p = _sigmoid(self._logit(x, self.scaler.transform_one(_slog_all(x))))
        return {False: 1.0 - p, True: p}

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        xt = _slog_all(x)
        self.scaler.learn_one(xt)
        z = self.scaler.transform_one(xt)
        g = _sigmoid(self._logit(x, z)) - float(y)
        lr, l2, w = self.learning_rate, self.l2, self.weights
        for k, v in z.items():
            wk = w.get(k, 0.0)
            w[k] = wk - lr * (g * v + l2 * wk)
        self.intercept -= lr * g

    def contributions(self, x: dict[str, float]) -> list[tuple[str, float]]:
        """(feature, weight x standardised value): each feature's push on the logit."""
        z = self.scaler.transform_one(_slog_all(x))
        return [(k, self.weights.get(k, 0.0) * v) for k, v in z.items()]


def _make_candidates(learning_rate: float) -> dict[str, LinearChurnScorer]:
    """``logreg``: the behaviour model on its own; ``residual``: the same on top of the health
    prior (where the scorecard already ranks well, it starts from there)."""
    return {"logreg": LinearChurnScorer(learning_rate),
            "residual": LinearChurnScorer(learning_rate, offset=HealthPrior())}


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

    def __init__(self, min_labels: int = 300, min_positives: int = 30, seed: int = 7, calibrate: bool = True,
                 learning_rate: float = 0.005, window: int = 5000, margin: float = 0.01,
                 warmup: int | None = None) -> None:
        self.min_labels = min_labels
        self.min_positives = min_positives
        self.seed = seed
        self.learning_rate = learning_rate
        self.window = window
        self.margin = margin
        #: predictions count towards the champion rule once the learnt candidate saw this many labels
        self.warmup = min_labels if warmup is None else warmup
        self.candidates = _make_candidates(learning_rate)
        self.learnt = {name: 0 for name in self.candidates}
        #: recent resolved labels: (y, raw prediction of each of ``names``)
        self.recent: deque[tuple[float, ...]] = deque(maxlen=window)
        self.serving = "prior"
        self.decided: dict[str, float | None] = {}
        self.logloss = {name: metrics.LogLoss() for name in ("prior", *self.candidates)}
        self.detector = drift.ADWIN()
        self.drifts = 0
        self.labels_seen = 0
        self.positives = 0
        self.version = 0
        self.prior = HealthPrior()
        self.levels = ActivityLevels()
        self._init_calibration(calibrate)

    def _init_calibration(self, calibrate: bool) -> None:
        self.calibrate = calibrate
        self.calibrators = {name: PlattCalibrator() for name in ("prior", *self.candidates)}
        # prequential quality of the serving model's probabilities, raw and calibrated
        self.calibration_logloss = {"raw": metrics.LogLoss(), "calibrated": metrics.LogLoss()}
        self.calibration_brier = {"raw": _RunningMean(), "calibrated": _RunningMean()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "recent" not in state:
            # a checkpoint from before behaviour features (scorecard-signal inputs, a tree and
            # up-weighted positives): its learners do not read today's inputs, so learning
            # starts again; the counters and the prior's calibration carry over
            fresh = ChurnModel(state.get("min_labels", 300), state.get("min_positives", 30),
                               calibrate=state.get("calibrate", True))
            fresh.labels_seen = state.get("labels_seen", 0)
            fresh.positives = state.get("positives", 0)
            fresh.version = state.get("version", 0)
            if "calibrators" in state and "prior" in state["calibrators"]:
                fresh.calibrators["prior"] = state["calibrators"]["prior"]
            state = fresh.__dict__
        self.__dict__.update(state)
        if "calibrators" not in state:  # a checkpoint from before calibration existed
            self._init_calibration(True)

    # --- serving ------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """The models the champion rule compares, in the order ``recent`` holds their predictions."""
        return ("prior", *self.candidates)

    @property
    def ready(self) -> bool:
        return self.labels_seen >= self.min_labels and self.positives >= self.min_positives

    @property
    def champion(self) -> str:
        """The serving model, as decided at the last checkpoint (``decide``)."""
        return self.serving

    def _raw(self, name: str, x: dict[str, float]) -> float:
        if name == "prior":
            return self.prior.predict_one(x)
        return self.candidates[name].predict_proba_one(x)[True]

    def predict_detail(self, x: dict[str, float]) -> tuple[float, float, str]:
        """(served churn probability, raw probability, model version); the served one is
        calibrated unless ``calibrate`` is off."""
        name = self.serving
        raw = self._raw(name, x)
        version = self.prior.version if name == "prior" else f"online-{name}-v{self.version}"
        return (self.calibrators[name].predict(raw) if self.calibrate else raw), raw, version

    def predict_one(self, x: dict[str, float]) -> tuple[float, str]:
        """(churn probability, model version): calibrated unless ``calibrate`` is off."""
        served, _, version = self.predict_detail(x)
        return served, version

    def explain(self, x: dict[str, float], n: int = 3) -> list[tuple[str, float, float]]:
        """The features pushing this customer's risk up: (feature, value, coefficient x
        standardised value), strongest first. Only when a learnt model serves; the prior
        has nothing to add (the health reasons say it)."""
        if self.serving == "prior":
            return []
        parts = [(f, x[f], c) for f, c in self.candidates[self.serving].contributions(x) if f in x]
        return sorted((p for p in parts if p[2] > 0), key=lambda p: (-p[2], p[0]))[:n]

    def population_percentile(self, level: float | None) -> float | None:
        """Share of the learnt population with a lower activity level (None: unknown)."""
        if level is None or self.levels.n < self.min_labels:
            return None
        return self.levels.percentile(level)

    # --- learning -----------------------------------------------------------------------
    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Prequential step: predict with every candidate, record and score it, then learn."""
        serving = self.serving
        preds = {"prior": self.prior.predict_one(x)}
        for name, model in self.candidates.items():
            preds[name] = model.predict_proba_one(x)[True]
        for name, p in preds.items():
            self._learn_calibration(name, p, y, serving)
            self.logloss[name].update(y, min(max(p, 1e-6), 1 - 1e-6))
        self.detector.update(abs(float(y) - preds[serving]))
        if self.detector.drift_detected:
            self.drifts += 1
        if all(self.learnt.get(name, 0) >= self.warmup for name in self.candidates):
            self.recent.append((float(y), *(preds[n] for n in self.names)))
        for name, model in self.candidates.items():
            model.learn_one(x, y)
            self.learnt[name] = self.learnt.get(name, 0) + 1
        if LEVEL_FEATURE in x:
            self.levels.learn(x[LEVEL_FEATURE])
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

    def window_auc(self) -> dict[str, float | None]:
        """Exact ROC AUC of each model over the recent window (None: too few positives)."""
        ys = [r[0] > 0 for r in self.recent]
        positives = sum(ys)
        if positives < self.min_positives or positives == len(ys):
            return {name: None for name in self.names}
        return {name: roc_auc([r[i] for r in self.recent], ys) for i, name in enumerate(self.names, start=1)}

    def decide(self) -> str:
        """Choose the serving model (called when the learner writes a checkpoint): the best
        window AUC, if it beats the serving model's by ``margin``; the prior until ``ready``."""
        self.decided = self.window_auc()
        if not self.ready:
            self.serving = "prior"
            return self.serving
        current = self.decided.get(self.serving)
        best = max((n for n, a in self.decided.items() if a is not None),
                   key=lambda n: (self.decided[n], n == self.serving), default=None)
        if best is not None and best != self.serving:
            best_auc = self.decided[best]
            if current is None or (best_auc is not None and best_auc > current + self.margin):
                self.serving = best
        return self.serving

    # --- reporting and checkpoints ------------------------------------------------------
    def top_features(self, n: int = 8) -> list[dict[str, float]]:
        """The serving (else the behaviour) model's weights per standardised unit, strongest first."""
        model = self.candidates.get(self.serving) or self.candidates["logreg"]
        ranked = sorted(model.weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:n]
        return [{"feature": k, "weight": round(float(v), 4)} for k, v in ranked]

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "serving": self.predict_one({})[1],
            "labels_seen": self.labels_seen,
            "positives": self.positives,
            "ready": self.ready,
            "champion_rule": {"window_labels": len(self.recent), "margin": self.margin,
                              "window_auc": {k: None if v is None else round(v, 4) for k, v in self.decided.items()}},
            "prequential": {
                name: {"roc_auc": None if (a := self.decided.get(name)) is None else round(a, 4),
                       "log_loss": round(float(self.logloss[name].get()), 4)}
                for name in ("prior", *self.candidates)
            },
            "drifts_detected": self.drifts,
            "population_levels": self.levels.n,
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


def new_model(settings: ModelSettings) -> ChurnModel:
    """An untrained churn model with this deployment's model settings."""
    return ChurnModel(settings.model_min_labels, settings.model_min_positives, calibrate=settings.model_calibration,
                      learning_rate=settings.model_learning_rate, window=settings.model_champion_window,
                      margin=settings.model_champion_margin)
