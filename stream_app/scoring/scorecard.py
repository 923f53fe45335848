"""The health scorecard: aggregates -> components (0-100) -> weighted score, band, reasons.

Pure code. Each component is a weighted mean of *factors*; each factor maps one raw signal
onto 0..1 with an explicit, configurable target range (``lo`` -> 0, ``hi`` -> 1, linear in
between, reversed when ``lo > hi``). Why target ranges and not fitted normalisation: they
need no offline fitting and no population history, mean the same thing on the first event
as on the millionth, replay identically, and a customer-success lead can read and tune them
("8+ features used in 30 days is full adoption"). The customer's own baseline enters through
ratio factors (last 7 days against its own 90-day rate), the population through one
percentile factor (``activity_percentile``: where the customer's activity level stands among
all customers', from the model checkpoint pinned to event time, so replays stay exact).

Reasons are the factors that cost the most points: ``impact = -(1 - value) x factor weight x
component weight x 100``, strongest first.

Profiles (data, not code): the configuration may define profiles that apply to customers of
some plans and/or lifecycle stages (by tenure: ``onboarding``, ``adoption``, ``mature`` by
default), each with its own component weights, bands, factor ranges and missing-component
policy; the first matching profile wins, else the base card. A component is *missing* when
none of its factors has a known signal: ``missing_components: neutral`` scores it from its
factors' ``neutral`` values, ``reweight`` leaves it out and scales the other components'
weights up proportionally.

>>> from stream_app.scoring.aggregates import Aggregates, CustomerAggregates
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
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas import Reason
from stream_app.scoring.aggregates import Aggregates, CustomerAggregates

Band = Literal["green", "yellow", "red"]
MissingPolicy = Literal["neutral", "reweight"]
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
    neutral: float | None = Field(0.6, ge=0, le=1, description="value when the signal is unknown (no data); "
                                  "null: an unknown signal leaves the factor out of its component")

    @model_validator(mode="after")
    def _range_not_empty(self) -> "FactorSpec":
        if self.lo == self.hi:
            raise ValueError("lo and hi must differ")
        return self

    def value(self, raw: float | None) -> float:
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return 0.6 if self.neutral is None else self.neutral
        t = (raw - self.lo) / (self.hi - self.lo)
        return min(1.0, max(0.0, t))


def _default_factors() -> dict[str, FactorSpec]:
    f = FactorSpec
    return {
        # engagement: against the customer's own baseline, and absolute activity
        "activity_vs_baseline": f(component="engagement", lo=0.2, hi=0.9, weight=0.4),
        "active_days_share_30d": f(component="engagement", lo=0.1, hi=0.7, weight=0.3),
        "days_since_last_activity": f(component="engagement", lo=14, hi=2, weight=0.3),
        # ... and against the population: the share of customers with a lower activity level
        # (known from the customer's first day, once the model has learnt the population)
        # (left out until known, so a deployment scores as before while the population is learnt)
        "activity_percentile": f(component="engagement", lo=0.05, hi=0.6, weight=0.4, neutral=None),
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


def _check_weights(v: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(v) - set(COMPONENTS))
    if unknown:
        raise ValueError(f"unknown component(s) {unknown}; known: {', '.join(COMPONENTS)}")
    if any(w < 0 for w in v.values()):
        raise ValueError("weights must be >= 0")
    if sum(v.values()) <= 0:
        raise ValueError("at least one weight must be > 0")
    return v


def _merge_factors(base: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Partial factor overrides (``{features_30d: {hi: 4}}``) merged over full factor specs."""
    merged = {k: (v.model_dump() if isinstance(v, FactorSpec) else dict(v)) for k, v in base.items()}
    for name, spec in (overrides or {}).items():
        if not isinstance(spec, dict):
            raise ValueError(f"factors.{name}: must be a mapping of lo/hi/weight/neutral/component")
        merged[name] = {**merged.get(name, {}), **spec}
    return merged


def _default_stages() -> dict[str, float]:
    return {"onboarding": 0.0, "adoption": float(ONBOARDING_DAYS), "mature": 180.0}


class ProfileMatch(BaseModel):
    """Which customers a profile applies to: all the given criteria must hold."""

    model_config = ConfigDict(extra="forbid")

    plans: list[str] | None = Field(None, description="plan names (case-insensitive)")
    stages: list[str] | None = Field(None, description="lifecycle stages (see ``lifecycle_stages``)")

    @model_validator(mode="after")
    def _not_empty(self) -> "ProfileMatch":
        if not self.plans and not self.stages:
            raise ValueError("a profile must match at least one plan or stage (set plans and/or stages)")
        if self.plans and any(not p.strip() for p in self.plans):
            raise ValueError("plans: names must not be empty")
        return self


