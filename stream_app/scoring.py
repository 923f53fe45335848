"""The health scorecard: aggregates -> components (0-100) -> weighted score, band, reasons.

Pure code. Each component is a weighted mean of *factors*; each factor maps one raw signal
onto 0..1 with an explicit, configurable target range (``lo`` -> 0, ``hi`` -> 1, linear in
between, reversed when ``lo > hi``). Why target ranges and not fitted normalisation: they
need no offline fitting and no population history, mean the same thing on the first event
as on the millionth, replay identically, and a customer-success lead can read and tune them
("8+ features used in 30 days is full adoption"). The customer's own baseline enters through
ratio factors (last 7 days against its own 90-day rate).

Reasons are the factors that cost the most points: ``impact = -(1 - value) x factor weight x
component weight x 100``, strongest first.

>>> from stream_app.aggregates import CustomerAggregates
>>> card = Scorecard(ScorecardConfig())
>>> signals = {"activity_vs_baseline": 1.0, "active_days_share_30d": 0.8, "days_since_last_activity": 0.5,
...            "features_30d": 9, "active_users_30d": 12, "nps_mean_90d": 9.0, "csat_90d": 1.0,
...            "open_ticket_load": 0, "reopened_30d": 0, "ticket_load_30d": 0, "sentiment_30d": 0.5,
...            "mrr_change_pct_90d": 0.1, "downgrades_90d": 0, "tenure_days": 400, "cancelled": 0}
>>> result = card.score_signals(signals)
>>> result.score, result.band, result.reasons
(100.0, 'green', [])
>>> poor = card.score_signals({**signals, "days_since_last_activity": 30, "activity_vs_baseline": 0.1,
...                             "open_ticket_load": 40, "nps_mean_90d": 3.0})
>>> poor.band, poor.score, [r.factor for r in poor.reasons[:2]]
('yellow', 63.75, ['activity_vs_baseline', 'nps_mean_90d'])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas import Reason

from .aggregates import CustomerAggregates

Band = Literal["green", "yellow", "red"]
#: Days of tenure during which history-dependent factors are unknown rather than bad.
ONBOARDING_DAYS = 14
COMPONENTS: tuple[str, ...] = ("engagement", "adoption", "satisfaction", "support", "commercial", "lifecycle")


class FactorSpec(BaseModel):
    """How one raw signal becomes a 0..1 value, and its weight inside its component."""

    model_config = ConfigDict(extra="forbid")

    component: str
    lo: float = Field(description="raw value that scores 0")
    hi: float = Field(description="raw value that scores 1 (lo > hi: lower is better)")
    weight: float = Field(1.0, ge=0)
    neutral: float = Field(0.6, ge=0, le=1, description="value when the signal is unknown (no data)")

    @model_validator(mode="after")
    def _range_not_empty(self) -> "FactorSpec":
        if self.lo == self.hi:
            raise ValueError("lo and hi must differ")
        return self

    def value(self, raw: float | None) -> float:
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return self.neutral
        t = (raw - self.lo) / (self.hi - self.lo)
        return min(1.0, max(0.0, t))


def _default_factors() -> dict[str, FactorSpec]:
    f = FactorSpec
    return {
        # engagement: against the customer's own baseline, and absolute activity
        "activity_vs_baseline": f(component="engagement", lo=0.2, hi=0.9, weight=0.4),
        "active_days_share_30d": f(component="engagement", lo=0.1, hi=0.7, weight=0.3),
        "days_since_last_activity": f(component="engagement", lo=14, hi=2, weight=0.3),
        # adoption breadth
        "features_30d": f(component="adoption", lo=1, hi=8, weight=0.6),
        "active_users_30d": f(component="adoption", lo=1, hi=10, weight=0.4),
        # satisfaction (recency enters through the 90-day window and the last answer)
        "nps_mean_90d": f(component="satisfaction", lo=4, hi=9, weight=0.5),
        "csat_90d": f(component="satisfaction", lo=0.4, hi=0.95, weight=0.5),
        # support burden (lower is better)
        "open_ticket_load": f(component="support", lo=24, hi=2, weight=0.35, neutral=1.0),
        "reopened_30d": f(component="support", lo=3, hi=0, weight=0.2, neutral=1.0),
        "ticket_load_30d": f(component="support", lo=40, hi=4, weight=0.25, neutral=1.0),
        "sentiment_30d": f(component="support", lo=-0.6, hi=0.3, weight=0.2),
        # commercial
        "mrr_change_pct_90d": f(component="commercial", lo=-0.3, hi=0.05, weight=0.5, neutral=0.8),
        "downgrades_90d": f(component="commercial", lo=2, hi=0, weight=0.3, neutral=1.0),
        "cancelled": f(component="commercial", lo=1, hi=0, weight=0.2, neutral=1.0),
        # lifecycle: young accounts churn more
        "tenure_days": f(component="lifecycle", lo=14, hi=365, weight=1.0),
    }


class ScorecardConfig(BaseModel):
    """Weights, bands and factor ranges; load from YAML with :meth:`from_file`.

    >>> from pydantic import ValidationError
    >>> try:
    ...     ScorecardConfig(weights={"engagement": 1, "mood": 1})
    ... except ValidationError as e:
    ...     print(e.errors()[0]["loc"], e.errors()[0]["msg"])
    ('weights',) Value error, unknown component(s) ['mood']; known: engagement, adoption, satisfaction, support, commercial, lifecycle
    """

    model_config = ConfigDict(extra="forbid")

    weights: dict[str, float] = Field(
        default={"engagement": 0.3, "adoption": 0.15, "satisfaction": 0.2, "support": 0.15,
                 "commercial": 0.15, "lifecycle": 0.05}
    )
    green_min: float = Field(70.0, ge=0, le=100, description="score >= this is green")
    yellow_min: float = Field(45.0, ge=0, le=100, description="score >= this (and < green_min) is yellow")
    factors: dict[str, FactorSpec] = Field(default_factory=_default_factors)

    @field_validator("weights")
    @classmethod
    def _weights_valid(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown component(s) {unknown}; known: {', '.join(COMPONENTS)}")
        if any(w < 0 for w in v.values()):
            raise ValueError("weights must be >= 0")
        if sum(v.values()) <= 0:
            raise ValueError("at least one weight must be > 0")
        return v

    @model_validator(mode="after")
    def _bands_and_factors(self) -> "ScorecardConfig":
        if not self.yellow_min < self.green_min:
            raise ValueError(f"bands must be ordered: yellow_min ({self.yellow_min}) < green_min ({self.green_min})")
        for name, spec in self.factors.items():
            if spec.component not in COMPONENTS:
                raise ValueError(f"factors.{name}.component: unknown component {spec.component!r}")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> "ScorecardConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        if "factors" in data:  # partial overrides of the defaults
            merged = {k: v.model_dump() for k, v in _default_factors().items()}
            for name, spec in data["factors"].items():
                merged[name] = {**merged.get(name, {}), **spec}
            data["factors"] = merged
        return cls.model_validate(data)

    def band(self, score: float) -> Band:
        if score >= self.green_min:
            return "green"
        return "yellow" if score >= self.yellow_min else "red"


class HealthResult(BaseModel):
    """One customer's health at one moment."""

    score: float
    band: Band
    components: dict[str, float]
    reasons: list[Reason]
    signals: dict[str, float | None]


