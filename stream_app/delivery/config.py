"""The delivery file (``DELIVERY_FILE``): sinks, their routing rules and retry budgets, as
pydantic models. An error names the field and the rule, never a secret's value.

String values may name environment variables as ``${NAME}`` (a webhook URL or an HMAC key
kept out of the file); an unset variable is an error naming the field. Webhook URLs and keys
are ``SecretStr``: masked in ``repr``, logs and errors.

>>> cfg = DeliveryConfig.model_validate({"sinks": [
...     {"name": "ops", "type": "webhook", "url": "https://h.example/x", "secret": "k",
...      "route": {"severities": ["critical"]}}]})
>>> s = cfg.sinks[0]
>>> s.url, s.retry.max_attempts, s.route.severities
(SecretStr('**********'), 8, ['critical'])
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from schemas.errors import format_validation_error

Kind = Literal["churn_risk", "health_drop", "band_change", "detractor", "escalation"]
Severity = Literal["info", "warning", "critical"]
Band = Literal["green", "yellow", "red"]
Stage = Literal["onboarding", "adopting", "established", "loyal", "at_risk", "churned"]
SinkName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
#: the CRM record's fields, in the order they are sent
CRM_FIELDS = ("customer_id", "health_score", "health_band", "churn_probability", "top_reason", "as_of")

_STRICT = ConfigDict(extra="forbid")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class DeliveryConfigError(ValueError):
    """The delivery file is invalid: the message names the field and the rule."""


class RetryPolicy(BaseModel):
    """How long a sink keeps trying one alert before it is parked on the undelivered topic.

    Attempt ``n`` (from 1) failing with a retryable answer waits a random time in
    ``[0, min(max_delay_s, base_delay_s * 2**(n-1))]`` (full jitter), or the receiver's
    ``Retry-After`` when it sends one; the alert is parked after ``max_attempts`` attempts or
    when the next wait would end after ``budget_s`` since the first attempt.
    """

    model_config = _STRICT

    max_attempts: int = Field(8, ge=1, le=100)
    base_delay_s: float = Field(0.5, gt=0, le=3600)
    max_delay_s: float = Field(60.0, gt=0, le=86400)
    budget_s: float = Field(900.0, gt=0, le=7 * 86400, description="total time from the first attempt")

    @model_validator(mode="after")
    def _ordered(self) -> RetryPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must be >= base_delay_s")
        return self


class Route(BaseModel):
    """Which alerts a sink receives: every listed criterion must match (an empty list: any).

    ``segments`` and ``lifecycle_stages`` need the customer's context (see ``routing``);
    ``quiet_period_s`` (event time) holds back a customer's further alerts to this sink for that
    long after one was sent, unless the severity rises.
    """

    model_config = _STRICT

    kinds: list[Kind] = Field(default_factory=list)
    severities: list[Severity] = Field(default_factory=list)
    bands: list[Band] = Field(default_factory=list)
    segments: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    lifecycle_stages: list[Stage] = Field(default_factory=list)
    min_churn_probability: float | None = Field(None, ge=0, le=1)
    quiet_period_s: float = Field(0.0, ge=0, le=90 * 86400)


class SinkBase(BaseModel):
    model_config = _STRICT

    name: SinkName
    url: SecretStr = Field(description="http(s) URL; a secret (Slack's URL is its credential)")
    timeout_s: float = Field(10.0, gt=0, le=300)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    route: Route = Field(default_factory=Route)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: SecretStr) -> SecretStr:
        if not re.match(r"^https?://[^\s/]+", v.get_secret_value()):
            raise ValueError("must be an http:// or https:// URL")
        return v


class WebhookSink(SinkBase):
    """JSON POST of the alert as in the contract, signed and with an ``Idempotency-Key``."""

    type: Literal["webhook"]
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 key of the signature header")
    headers: dict[str, str] = Field(default_factory=dict)


class SlackSink(SinkBase):
    """A Block Kit message per alert to an incoming webhook, at most ``rate_per_s`` a second."""

    type: Literal["slack"]
    rate_per_s: float = Field(1.0, gt=0, le=50, description="Slack allows about one message per second per webhook")
    max_reasons: int = Field(3, ge=0, le=10)
    max_changes: int = Field(3, ge=0, le=10)


class CrmSink(SinkBase):
    """A customer's health record, PUT/POST on a band change or a churn-probability crossing."""

    type: Literal["crm"]
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    secret: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict, description="our name (customer_id, health_score, ...) -> the CRM's field name")
    on_band_change: bool = True
    churn_thresholds: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.25])
    include_scores: bool = Field(False, description="also sync from cs.scores snapshots (not only alerts)")

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(CRM_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; known: {list(CRM_FIELDS)}")
        if len(set(v.values())) != len(v):
            raise ValueError("two fields map to the same CRM name")
        return v

    @field_validator("churn_thresholds")
    @classmethod
    def _sorted(cls, v: list[float]) -> list[float]:
        return sorted(set(v))

    def field_name(self, ours: str) -> str:
        return self.fields.get(ours, ours)


Sink = Annotated[WebhookSink | SlackSink | CrmSink, Field(discriminator="type")]


class DeliveryConfig(BaseModel):
    """The whole file: a list of sinks (names unique)."""

    model_config = _STRICT

    sinks: list[Sink] = Field(min_length=1)

    @field_validator("sinks")
    @classmethod
    def _unique_names(cls, v: list[Any]) -> list[Any]:
        seen: set[str] = set()
        for s in v:
            if s.name in seen:
                raise ValueError(f"sink name {s.name!r} used twice")
            seen.add(s.name)
        return v

    def sink(self, name: str) -> WebhookSink | SlackSink | CrmSink:
        for s in self.sinks:
            if s.name == name:
                return s
        raise KeyError(f"no sink named {name!r} (have: {', '.join(s.name for s in self.sinks)})")

    @property
    def reads_scores(self) -> bool:
        return any(isinstance(s, CrmSink) and s.include_scores for s in self.sinks)


def _expand(node: Any, where: str, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), env) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, f"{where}.{i}", env) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in env:
                raise DeliveryConfigError(f"{where}: environment variable {m.group(1)} is not set (env_missing)")
            return env[m.group(1)]
        return _ENV.sub(sub, node)
    return node


def parse_config(data: Any, env: dict[str, str] | None = None, source: str = "delivery file") -> DeliveryConfig:
    """Validate a parsed YAML document (``${NAME}`` taken from ``env``, default ``os.environ``).

    >>> parse_config({"sinks": [{"name": "s", "type": "slack", "url": "ftp://x"}]})
    Traceback (most recent call last):
    ...
    stream_app.delivery.config.DeliveryConfigError: delivery file: sinks.0.slack.url: must be an http:// or https:// URL (value_error)
    """
    data = _expand(data, "", dict(os.environ) if env is None else env)
    try:
        return DeliveryConfig.model_validate(data)
    except ValidationError as exc:
        text, _ = format_validation_error(exc)  # field and rule; the input (secrets) never shown
        raise DeliveryConfigError(f"{source}: {text}") from None


def load_config(path: str | Path, env: dict[str, str] | None = None) -> DeliveryConfig:
    """Read and validate ``DELIVERY_FILE``."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise DeliveryConfigError(f"{p}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise DeliveryConfigError(f"{p}: not valid YAML ({type(exc).__name__})") from None
    return parse_config(data, env, str(p))