class ProfileConfig(BaseModel):
    """A segment's own scorecard: anything unset is inherited from the base card."""

    model_config = ConfigDict(extra="forbid")

    match: ProfileMatch
    weights: dict[str, float] | None = None
    green_min: float | None = Field(None, ge=0, le=100)
    yellow_min: float | None = Field(None, ge=0, le=100)
    missing_components: MissingPolicy | None = None
    factors: dict[str, dict[str, Any]] | None = Field(None, description="partial overrides of the base factors")

    @field_validator("weights")
    @classmethod
    def _weights_valid(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return None if v is None else _check_weights(v)


class ScorecardConfig(BaseModel):
    """Weights, bands, factor ranges and profiles; load from YAML with :meth:`from_file`.

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
    missing_components: MissingPolicy = Field(
        "neutral", description="a component with no known factor: 'neutral' (score its factors' neutral values) "
                               "or 'reweight' (leave it out, scale the other weights up proportionally)")
    lifecycle_stages: dict[str, float] = Field(
        default_factory=_default_stages, description="stage name -> first tenure day of that stage")
    profiles: dict[str, ProfileConfig] = Field(default_factory=dict, description="first match wins (file order)")

    @field_validator("weights")
    @classmethod
    def _weights_valid(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_weights(v)

    @field_validator("lifecycle_stages")
    @classmethod
    def _stages_valid(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("at least one stage is needed")
        if any(d < 0 for d in v.values()):
            raise ValueError("stage start days must be >= 0")
        if 0 not in v.values():
            raise ValueError("one stage must start at day 0")
        if len(set(v.values())) != len(v):
            raise ValueError("two stages start on the same day")
        return v

    @model_validator(mode="after")
    def _bands_and_factors(self) -> "ScorecardConfig":
        if not self.yellow_min < self.green_min:
            raise ValueError(f"bands must be ordered: yellow_min ({self.yellow_min}) < green_min ({self.green_min})")
        for name, spec in self.factors.items():
            if spec.component not in COMPONENTS:
                raise ValueError(f"factors.{name}.component: unknown component {spec.component!r}")
        for name, prof in self.profiles.items():
            where = f"profiles.{name}"
            unknown = sorted(set(prof.match.stages or []) - set(self.lifecycle_stages))
            if unknown:
                raise ValueError(f"{where}.match.stages: unknown stage(s) {unknown}; "
                                 f"known: {', '.join(self.lifecycle_stages)}")
            green = self.green_min if prof.green_min is None else prof.green_min
            yellow = self.yellow_min if prof.yellow_min is None else prof.yellow_min
            if not yellow < green:
                raise ValueError(f"{where}: bands must be ordered: yellow_min ({yellow}) < green_min ({green})")
            if prof.factors:
                for fname, spec in _merge_factors(self.factors, prof.factors).items():
                    try:
                        checked = FactorSpec.model_validate(spec)
                    except ValueError as exc:
                        raise ValueError(f"{where}.factors.{fname}: {_first_error(exc)}") from None
                    if checked.component not in COMPONENTS:
                        raise ValueError(f"{where}.factors.{fname}.component: unknown component {checked.component!r}")
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> "ScorecardConfig":
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the scorecard file must be a YAML mapping")
        if "factors" in data:  # partial overrides of the defaults
            data["factors"] = _merge_factors(_default_factors(), data["factors"])
        return cls.model_validate(data)

    @classmethod
    def for_file(cls, path: str | Path | None) -> "ScorecardConfig":
        """The configuration of ``SCORECARD_FILE``, or the defaults when unset."""
        return cls.from_file(path) if path else cls()

    def band(self, score: float) -> Band:
        if score >= self.green_min:
            return "green"
        return "yellow" if score >= self.yellow_min else "red"

    def stage(self, tenure_days: float | None) -> str | None:
        """The lifecycle stage at this tenure (None when the tenure is unknown).

        >>> ScorecardConfig().stage(3), ScorecardConfig().stage(20), ScorecardConfig().stage(400)
        ('onboarding', 'adoption', 'mature')
        """
        if tenure_days is None:
            return None
        started = [(start, name) for name, start in self.lifecycle_stages.items() if start <= tenure_days]
        return max(started)[1] if started else None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        loc = ".".join(str(x) for x in e.get("loc", ()))
        return f"{loc + ': ' if loc else ''}{e['msg']}"
    return str(exc)


class HealthResult(BaseModel):
    """One customer's health at one moment."""

    score: float
    band: Band
    components: dict[str, float]
    reasons: list[Reason]
    signals: dict[str, float | None]
    profile: str | None = Field(None, description="the profile that scored it (None: the base card)")
    green_min: float = 70.0
    yellow_min: float = 45.0
    weights: dict[str, float] = Field(default_factory=dict, description="component weights used, summing to 1")
    factor_points: dict[str, float] = Field(default_factory=dict, description="points each factor contributed")


class ReasonItem(NamedTuple):
    """A standing reason as a plain tuple (the scoring path); ``model()``: the ``Reason``."""

    factor: str
    value: float
    impact: float

    def model(self) -> Reason:
        return Reason(factor=self.factor, value=self.value, impact=self.impact)


class Health:
    """A :class:`HealthResult` as plain attributes (what scoring reads per event; reasons as
    :class:`ReasonItem`); ``model()`` is the validated ``HealthResult``."""

    __slots__ = ("score", "band", "components", "reasons", "signals", "profile", "green_min", "yellow_min",
                 "weights", "_shares")

    def __init__(self, score: float, band: Band, components: dict[str, float], reasons: list[ReasonItem],
                 signals: dict[str, float | None], profile: str | None, green_min: float, yellow_min: float,
                 weights: dict[str, float], shares: list[tuple[str, float, float]]) -> None:
        self.score, self.band, self.components, self.reasons = score, band, components, reasons
        self.signals, self.profile, self.green_min, self.yellow_min = signals, profile, green_min, yellow_min
        self.weights, self._shares = weights, shares

    @property
    def factor_points(self) -> dict[str, float]:  # made when read: only change explanations read them
        return {name: round(v * share, 4) for name, v, share in self._shares}

    def model(self) -> HealthResult:
        return HealthResult(score=self.score, band=self.band, components=self.components,
                            reasons=[r.model() for r in self.reasons], signals=self.signals, profile=self.profile,
                            green_min=self.green_min, yellow_min=self.yellow_min, weights=self.weights,
                            factor_points=self.factor_points)


def signals_from(agg: CustomerAggregates | Aggregates, activity_percentile: float | None = None) -> dict[str, float | None]:
    """The raw signals the scorecard (and the churn model) read, from the aggregates and the
    customer's place in the population's activity levels (``model.ActivityLevels``; None:
    not known yet)."""
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
        "activity_percentile": activity_percentile,
    }