def signals_from(agg: CustomerAggregates) -> dict[str, float | None]:
    """The raw signals the scorecard (and the churn model) read, from the aggregates only."""
    w7, w30, w90 = agg.windows.get("7d"), agg.windows.get("30d"), agg.windows.get("90d")
    rate_7 = (w7.activity_events / 7) if w7 else None
    tenure = agg.tenure_days or 0.0
    base_days = min(90.0, max(tenure, 7.0))
    rate_90 = (w90.activity_events / base_days) if w90 else None
    # Onboarding: in its first two weeks a customer has no baseline, and little activity or
    # adoption is normal, so those factors are unknown (neutral), not bad. Without this, every
    # new account scored red on its `started` event and raised a churn alert.
    onboarding = tenure < ONBOARDING_DAYS
    vs_baseline = None
    if not onboarding:
        if rate_7 is not None and rate_90:
            vs_baseline = rate_7 / rate_90
        elif rate_90 == 0:
            vs_baseline = 0.0
    days_alive = min(30.0, max(1.0, tenure + 1.0))
    mrr_pct = None
    if agg.mrr is not None and agg.mrr_change is not None:
        before = agg.mrr - agg.mrr_change
        mrr_pct = agg.mrr_change / before if before > 0 else 0.0
    idle = agg.days_since_last_activity
    if idle is None:  # never active: bad after onboarding, unknown during it
        idle = None if onboarding else 90.0
    return {
        "activity_vs_baseline": vs_baseline,
        "active_days_share_30d": None if onboarding or not w30 else min(1.0, w30.active_days / days_alive),
        "days_since_last_activity": idle,
        "features_30d": None if onboarding or not w30 else float(w30.features_used),
        "active_users_30d": None if onboarding or not w30 else float(w30.active_users),
        "nps_mean_90d": w90.nps_mean if w90 else None,
        "csat_90d": w90.csat if w90 else None,
        "open_ticket_load": float(agg.open_ticket_load),
        "reopened_30d": float(w30.tickets_reopened) if w30 else None,
        "ticket_load_30d": float(w30.ticket_load) if w30 else None,
        "sentiment_30d": w30.sentiment_mean if w30 else None,
        "mrr_change_pct_90d": mrr_pct,
        "downgrades_90d": float(w90.downgrades) if w90 else None,
        "cancelled": 1.0 if agg.subscription_status == "cancelled" else 0.0,
        "tenure_days": agg.tenure_days,
    }


