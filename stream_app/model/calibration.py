"""Online Platt scaling: turns a model's raw churn score into a calibrated probability.

The learner up-weights the rare positives (so that the models learn to rank them), which
inflates their raw probabilities: a raw 0.3 may mean a 3 % chance. Platt scaling fits
``p = sigmoid(a * logit(raw) + b)`` on (raw prediction, resolved label) pairs, so that among
customers shown 20 % about 20 % churn. It is monotone (``a >= 0``): the ranking, and so the
ROC AUC, is unchanged.

Learned prequentially and online, like the models: each resolved label first scores the
calibrator's prediction, then updates it. The pairs are kept as weighted counts in bins of
``logit(raw)`` (a fixed grid, so the state is small and constant), older labels fade with a
half-life counted in labels (the raw model keeps learning, so its scale drifts), and the two
parameters are refitted by Newton's method on the binned counts every ``refit_every`` labels.
A Gaussian prior centred on the identity (``a = 1, b = 0``) keeps the fit sane while labels
are few: with no labels the calibrator returns the raw probability unchanged.

>>> cal = PlattCalibrator(refit_every=100)
>>> cal.predict(0.3)                       # nothing learnt yet: the identity
0.3
>>> import random
>>> rng = random.Random(1)
>>> for _ in range(20_000):               # raw scores 10x too high: raw 0.3 churns ~3 %
...     raw = rng.choice([0.05, 0.1, 0.3, 0.6])
...     cal.learn(raw, rng.random() < raw / 10)
>>> round(cal.predict(0.3), 2), round(cal.predict(0.6), 2)
(0.03, 0.06)
"""

from __future__ import annotations

import math

import numpy as np

#: logit(raw) is clipped to +-Z_MAX and binned with width Z_STEP
Z_MAX = 12.0
Z_STEP = 0.1


def logit(p: float, eps: float = 1e-6) -> float:
    """log(p / (1 - p)) with p clipped to [eps, 1 - eps].

    >>> logit(0.5), round(logit(0.9), 4), logit(1.0) == logit(1 - 1e-6)
    (0.0, 2.1972, True)
    """
    p = min(max(float(p), eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    """The logistic function, overflow-safe.

    >>> sigmoid(0.0), round(sigmoid(2.1972), 4), sigmoid(-1000.0)
    (0.5, 0.9, 0.0)
    """
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class PlattCalibrator:
    """``p = sigmoid(a * logit(raw) + b)``, fitted online on binned, fading label counts."""

    def __init__(self, half_life_labels: float = 10_000.0, prior_strength: float = 2.0, refit_every: int = 50) -> None:
        if half_life_labels <= 0 or prior_strength <= 0 or refit_every < 1:
            raise ValueError("half_life_labels and prior_strength must be > 0, refit_every >= 1")
        self.half_life_labels = half_life_labels
        self.prior_strength = prior_strength
        self.refit_every = refit_every
        n = int(round(2 * Z_MAX / Z_STEP)) + 1
        self._pos = np.zeros(n)   # faded count of positives per bin
        self._neg = np.zeros(n)   # ... of negatives
        self._zsum = np.zeros(n)  # faded sum of logit(raw) per bin (the bin's mean, not its centre)
        self._pending_decay = 0
        self._since_fit = 0
        self.a = 1.0
        self.b = 0.0
        self.labels = 0

    # --- serving ------------------------------------------------------------------------
    def predict(self, raw: float) -> float:
        """The calibrated probability of a raw model output."""
        if self.a == 1.0 and self.b == 0.0:
            return float(raw)
        return sigmoid(self.a * logit(raw) + self.b)

    # --- learning -----------------------------------------------------------------------
    def learn(self, raw: float, y: bool) -> None:
        """Add one resolved (raw prediction, label) pair; refit every ``refit_every`` labels."""
        z = max(-Z_MAX, min(Z_MAX, logit(raw)))
        i = int(round((z + Z_MAX) / Z_STEP))
        self._pending_decay += 1
        if self._pending_decay >= 100:  # fade in steps of 100 labels: the same as per label, cheaper
            self._fade()
        (self._pos if y else self._neg)[i] += 1.0
        self._zsum[i] += z
        self.labels += 1
        self._since_fit += 1
        if self._since_fit >= self.refit_every:
            self.fit()

    def _fade(self) -> None:
        factor = 0.5 ** (self._pending_decay / self.half_life_labels)
        self._pos *= factor
        self._neg *= factor
        self._zsum *= factor
        self._pending_decay = 0

    def fit(self, iterations: int = 25) -> None:
        """Maximum a posteriori (a, b) by Newton's method, warm-started from the last fit."""
        self._since_fit = 0
        n = self._pos + self._neg
        used = n > 0
        if not used.any():
            return
        pos, n = self._pos[used], n[used]
        z = self._zsum[used] / n
        lam = self.prior_strength
        a, b = self.a, self.b
        for _ in range(iterations):
            p = 0.5 * (1.0 + np.tanh(0.5 * (a * z + b)))  # the logistic, overflow-free
            r = n * p - pos                 # d(neg log-lik)/d(a z + b), per bin
            w = n * p * (1.0 - p)
            g = np.array([np.dot(r, z) + lam * (a - 1.0), r.sum() + lam * b])
            h = np.array([[np.dot(w, z * z) + lam, np.dot(w, z)], [np.dot(w, z), w.sum() + lam]])
            step = np.linalg.solve(h, g)
            a, b = a - float(step[0]), b - float(step[1])
            if abs(step[0]) < 1e-7 and abs(step[1]) < 1e-7:
                break
        # monotone: a calibrator may flatten a ranking, never invert it
        self.a, self.b = max(0.0, a), b

    def state(self) -> dict[str, float]:
        """Parameters and the (faded) amount of evidence behind them."""
        return {"a": round(self.a, 4), "b": round(self.b, 4), "labels": self.labels,
                "effective_labels": round(float(self._pos.sum() + self._neg.sum()), 1),
                "effective_positives": round(float(self._pos.sum()), 1)}