class _Card:
    """One resolved scorecard (the base or a profile): what scoring needs, precomputed."""

    def __init__(self, weights: dict[str, float], factors: dict[str, FactorSpec], green_min: float,
                 yellow_min: float, missing: MissingPolicy) -> None:
        self.weights = {c: weights.get(c, 0.0) for c in COMPONENTS}
        self.green_min, self.yellow_min, self.missing = green_min, yellow_min, missing
        self.by_component: dict[str, list[tuple[str, FactorSpec]]] = {c: [] for c in COMPONENTS}
        for name, spec in factors.items():
            self.by_component[spec.component].append((name, spec))
        #: per component: (name, weight, lo, hi - lo, neutral or None) of each factor
        self.plain: dict[str, list[tuple[str, float, float, float, float | None]]] = {
            c: [(n, spec.weight, spec.lo, spec.hi - spec.lo, spec.neutral) for n, spec in f]
            for c, f in self.by_component.items()}
        #: per component: the factors and their weight sum when every factor is always known
        #: (each has a neutral value), else None
        self.fixed = {c: (f, sum(x[1] for x in f)) if all(x[4] is not None for x in f) else None
                      for c, f in self.plain.items()}
        #: the component weights when every component takes part (always, under 'neutral')
        self.full_cw = self.component_weights({c: bool(f) for c, f in self.by_component.items()})
        self.full_rounded = {c: round(w, 6) for c, w in self.full_cw.items()}

    def component_weights(self, present: dict[str, bool]) -> dict[str, float]:
        total_w = sum(w for c, w in self.weights.items() if present[c] or not self.by_component[c])
        return {c: (self.weights[c] / total_w if (present[c] or not self.by_component[c]) else 0.0)
                for c in COMPONENTS}

    def band(self, score: float) -> Band:
        if score >= self.green_min:
            return "green"
        return "yellow" if score >= self.yellow_min else "red"


def _known(raw: float | None) -> bool:
    return raw is not None and not (isinstance(raw, float) and math.isnan(raw))