class Scorecard:
    """Scores signals with one :class:`ScorecardConfig`."""

    def __init__(self, config: ScorecardConfig) -> None:
        self.config = config
        total = sum(config.weights.get(c, 0.0) for c in COMPONENTS)
        self._cw = {c: config.weights.get(c, 0.0) / total for c in COMPONENTS}
        self._by_component: dict[str, list[tuple[str, FactorSpec]]] = {c: [] for c in COMPONENTS}
        for name, spec in config.factors.items():
            self._by_component[spec.component].append((name, spec))

    def score(self, agg: CustomerAggregates) -> HealthResult:
        return self.score_signals(signals_from(agg))

    def score_signals(self, signals: dict[str, float | None]) -> HealthResult:
        components: dict[str, float] = {}
        losses: list[tuple[float, str, float]] = []
        total = 0.0
        for comp, factors in self._by_component.items():
            fw = sum(spec.weight for _, spec in factors)
            if not factors or fw <= 0:
                components[comp] = 100.0
                total += self._cw[comp] * 100.0
                continue
            acc = 0.0
            for name, spec in factors:
                v = spec.value(signals.get(name))
                acc += spec.weight * v
                loss = (1.0 - v) * spec.weight / fw * self._cw[comp] * 100.0
                raw = signals.get(name)
                if loss > 0.05:
                    losses.append((loss, name, float(raw) if raw is not None else float("nan")))
            value = 100.0 * acc / fw
            components[comp] = round(value, 2)
            total += self._cw[comp] * value
        total = round(min(100.0, max(0.0, total)), 2)
        losses.sort(key=lambda t: (-t[0], t[1]))
        reasons = [
            Reason(factor=name, value=0.0 if math.isnan(raw) else round(raw, 4), impact=-round(loss, 2))
            for loss, name, raw in losses[:6]
        ]
        return HealthResult(score=total, band=self.config.band(total), components=components,
                            reasons=reasons, signals=signals)
