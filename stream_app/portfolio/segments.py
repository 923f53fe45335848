"""Online behavioural segmentation: river incremental k-means over scaled behaviour features.

Each refresh of a customer's score is one observation: its behaviour features (activity,
active days, adoption breadth, users, support load, NPS, MRR, tenure), each mapped onto
0..1 by a fixed range so that distances mean the same on the first observation as on the
millionth (no learnt scaler that would move every centre). The first ``k`` observations seed
the centres; after that ``river.cluster.KMeans`` moves the winning centre toward each
observation by ``halflife``. A segment is a centre, labelled
``seg<i>``. A segment is described by its strongest traits: the features on which its
centre lies furthest from the running mean of all observations.

Alert thresholds may differ per segment (``alert_threshold``).

>>> cfg = SegmentConfig(k=2, seed=3)
>>> m = SegmentModel(cfg)
>>> busy = {f: 0.9 for f in FEATURES}
>>> idle = {f: 0.1 for f in FEATURES}
>>> for _ in range(50):
...     a, b = m.assign(busy), m.assign(idle)
>>> a != b, m.assign(busy, learn=False) == a
(True, True)
>>> alert_threshold(a, SegmentConfig(alert_thresholds={a: 0.4}), default=0.25)
0.4
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from river import cluster

from stream_app.scoring.aggregates import CustomerAggregates

#: feature -> (raw value at 0, raw value at 1, log scale?)
FEATURE_RANGES: dict[str, tuple[float, float, bool]] = {
    "activity_30d": (0.0, 5000.0, True),
    "active_days_share_30d": (0.0, 1.0, False),
    "features_30d": (0.0, 15.0, False),
    "active_users_30d": (0.0, 50.0, True),
    "ticket_load_30d": (0.0, 40.0, True),
    "nps_mean_90d": (0.0, 10.0, False),
    "mrr": (0.0, 10000.0, True),
    "tenure_days": (0.0, 730.0, False),
}
FEATURES: tuple[str, ...] = tuple(FEATURE_RANGES)
#: value of a feature with no data (an account that never answered NPS): the middle
_UNKNOWN = 0.5
TRAIT_NAMES = {
    "activity_30d": "activity",
    "active_days_share_30d": "active days",
    "features_30d": "features used",
    "active_users_30d": "active users",
    "ticket_load_30d": "support load",
    "nps_mean_90d": "NPS",
    "mrr": "MRR",
    "tenure_days": "tenure",
}


def scale(name: str, raw: float | None) -> float:
    """Map a raw feature onto 0..1 with its fixed range (log1p for heavy-tailed ones).

    >>> scale("features_30d", 7.5), scale("mrr", None), scale("mrr", -5.0)
    (0.5, 0.5, 0.0)
    """
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return _UNKNOWN
    lo, hi, log = FEATURE_RANGES[name]
    if log:
        raw, lo, hi = math.log1p(max(0.0, raw)), math.log1p(lo), math.log1p(hi)
    return min(1.0, max(0.0, (raw - lo) / (hi - lo)))


def segment_features(agg: CustomerAggregates) -> dict[str, float]:
    """The scaled behaviour features of one customer (from its aggregates only)."""
    w30, w90 = agg.windows.get("30d"), agg.windows.get("90d")
    raw: dict[str, float | None] = {
        "activity_30d": float(w30.activity_events) if w30 else None,
        "active_days_share_30d": (w30.active_days / 30.0) if w30 else None,
        "features_30d": float(w30.features_used) if w30 else None,
        "active_users_30d": float(w30.active_users) if w30 else None,
        "ticket_load_30d": float(w30.ticket_load) if w30 else None,
        "nps_mean_90d": w90.nps_mean if w90 else None,
        "mrr": agg.mrr,
        "tenure_days": agg.tenure_days,
    }
    return {name: scale(name, raw[name]) for name in FEATURES}


class SegmentConfig(BaseModel):
    """Segmentation settings: number of segments, learning rate, seed, per-segment thresholds."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=2, le=20, description="number of segments (k-means centres)")
    halflife: float = Field(0.05, gt=0, le=1, description="how far a centre moves toward each observation")
    seed: int = 42
    traits: int = Field(3, ge=1, le=len(FEATURES), description="traits shown per segment")
    alert_thresholds: dict[str, float] = Field(
        default_factory=dict, description="segment label (seg0..) -> churn_risk alert threshold"
    )

    @model_validator(mode="after")
    def _thresholds(self) -> SegmentConfig:
        labels = {label_of(i) for i in range(self.k)}
        for seg, t in self.alert_thresholds.items():
            if seg not in labels:
                raise ValueError(f"alert_thresholds.{seg}: unknown segment; with k={self.k} they are seg0..seg{self.k - 1}")
            if not 0 < t < 1:
                raise ValueError(f"alert_thresholds.{seg}: threshold must be in (0, 1), got {t}")
        return self


