"""Lifecycle stages from tenure, engagement and health, by ordered rules from config (pure).

A stage is the first rule whose every condition holds; no rule matching gives ``default``.
Conditions are ranges (``min`` inclusive, ``max`` exclusive) over tenure (days), health
(0..100), engagement (the scorecard's engagement component, 0..100) and churn probability,
and sets of subscription statuses and health bands. A condition on an unknown input (a
customer with no tenure yet) does not hold.

>>> cfg = LifecycleConfig()
>>> base = StageInputs(status="renewed", tenure_days=400, health=82, band="green", engagement=75, churn_probability=0.02)
>>> stage_of(base, cfg)
'loyal'
>>> stage_of(StageInputs(**{**base.__dict__, "tenure_days": 10}), cfg)
'onboarding'
>>> stage_of(StageInputs(**{**base.__dict__, "band": "red", "health": 30}), cfg)
'at_risk'
>>> stage_of(StageInputs(**{**base.__dict__, "status": "cancelled"}), cfg)
'churned'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Stage = Literal["onboarding", "adopting", "established", "loyal", "at_risk", "churned"]
STAGES: tuple[Stage, ...] = ("onboarding", "adopting", "established", "loyal", "at_risk", "churned")
SUBSCRIPTION_STATUSES = ("started", "renewed", "upgraded", "downgraded", "cancelled", "reactivated")


class Range(BaseModel):
    """``min <= value < max``; either bound may be left out."""

    model_config = ConfigDict(extra="forbid")

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"min ({self.min:g}) must be below max ({self.max:g})")
        return self

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value < self.max)


class StageRule(BaseModel):
    """One rule: the stage it assigns and the conditions (all must hold)."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    status: list[Literal["started", "renewed", "upgraded", "downgraded", "cancelled", "reactivated"]] | None = Field(
        None, min_length=1, description="subscription status is one of these"
    )
    band: list[Literal["green", "yellow", "red"]] | None = Field(None, min_length=1)
    tenure_days: Range | None = None
    health: Range | None = None
    engagement: Range | None = None
    churn_probability: Range | None = None

    def matches(self, x: StageInputs) -> bool:
        if self.status is not None and x.status not in self.status:
            return False
        if self.band is not None and x.band not in self.band:
            return False
        for name in ("tenure_days", "health", "engagement", "churn_probability"):
            cond: Range | None = getattr(self, name)
            if cond is not None and not cond.holds(getattr(x, name)):
                return False
        return True


def _default_rules() -> list[StageRule]:
    r = StageRule
    return [
        r(stage="churned", status=["cancelled"]),
        r(stage="at_risk", band=["red"]),
        r(stage="at_risk", churn_probability=Range(min=0.25)),
        r(stage="onboarding", tenure_days=Range(max=30)),
        r(stage="adopting", tenure_days=Range(max=90)),
        r(stage="loyal", tenure_days=Range(min=365), health=Range(min=70), engagement=Range(min=60)),
    ]


class LifecycleConfig(BaseModel):
    """Ordered stage rules (first match wins) and the stage when none matches.

    >>> from pydantic import ValidationError
    >>> try:
    ...     LifecycleConfig(rules=[{"stage": "adopting", "tenure_days": {"min": 90, "max": 30}}])
    ... except ValidationError as e:
    ...     print(e.errors()[0]["loc"], e.errors()[0]["msg"])
    ('rules', 0, 'tenure_days') Value error, min (90) must be below max (30)
    """

    model_config = ConfigDict(extra="forbid")

    rules: list[StageRule] = Field(default_factory=_default_rules)
    default: Stage = "established"

    @model_validator(mode="after")
    def _no_dead_rules(self) -> LifecycleConfig:
        for i, rule in enumerate(self.rules):
            conds = rule.model_dump(exclude={"stage"}, exclude_none=True)
            if not conds and i < len(self.rules) - 1:
                raise ValueError(
                    f"rules[{i}] ({rule.stage}) has no condition, so the rules after it can never match; "
                    "put it last or use 'default'"
                )
        return self


@dataclass(frozen=True)
class StageInputs:
    """What the stage rules read about one customer."""

    status: str | None
    tenure_days: float | None
    health: float | None
    band: str | None
    engagement: float | None
    churn_probability: float | None


def stage_of(x: StageInputs, cfg: LifecycleConfig) -> Stage:
    """The first matching rule's stage, else the default."""
    for rule in cfg.rules:
        if rule.matches(x):
            return rule.stage
    return cfg.default