class Scorecard:
    """Scores signals with one :class:`ScorecardConfig` (its base card and its profiles)."""

    def __init__(self, config: ScorecardConfig) -> None:
        self.config = config
        self._base = _Card(config.weights, config.factors, config.green_min, config.yellow_min,
                           config.missing_components)
        self._profiles: dict[str, tuple[ProfileMatch, _Card]] = {}
        for name, prof in config.profiles.items():
            factors = config.factors
            if prof.factors:
                factors = {k: FactorSpec.model_validate(v) for k, v in _merge_factors(config.factors, prof.factors).items()}
            card = _Card(
                prof.weights if prof.weights is not None else config.weights,
                factors,
                config.green_min if prof.green_min is None else prof.green_min,
                config.yellow_min if prof.yellow_min is None else prof.yellow_min,
                prof.missing_components or config.missing_components,
            )
            self._profiles[name] = (prof.match, card)
        self._plans = {name: {p.lower() for p in match.plans} if match.plans else None
                       for name, (match, _) in self._profiles.items()}

    def profile_for(self, plan: str | None, tenure_days: float | None) -> str | None:
        """The first profile matching this plan and lifecycle stage, or None (the base card)."""
        if not self._profiles:
            return None
        stage = self.config.stage(tenure_days)
        for name, (match, _) in self._profiles.items():
            plans = self._plans[name]
            if plans is not None and (plan is None or plan.lower() not in plans):
                continue
            if match.stages and stage not in match.stages:
                continue
            return name
        return None

    def score(self, agg: CustomerAggregates | Aggregates, activity_percentile: float | None = None) -> HealthResult:
        return self.health(agg, activity_percentile).model()

    def health(self, agg: CustomerAggregates | Aggregates, activity_percentile: float | None = None) -> Health:
        """:meth:`score` as plain attributes (the scoring path: no validation per event)."""
        return self.score_plain(signals_from(agg, activity_percentile), self.profile_for(agg.plan, agg.tenure_days))

    def score_signals(self, signals: dict[str, float | None], profile: str | None = None) -> HealthResult:
        return self.score_plain(signals, profile).model()

    def score_plain(self, signals: dict[str, float | None], profile: str | None = None) -> Health:
        """:meth:`score_signals` as plain attributes."""
        card = self._profiles[profile][1] if profile is not None else self._base
        get = signals.get
        # which components take part: under 'reweight' a component without any known factor
        # is left out and the others' weights grow proportionally
        if card.missing == "reweight":
            present = {c: any(_known(get(n)) for n, _ in f) for c, f in card.by_component.items()}
            if not any(present[c] and card.weights[c] > 0 for c in COMPONENTS):
                present = {c: True for c in COMPONENTS}  # nothing known at all: fall back to neutral
            cw = card.component_weights(present)
            weights = {c: round(w, 6) for c, w in cw.items()}
        else:
            present, cw, weights = None, card.full_cw, dict(card.full_rounded)
        components: dict[str, float] = {}
        shares: list[tuple[str, float, float]] = []
        losses: list[tuple[float, str, float]] = []
        total = 0.0
        for comp, all_factors in card.plain.items():
            if (known := card.fixed[comp]) is not None:
                factors, fw = known
            else:
                factors = [f for f in all_factors if f[4] is not None or _known(get(f[0]))]
                fw = sum(f[1] for f in factors)
            if not factors or fw <= 0:
                components[comp] = 100.0
                total += cw[comp] * 100.0
                continue
            if present is not None and not present[comp]:
                continue  # missing and re-weighted away: not shown, costs nothing
            acc = 0.0
            c_w = cw[comp]
            for name, weight, lo, span, neutral in factors:
                raw = get(name)
                if raw is None or (isinstance(raw, float) and math.isnan(raw)):  # as FactorSpec.value
                    v = 0.6 if neutral is None else neutral
                else:
                    v = min(1.0, max(0.0, (raw - lo) / span))
                acc += weight * v
                share = weight / fw * c_w * 100.0
                shares.append((name, v, share))
                loss = (1.0 - v) * share
                if loss > 0.05:
                    losses.append((loss, name, float(raw) if raw is not None else float("nan")))
            value = 100.0 * acc / fw
            components[comp] = round(value, 2)
            total += c_w * value
        total = round(min(100.0, max(0.0, total)), 2)
        losses.sort(key=lambda t: (-t[0], t[1]))
        reasons = [ReasonItem(name, 0.0 if math.isnan(raw) else round(raw, 4), -round(loss, 2))
                   for loss, name, raw in losses[:6]]
        return Health(total, card.band(total), components, reasons, signals, profile, card.green_min,
                      card.yellow_min, weights, shares)