def label_of(i: int) -> str:
    return f"seg{i}"


def alert_threshold(segment: str | None, cfg: SegmentConfig, default: float) -> float:
    """The churn_risk alert threshold for a customer in ``segment`` (``default`` if none set)."""
    if segment is None:
        return default
    return cfg.alert_thresholds.get(segment, default)


@dataclass
class Trait:
    feature: str
    centre: float
    mean: float

    @property
    def text(self) -> str:
        word = "high" if self.centre >= self.mean else "low"
        return f"{word} {TRAIT_NAMES.get(self.feature, self.feature)} ({self.centre:.2f} vs {self.mean:.2f})"


@dataclass
class SegmentInfo:
    segment: str
    observations: int
    traits: list[Trait] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "observations": self.observations,
            "traits": [t.text for t in self.traits],
            "centre": {t.feature: round(t.centre, 3) for t in self.traits},
        }


class SegmentModel:
    """river k-means plus the running feature means its segments are described against."""

    def __init__(self, cfg: SegmentConfig) -> None:
        self.cfg = cfg
        # centres start around the middle of the 0..1 feature space
        self.km = cluster.KMeans(n_clusters=cfg.k, halflife=cfg.halflife, mu=0.5, sigma=0.2, seed=cfg.seed)
        # draw every initial coordinate now, in a fixed order: river draws them lazily while
        # iterating a set of feature names, whose order depends on the process' hash seed
        for i in range(cfg.k):
            for f in FEATURES:
                self.km.centers[i][f]
        self.counts = [0] * cfg.k
        self.n = 0
        self.sums = {f: 0.0 for f in FEATURES}

    def assign(self, x: dict[str, float], learn: bool = True) -> str:
        """The segment of ``x``; with ``learn`` the model also learns from it."""
        if not learn:
            return label_of(self.km.predict_one(x))
        if self.n < self.cfg.k:
            # the first k observations seed the centres (MacQueen): a centre drawn at random
            # may never be the nearest to anyone and stay an empty segment for good
            i = self.n
            self.km.centers[i].update(x)
        else:
            i = self.km.learn_predict_one(x)
        self.counts[i] += 1
        self.n += 1
        for f, v in x.items():
            self.sums[f] = self.sums.get(f, 0.0) + v
        return label_of(i)

    def describe(self) -> list[SegmentInfo]:
        """Each segment's strongest traits: centre minus mean, largest first."""
        means = {f: (s / self.n if self.n else _UNKNOWN) for f, s in self.sums.items()}
        out = []
        for i in range(self.cfg.k):
            centre = self.km.centers[i]
            diffs = sorted(
                ((abs(centre[f] - means[f]), f) for f in FEATURES if f in centre), key=lambda t: (-t[0], t[1])
            )
            traits = [Trait(f, float(centre[f]), means[f]) for _, f in diffs[: self.cfg.traits]]
            out.append(SegmentInfo(label_of(i), self.counts[i], traits))
        return out

    def to_bytes(self) -> bytes:
        """JSON checkpoint (data only: loading it runs no code, unlike a pickle)."""
        state = {
            "k": self.cfg.k,
            "centers": [dict(self.km.centers[i]) for i in range(self.cfg.k)],
            "counts": self.counts,
            "n": self.n,
            "sums": self.sums,
        }
        return orjson.dumps(state)

    @classmethod
    def from_bytes(cls, blob: bytes, cfg: SegmentConfig) -> SegmentModel:
        """Restore a checkpoint; one taken with a different ``k`` is not reused (a fresh model)."""
        state = orjson.loads(blob)
        model = cls(cfg)
        if state.get("k") != cfg.k:
            return model
        for i, centre in enumerate(state["centers"]):
            model.km.centers[i].update({f: float(v) for f, v in centre.items()})
        model.counts = list(state["counts"])
        model.n = int(state["n"])
        model.sums = dict(state["sums"])
        return model
