"""All configuration in one object, read from environment variables.

Every knob the worker, the CLI and the demo use lives here, so one ``Settings()``
describes a deployment. Secrets are ``SecretStr`` so they never reach logs or
``repr``.

>>> s = Settings(_env_file=None, topic_prefix="acme.", windows_days=[7, 28])
>>> s.topic("activity"), s.max_window_days
('acme.activity', 28)
"""

from __future__ import annotations

import ssl
from functools import cached_property
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Logical input topics; the real names are ``topic_prefix + name``.
INPUT_TOPICS: tuple[str, ...] = ("activity", "tickets", "surveys", "subscriptions")
#: Logical output topics.
OUTPUT_TOPICS: tuple[str, ...] = ("alerts", "scores", "deadletter")
#: Internal topic: resolved training examples, to the single learner (one partition).
EXAMPLES_TOPIC = "model-examples"
#: Alerts a delivery sink could not take once its retry budget was spent (``stream-app deliver``).
UNDELIVERED_TOPIC = "alerts.undelivered"

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    """Deployment configuration (environment variables, case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- Kafka -------------------------------------------------------------------------
    broker_url: str | None = Field(
        default=None,
        description="e.g. kafka://127.0.0.1:9092 (comma-separate several). Unset: the demo starts an embedded broker.",
    )
    broker_security_protocol: SecurityProtocol = "PLAINTEXT"
    broker_sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    broker_sasl_username: str | None = None
    broker_sasl_password: SecretStr | None = None
    broker_ssl_cafile: str | None = None
    broker_ssl_certfile: str | None = None
    broker_ssl_keyfile: str | None = None
    topic_prefix: str = "cs."
    topic_partitions: int = Field(
        default=12, ge=1, le=1024,
        description="Partitions of the topics this app creates: at most this many workers share the load. An "
        "existing deployment changes it with `stream-app partitions migrate` (docs/operations.md)",
    )
    topic_replication: int = Field(default=1, ge=1, le=16)
    app_id: str = Field(default="churn-stream", min_length=1, description="Faust app id = consumer group")
    # Faust's default (60 s) makes every start-up and rebalance wait that long on a
    # single-node broker; a few seconds is plenty when processing a batch is fast.
    rebalance_timeout_s: float = Field(default=20.0, gt=0)
    session_timeout_s: float = Field(default=30.0, gt=0)
    heartbeat_interval_s: float = Field(default=3.0, gt=0)
    commit_interval_s: float = Field(default=1.0, gt=0)
    # Faust hard-codes 1500 ms: an idle fetch held that long puts ~1-2 s on event -> output latency
    consumer_fetch_max_wait_ms: int = Field(
        default=10, ge=0, le=60_000, description="Longest time the broker may hold a fetch with no new records"
    )
    faust_fast_drain: bool = Field(
        default=True, description="Hand fetched records to the agents without Faust's four tasks per record"
    )

    # --- Redis -------------------------------------------------------------------------
    redis_url: str | None = Field(
        default=None,
        description="redis://[user:password@]host:port/db or rediss:// for TLS. Unset/unreachable: the demo embeds one.",
    )
    redis_cluster: bool = Field(
        default=False,
        description="REDIS_URL is a node of a Redis Cluster: the client discovers the others and routes each key "
        "to its slot's primary (docs/operations.md#redis-cluster)",
    )
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_ssl_ca_certs: str | None = None
    key_prefix: str = Field(default="cs:", min_length=1, description="Prefix of every Redis key this app writes")
    redis_retry_max_s: float = Field(default=5.0, gt=0, description="Cap of the back-off while Redis is down")

    # --- Ingestion and state -------------------------------------------------------------
    windows_days: list[int] = Field(default=[7, 30, 90], min_length=1)
    top_actions: int = Field(default=8, ge=1, le=32, description="Actions tracked by name; the rest pool as 'other'")
    dedupe_days: int = Field(
        default=7,
        ge=1,
        le=400,
        description="Event-time horizon of event_id de-duplication (redelivery is exact at any age, by offsets)",
    )
    max_message_bytes: int = Field(default=65536, ge=1024)
    future_tolerance_hours: float = Field(default=24.0, ge=0)
    retention_days: int = Field(default=180, ge=0, le=3650, description="A customer silent this long (event time) starts over when it returns; its keys expire after this long (0: never)")
    ticket_retention_days: int = Field(default=30, ge=1, description="Resolved tickets are remembered this long")
    max_open_tickets: int = Field(default=200, ge=1)
    max_tracked_users: int = Field(default=500, ge=1, description="Distinct users+features remembered per customer")
    priority_weights: dict[str, int] = Field(default={"low": 1, "normal": 2, "high": 4, "urgent": 8})
    batch_max: int = Field(default=500, ge=1, description="Events per Faust take() batch")
    batch_within_s: float = Field(default=0.02, gt=0, description="Longest wait to fill a Faust take() batch (a drain then fits a 100 ms p99)")

    # --- Scoring, model and alerts ------------------------------------------------------
    scorecard_file: str | None = Field(default=None, description="YAML with weights, bands and factor ranges")
    label_horizon_days: int = Field(default=30, ge=1, le=365, description="A cancellation within this many days labels a snapshot positive")
    snapshot_every_days: int = Field(default=7, ge=1, le=90, description="Label snapshots per customer: at most one per this many days")
    model_min_labels: int = Field(default=300, ge=1, description="Labels before the online model replaces the health prior")
    model_min_positives: int = Field(default=30, ge=1)
    model_learning_rate: float = Field(default=0.005, gt=0, le=1, description="SGD step of the online logistic regression (small: labels arrive weeks late and are noisy)")
    model_champion_window: int = Field(default=5000, ge=100, description="The champion rule compares models' exact ROC AUC over this many most recent resolved labels")
    model_champion_margin: float = Field(default=0.01, ge=0, le=0.5, description="A challenger serves once its window AUC beats the serving model's by this much (hysteresis)")
    # 30-day churn runs ~2 % across the base: 0.25 is >10x the base rate, worth a human's time
    risk_alert_threshold: float = Field(default=0.25, gt=0, lt=1, description="churn_risk alert when the probability reaches this")
    risk_alert_exit: float = Field(default=0.15, gt=0, lt=1, description="... and the episode ends below this (hysteresis)")
    score_publish_delta: float = Field(default=2.0, ge=0, description="cs.scores on a change of at least this many points")
    label_resolve_interval_s: float = Field(default=0.2, ge=0, description="How often the learner checks for days to complete (events past an event-time midnight wait for that day's checkpoint: short keeps the wait out of the p99)")
    state_cache_customers: int = Field(default=50_000, ge=1, description="Customers whose state a worker keeps in memory (least recently used beyond this are dropped and reloaded from Redis on their next event; ~60 KB each with their window sums)")
    score_tick_s: float = Field(default=0.0, ge=0, le=86400, description="0: score after every event; > 0: score each customer once per tick of event time (faster backfills; the tick is part of the result)")
    model_lag_days: int = Field(default=1, ge=1, le=30, description="Events of day d are scored with the model checkpoint of day d - this (deterministic replays)")
    # --- issue 8: calibration and change explanations -----------------------------------
    model_calibration: bool = Field(default=True, description="Serve Platt-calibrated churn probabilities (false: the raw ones)")
    change_explain_delta: float = Field(
        default=2.0, ge=0,
        description="cs.scores snapshots that moved the health score this many points since the previous one carry what changed")

    # --- Portfolio KPIs, lifecycle stages, segments -------------------------------------
    portfolio_enabled: bool = Field(default=True, description="Keep the portfolio KPIs live (per-period sums in Redis)")
    portfolio_file: str | None = Field(default=None, description="YAML: periods, gross margin, lifecycle rules, segments")

    # --- Web / ops ---------------------------------------------------------------------
    web_port: int = Field(default=6066, ge=0, le=65535)
    web_enabled: bool = False
    log_level: str = "info"
    web_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every HTTP endpoint requires (header or ?token=); unset: open. /health answers "
        "its status code to anyone, details only with the token",
    )
    stall_after_s: float = Field(
        default=60.0, gt=0, description="Watchdog: a partition with input waiting and no progress this long is stalled"
    )
    watchdog_grace_s: float = Field(
        default=30.0, ge=0, description="Watchdog: exit non-zero this long after a stall or an agent crash, unless it recovers"
    )
    watchdog_interval_s: float = Field(default=2.0, gt=0, description="Watchdog: seconds between checks")
    watchdog_exit: bool = Field(default=True, description="Watchdog: exit the process (for the supervisor to restart it)")
    watchdog_exit_code: int = Field(default=70, ge=1, le=255, description="Exit status of a watchdog exit (70: EX_SOFTWARE)")
    # Test-only fault injection (stream_app/testing/faults.py): never set in production.
    fault_freeze_marker: str | None = Field(
        default=None, description="TEST ONLY: a batch holding a record that contains this text blocks its agent forever"
    )
    fault_crash_marker: str | None = Field(
        default=None, description="TEST ONLY: a batch holding a record that contains this text crashes its agent"
    )

    # --- Dashboard (stream_app/web/dashboard.py) -----------------------------------------------
    dashboard_enabled: bool = Field(default=True, description="Serve the dashboard on the worker's web server")
    dashboard_refresh_s: float = Field(
        default=15.0, ge=1, description="Portfolio tiles and band index: a full pass at most this often (background)"
    )
    dashboard_alert_backlog: int = Field(default=200, ge=0, le=100_000, description="Alerts per partition read back on start")
    dashboard_score_backlog: int = Field(
        default=50_000, ge=0, description="cs.scores records per partition read back on start (churn-probability history)"
    )

    # --- Delivery (stream-app deliver, stream_app/delivery/) ---------------------------------
    delivery_file: str | None = Field(default=None, description="YAML with the delivery sinks (webhook, Slack, CRM) and their routing rules")
    delivery_group: str | None = Field(default=None, description="Consumer group of the delivery service (unset: APP_ID + '-delivery')")
    delivery_port: int = Field(default=6067, ge=0, le=65535, description="The delivery service's /metrics and /health (0: not served)")
    delivery_max_in_flight: int = Field(default=1000, ge=1, le=100_000, description="Alerts read but not yet delivered or parked, at most (back-pressure)")
    dashboard_url: str | None = Field(default=None, description="Public URL of the dashboard (e.g. https://cs.example.com/dashboard/): Slack messages link a customer's page")

    @field_validator("windows_days")
    @classmethod
    def _windows_positive_sorted(cls, v: list[int]) -> list[int]:
        if any(w < 1 or w > 366 for w in v):
            raise ValueError("windows_days: every window must be 1..366 days")
        return sorted(set(v))

    @field_validator("priority_weights")
    @classmethod
    def _weights_cover_priorities(cls, v: dict[str, int]) -> dict[str, int]:
        missing = {"low", "normal", "high", "urgent"} - set(v)
        if missing:
            raise ValueError(f"priority_weights: missing priorities {sorted(missing)}")
        if any(w < 0 for w in v.values()):
            raise ValueError("priority_weights: weights must be >= 0")
        return v

    @field_validator("web_token")
    @classmethod
    def _empty_token_is_unset(cls, v: SecretStr | None) -> SecretStr | None:
        return v if v is not None and v.get_secret_value() else None

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> "Settings":
        if self.broker_security_protocol.startswith("SASL") and not (
            self.broker_sasl_username and self.broker_sasl_password
        ):
            raise ValueError(
                "broker_sasl_username/broker_sasl_password: required when broker_security_protocol is SASL_*"
            )
        return self

    @property
    def sections(self) -> Sections:
        """The same settings by concern (Kafka, Redis, ingest, scoring, model, portfolio, ops,
        web): each component takes the section it needs."""
        return Sections.of(self)

    # --- derived -----------------------------------------------------------------------
    @property
    def max_window_days(self) -> int:
        return max(self.windows_days)

    def topic(self, logical: str) -> str:
        """Real topic name of a logical topic (``activity`` -> ``cs.activity``)."""
        return f"{self.topic_prefix}{logical}"

    @cached_property
    def input_topics(self) -> dict[str, str]:
        """Real topic name -> logical name, for the four input topics."""
        return {self.topic(t): t for t in INPUT_TOPICS}

    def bootstrap_servers(self) -> list[str]:
        """``host:port`` list for aiokafka / kafka-python, from ``broker_url``."""
        if not self.broker_url:
            raise ValueError("broker_url: not set (BROKER_URL)")
        out: list[str] = []
        for part in self.broker_url.replace(";", ",").split(","):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                out.append(part)
        return out

    def kafka_client_kwargs(self) -> dict[str, object]:
        """Security options for aiokafka clients (admin, producer, consumer)."""
        kw: dict[str, object] = {"security_protocol": self.broker_security_protocol}
        if self.broker_security_protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(cafile=self.broker_ssl_cafile)
            if self.broker_ssl_certfile:
                ctx.load_cert_chain(self.broker_ssl_certfile, self.broker_ssl_keyfile)
            kw["ssl_context"] = ctx
        if self.broker_security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.broker_sasl_mechanism
            kw["sasl_plain_username"] = self.broker_sasl_username
            kw["sasl_plain_password"] = (
                self.broker_sasl_password.get_secret_value() if self.broker_sasl_password else None
            )
        return kw

    def __repr_args__(self) -> Any:
        # repr() and str() are what ends up in logs and tracebacks: URL passwords masked too
        # (SecretStr fields mask themselves)
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name in ("broker_url", "redis_url") and value else value

    def redacted(self) -> dict[str, object]:
        """Settings as a dict safe to print: secrets and URL passwords masked."""
        d = self.model_dump()
        for k, v in list(d.items()):
            if isinstance(v, SecretStr) or (k.endswith("password") and v is not None):
                d[k] = "**********"
        for k in ("broker_url", "redis_url"):
            if d.get(k):
                d[k] = redact_url(str(d[k]))
        return d


# --- sections: typed, frozen views of the settings, one per concern --------------------------------
S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """A frozen view of some settings (same names, same values: the environment variables are
    the ``Settings`` fields')."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    @classmethod
    def of(cls: type[S], settings: Settings) -> S:
        return cls(**{name: getattr(settings, name) for name in cls.model_fields})


class KafkaSettings(Section):
    broker_url: str | None
    broker_security_protocol: SecurityProtocol
    broker_sasl_mechanism: SaslMechanism
    broker_sasl_username: str | None
    broker_sasl_password: SecretStr | None
    broker_ssl_cafile: str | None
    broker_ssl_certfile: str | None
    broker_ssl_keyfile: str | None
    topic_prefix: str
    topic_partitions: int
    topic_replication: int
    app_id: str
    rebalance_timeout_s: float
    session_timeout_s: float
    heartbeat_interval_s: float
    commit_interval_s: float
    consumer_fetch_max_wait_ms: int
    faust_fast_drain: bool
    batch_max: int
    batch_within_s: float

    def topic(self, logical: str) -> str:
        return f"{self.topic_prefix}{logical}"


class RedisSettings(Section):
    redis_url: str | None
    redis_cluster: bool
    redis_username: str | None
    redis_password: SecretStr | None
    redis_ssl_ca_certs: str | None
    key_prefix: str
    redis_retry_max_s: float


class IngestSettings(Section):
    """Ingestion and the per-customer state's bounds."""

    windows_days: list[int]
    top_actions: int
    dedupe_days: int
    max_message_bytes: int
    future_tolerance_hours: float
    retention_days: int
    ticket_retention_days: int
    max_open_tickets: int
    max_tracked_users: int
    priority_weights: dict[str, int]
    state_cache_customers: int


class ScoringSettings(Section):
    """Health scoring, alerts, score publishing, change explanations, label snapshots."""

    windows_days: list[int]
    scorecard_file: str | None
    risk_alert_threshold: float
    risk_alert_exit: float
    score_publish_delta: float
    change_explain_delta: float
    snapshot_every_days: int
    label_horizon_days: int
    score_tick_s: float


class ModelSettings(Section):
    """The online churn model, its calibration, champion rule and checkpoints."""

    model_min_labels: int
    model_min_positives: int
    model_learning_rate: float
    model_champion_window: int
    model_champion_margin: float
    model_calibration: bool
    model_lag_days: int
    label_horizon_days: int
    label_resolve_interval_s: float


class PortfolioSettings(Section):
    portfolio_enabled: bool
    portfolio_file: str | None
    risk_alert_threshold: float  # the at-risk line when the portfolio file sets none


class OpsSettings(Section):
    """Metrics, health and the watchdog; test-only fault injection."""

    stall_after_s: float
    watchdog_grace_s: float
    watchdog_interval_s: float
    watchdog_exit: bool
    watchdog_exit_code: int
    log_level: str
    fault_freeze_marker: str | None
    fault_crash_marker: str | None


class WebSettings(Section):
    web_port: int
    web_enabled: bool
    web_token: SecretStr | None
    dashboard_enabled: bool
    dashboard_refresh_s: float
    dashboard_alert_backlog: int
    dashboard_score_backlog: int


class DeliverySettings(Section):
    """The delivery service: its sinks file, consumer group, HTTP port, back-pressure."""

    delivery_file: str | None
    delivery_group: str | None
    delivery_port: int
    delivery_max_in_flight: int
    dashboard_url: str | None
    app_id: str
    web_token: SecretStr | None


class Sections(BaseModel):
    model_config = ConfigDict(frozen=True)

    kafka: KafkaSettings
    redis: RedisSettings
    ingest: IngestSettings
    scoring: ScoringSettings
    model: ModelSettings
    portfolio: PortfolioSettings
    ops: OpsSettings
    web: WebSettings
    delivery: DeliverySettings

    #: every ``Settings`` field belongs to at least one section (checked by the tests)
    KINDS: ClassVar[tuple[type[Section], ...]] = (KafkaSettings, RedisSettings, IngestSettings, ScoringSettings,
                                                 ModelSettings, PortfolioSettings, OpsSettings, WebSettings,
                                                 DeliverySettings)

    @classmethod
    def of(cls, settings: Settings) -> Sections:
        return cls(kafka=KafkaSettings.of(settings), redis=RedisSettings.of(settings),
                   ingest=IngestSettings.of(settings), scoring=ScoringSettings.of(settings),
                   model=ModelSettings.of(settings), portfolio=PortfolioSettings.of(settings),
                   ops=OpsSettings.of(settings), web=WebSettings.of(settings),
                   delivery=DeliverySettings.of(settings))


def all_topics(settings: Settings) -> dict[str, int]:
    """Every topic the deployment uses (real name -> partitions), to create them."""
    topics = {settings.topic(t): settings.topic_partitions for t in INPUT_TOPICS}
    topics.update({settings.topic(t): settings.topic_partitions for t in ("alerts", "scores")})
    topics[settings.topic("deadletter")] = 1
    topics[settings.topic(EXAMPLES_TOPIC)] = 1  # one partition: one learner, one model
    assert set(OUTPUT_TOPICS) <= {t[len(settings.topic_prefix) :] for t in topics}
    return topics


def redact_url(url: str) -> str:
    """Mask the password in ``scheme://user:password@host`` (each of a comma-separated list).

    >>> redact_url("redis://app:s3cret@db:6379/0")
    'redis://app:***@db:6379/0'
    >>> redact_url("kafka://u:p1@k1:9093,kafka://u:p2@k2:9093")
    'kafka://u:***@k1:9093,kafka://u:***@k2:9093'
    """
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


def describe_settings_error(exc: BaseException) -> str:
    """A configuration error as text that names each variable and rule but never echoes the
    input (pydantic's own message repeats the values given, secrets included).

    >>> try:
    ...     Settings(_env_file=None, broker_security_protocol="SASL_SSL", broker_sasl_password="hunter2")
    ... except ValidationError as exc:
    ...     text = describe_settings_error(exc)
    >>> "broker_sasl_username" in text, "hunter2" in text
    (True, False)
    """
    if not isinstance(exc, ValidationError):
        return f"{type(exc).__name__}: {exc}"
    lines = []
    for err in exc.errors(include_url=False, include_input=False, include_context=False):
        where = ".".join(str(part) for part in err["loc"]).upper()
        lines.append(f"{where + ': ' if where else ''}{err['msg']} ({err['type']})")
    return "; ".join(lines)
