"""Portfolio configuration: periods, KPI parameters, lifecycle rules, segmentation (YAML).

Loaded from ``PORTFOLIO_FILE`` (like the scorecard's ``SCORECARD_FILE``) and validated: an
error names the field and the rule, e.g.
``lifecycle.rules[2].tenure_days: min (90) must be below max (30)``.

```yaml
periods: [month, quarter]
gross_margin: 0.75
risk_threshold: 0.3          # churn probability counted in "MRR at risk"
repeat_min_days: 4           # active days per month for the repeat rate
lifecycle:
  default: established
  rules:
    - {stage: churned, status: [cancelled]}
    - {stage: at_risk, band: [red]}
    - {stage: onboarding, tenure_days: {max: 30}}
segments:
  k: 4
  alert_thresholds: {seg2: 0.35}
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stream_app.portfolio.lifecycle import LifecycleConfig
from stream_app.portfolio.periods import PeriodKind
from stream_app.portfolio.segments import SegmentConfig


class PortfolioConfigError(ValueError):
    """An invalid portfolio configuration; the message names each field and rule."""


class PortfolioConfig(BaseModel):
    """Everything the portfolio KPIs, stages and segments are configured by."""

    model_config = ConfigDict(extra="forbid")

    periods: list[PeriodKind] = Field(default=["month", "quarter"], description="month is always kept (cohorts)")
    gross_margin: float = Field(0.8, gt=0, le=1, description="for CLV")
    risk_threshold: float | None = Field(
        None, gt=0, lt=1, description="churn probability counted in MRR at risk (default: RISK_ALERT_THRESHOLD)"
    )
    repeat_min_days: int = Field(4, ge=1, le=31, description="active days per month that count as repeat use")
    keep_months: int = Field(6, ge=4, le=24, description="months of per-customer records kept (restatable)")
    lifecycle: LifecycleConfig = Field(default_factory=LifecycleConfig)
    segments: SegmentConfig = Field(default_factory=SegmentConfig)

    @field_validator("periods")
    @classmethod
    def _month_first(cls, v: list[PeriodKind]) -> list[PeriodKind]:
        if "month" not in v:
            raise ValueError("must include 'month' (quarters and cohorts are built from months)")
        return sorted(set(v), key=["month", "quarter"].index)  # type: ignore[arg-type]

    @classmethod
    def load(cls, data: dict[str, Any] | None) -> PortfolioConfig:
        """Validate a mapping; raise :class:`PortfolioConfigError` naming each bad field."""
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            raise PortfolioConfigError(format_config_errors(exc)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> PortfolioConfig:
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise PortfolioConfigError(f"{path}: the top level must be a mapping")
        return cls.load(data)

    @classmethod
    def for_file(cls, path: str | Path | None) -> PortfolioConfig:
        """The configuration of ``PORTFOLIO_FILE``, or the defaults when unset."""
        return cls.from_file(path) if path else cls()


def format_config_errors(exc: ValidationError) -> str:
    """One line per error: ``dotted.path[index]: message``.

    >>> try:
    ...     PortfolioConfig.load({"gross_margin": 2, "lifecycle": {"rules": [{"stage": "x"}]}})
    ... except PortfolioConfigError as e:
    ...     print(e)
    gross_margin: Input should be less than or equal to 1
    lifecycle.rules[0].stage: Input should be 'onboarding', 'adopting', 'established', 'loyal', 'at_risk' or 'churned'
    """
    lines = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path or 'config'}: {msg}")
    return "\n".join(lines)
