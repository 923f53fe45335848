"""Output messages: alerts, score snapshots and dead letters.

These are produced by our own code, so validation is there to catch our bugs
before they reach subscribers: unknown fields are errors (typos) and numbers
must be finite (JSON has no NaN). Timestamps are emitted as ISO-8601 strings
with an explicit ``+00:00`` offset.
"""

from __future__ import annotations

import base64
import codecs
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._time import UtcDateTime
from .errors import FieldError, format_validation_error

__all__ = ["Alert", "Change", "DeadLetter", "HealthBand", "Reason", "ScoreChange", "ScoreSnapshot", "Undelivered"]

HealthBand = Literal["green", "yellow", "red"]
Score100 = Annotated[float, Field(ge=0, le=100)]
Probability = Annotated[float, Field(ge=0, le=1)]
NonEmpty = Annotated[str, Field(min_length=1)]
CustomerId = Annotated[str, Field(min_length=1, max_length=128)]

_OUTPUT_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


class Reason(BaseModel):
    """One explanation of a score: a factor, its value and its impact.

    >>> Reason(factor="tickets_open_7d", value=4, impact=-12.5).model_dump()
    {'factor': 'tickets_open_7d', 'value': 4.0, 'impact': -12.5}

    """

    model_config = _OUTPUT_CONFIG

    factor: NonEmpty
    value: float
    impact: float


class Change(BaseModel):
    """One thing that moved since the customer's previous score: a component or a raw factor.

    ``before``/``after``: a component's 0..100 sub-score, or a factor's raw value (None:
    unknown, or a component left out). ``impact``: how many points of health score the move
    is worth (negative: it pulled the score down).

    >>> Change(kind="factor", name="activity_vs_baseline", before=0.95, after=0.3, impact=-6.5).model_dump()
    {'kind': 'factor', 'name': 'activity_vs_baseline', 'before': 0.95, 'after': 0.3, 'impact': -6.5}

    """

    model_config = _OUTPUT_CONFIG

    kind: Literal["component", "factor"]
    name: NonEmpty
    before: float | None
    after: float | None
    impact: float


class ScoreChange(BaseModel):
    """What changed since the previous score (the last one published on ``cs.scores``).

    Optional on alerts and score snapshots (an additive extension of the contract).
    """

    model_config = _OUTPUT_CONFIG

    since: UtcDateTime
    health_score_before: Score100
    churn_probability_before: Probability | None = None
    changes: list[Change] = Field(default_factory=list, description="strongest first")


class Alert(BaseModel):
    """At-risk notification on ``cs.alerts``.

    Parameters
    ----------
    alert_id
        Unique id of the alert.
    customer_id
        The account.
    ts
        Event time of the event that raised the alert.
    kind
        ``churn_risk``, ``health_drop``, ``band_change``, ``detractor`` or ``escalation``.
    severity
        ``info``, ``warning`` or ``critical``.
    health_score
        0..100.
    health_band
        ``green``, ``yellow`` or ``red``.
    churn_probability
        0..1.
    reasons
        Explanations, strongest first (the producer orders them).
    model_version
        Version of the model that produced the score.

    Examples
    --------

    >>> a = Alert(
    ...     alert_id="acme:churn_risk:1767600000000", customer_id="acme",
    ...     ts=1767600000000, kind="churn_risk", severity="critical",
    ...     health_score=21.5, health_band="red", churn_probability=0.83,
    ...     reasons=[Reason(factor="logins_7d", value=0, impact=-30.0)],
    ...     model_version="v1",
    ... )
    >>> a.model_dump(mode="json")["ts"]
    '2026-01-05T08:00:00+00:00'

    """

    model_config = _OUTPUT_CONFIG

    alert_id: NonEmpty
    customer_id: CustomerId
    ts: UtcDateTime
    kind: Literal["churn_risk", "health_drop", "band_change", "detractor", "escalation"]
    severity: Literal["info", "warning", "critical"]
    health_score: Score100
    health_band: HealthBand
    churn_probability: Probability
    reasons: list[Reason] = Field(default_factory=list)
    model_version: NonEmpty
    since_previous: ScoreChange | None = Field(None, description="optional: what changed since the previous score")


class ScoreSnapshot(BaseModel):
    """Health snapshot on ``cs.scores``.

    Parameters
    ----------
    customer_id
        The account.
    ts
        Event time of the snapshot.
    health_score, health_band, churn_probability, model_version
        As in :class:`Alert`.
    components
        Component name -> its 0..100 sub-score.
    lifecycle_stage
        Optional (additive extension): the customer's lifecycle stage at this snapshot; a
        stage change publishes a snapshot.

    Examples
    --------

    >>> s = ScoreSnapshot(
    ...     customer_id="acme", ts="2026-01-05T10:00:00+02:00", health_score=72,
    ...     health_band="yellow", churn_probability=0.12, model_version="v1",
    ...     components={"engagement": 80, "support": 55.5},
    ... )
    >>> s.model_dump_json()[:60]
    '{"customer_id":"acme","ts":"2026-01-05T08:00:00+00:00","heal'

    """

    model_config = _OUTPUT_CONFIG

    customer_id: CustomerId
    ts: UtcDateTime
    health_score: Score100
    health_band: HealthBand
    churn_probability: Probability
    model_version: NonEmpty
    components: dict[str, Score100] = Field(default_factory=dict)
    lifecycle_stage: Literal["onboarding", "adopting", "established", "loyal", "at_risk", "churned"] | None = None
    churn_probability_raw: Probability | None = Field(
        None, description="optional: the model's uncalibrated probability (diagnostics)")
    since_previous: ScoreChange | None = Field(
        None, description="optional: what changed since the previous score, when it moved materially")


def _dead_letter_id(topic: Any, partition: Any, offset: Any) -> str:
    return f"{topic}:{partition}:{offset}"


class DeadLetter(BaseModel):
    """A rejected input message on ``cs.deadletter``; nothing is dropped silently.

    Exactly one of ``payload_text`` (the bytes were valid UTF-8) and
    ``payload_base64`` is set. ``dead_letter_id`` is ``"topic:partition:offset"``
    so that re-processing the same record yields the same id (consumers dedupe);
    it is filled in when omitted.

    Parameters
    ----------
    dead_letter_id
        ``f"{topic}:{partition}:{offset}"``.
    topic, partition, offset
        Where the rejected record was read from.
    error
        One-line human text naming field and rule.
    errors
        Structured ``{"field", "rule", "message"}`` items.
    payload_text
        The original bytes, decoded, when they are valid UTF-8.
    payload_base64
        The original bytes, base64, when they are not.
    payload_size
        Size of the original message in bytes.
    payload_truncated
        True when only a prefix of the payload is kept (see :meth:`from_bytes`).
    received_at
        When the scorer rejected it (wall-clock time).

    Examples
    --------

    >>> from datetime import datetime, timezone
    >>> d = DeadLetter.from_bytes(
    ...     b'{"event_id": 1}', topic="cs.activity", partition=0, offset=41,
    ...     error="event_id: input should be a valid string (string_type)",
    ...     errors=[{"field": "event_id", "rule": "string_type",
    ...              "message": "input should be a valid string"}],
    ...     received_at=datetime(2026, 1, 5, tzinfo=timezone.utc),
    ... )
    >>> d.dead_letter_id, d.payload_text, d.payload_base64
    ('cs.activity:0:41', '{"event_id": 1}', None)

    """

    model_config = _OUTPUT_CONFIG

    dead_letter_id: NonEmpty
    topic: NonEmpty
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    error: NonEmpty
    errors: list[FieldError] = Field(default_factory=list)
    payload_text: str | None = None
    payload_base64: str | None = None
    payload_size: Annotated[int, Field(ge=0)] | None = None
    payload_truncated: bool = False
    received_at: UtcDateTime

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dead_letter_id") is None:
            data = {
                **data,
                "dead_letter_id": _dead_letter_id(
                    data.get("topic"), data.get("partition"), data.get("offset")
                ),
            }
        return data

    @model_validator(mode="after")
    def _check(self) -> Self:
        expected = _dead_letter_id(self.topic, self.partition, self.offset)
        if self.dead_letter_id != expected:
            raise ValueError(f"dead_letter_id must be {expected!r}")
        if (self.payload_text is None) == (self.payload_base64 is None):
            raise ValueError("exactly one of payload_text and payload_base64 must be set")
        return self

    @classmethod
    def from_bytes(
        cls,
        raw: bytes | bytearray | memoryview,
        *,
        topic: str,
        partition: int,
        offset: int,
        error: str,
        errors: list[FieldError] | None = None,
        received_at: datetime | None = None,
        max_payload_bytes: int | None = None,
    ) -> Self:
        """Build a dead letter from the original record bytes.

        ``payload_text`` is set when the bytes are valid UTF-8, otherwise
        ``payload_base64``. ``received_at`` defaults to now (UTC). With
        ``max_payload_bytes`` only that many bytes are kept (whole characters
        for text) and ``payload_truncated`` is set, so that a dead letter for an
        oversized message still fits in a Kafka record.

        >>> d = DeadLetter.from_bytes(
        ...     b"\\xff\\x00", topic="cs.surveys", partition=2, offset=7,
        ...     error="invalid JSON (json_invalid)",
        ... )
        >>> d.payload_text, d.payload_base64, d.payload_size
        (None, '/wA=', 2)

        """
        data = bytes(raw)
        size = len(data)
        truncated = max_payload_bytes is not None and size > max_payload_bytes
        kept = data[:max_payload_bytes] if truncated else data
        text: str | None
        try:
            # final=False: a multi-byte character cut by truncation is dropped
            # instead of making the whole (valid) text look like binary.
            text = codecs.getincrementaldecoder("utf-8")().decode(kept, final=not truncated)
        except UnicodeDecodeError:
            text = None
        return cls(
            dead_letter_id=_dead_letter_id(topic, partition, offset),
            topic=topic,
            partition=partition,
            offset=offset,
            error=error,
            errors=list(errors or []),
            payload_text=text,
            payload_base64=None if text is not None else base64.b64encode(kept).decode("ascii"),
            payload_size=size,
            payload_truncated=truncated,
            received_at=received_at if received_at is not None else datetime.now(timezone.utc),
        )

    @classmethod
    def from_validation_error(
        cls,
        raw: bytes | bytearray | memoryview,
        exc: ValidationError,
        *,
        topic: str,
        partition: int,
        offset: int,
        received_at: datetime | None = None,
        max_payload_bytes: int | None = None,
    ) -> Self:
        """Shortcut: :meth:`from_bytes` with ``error``/``errors`` from a ``ValidationError``.

        >>> from schemas import TicketEvent
        >>> raw = b'{"event_id": "t1", "customer_id": "acme", "ts": 1, "status": "lost"}'
        >>> try:
        ...     TicketEvent.model_validate_json(raw)
        ... except ValidationError as exc:
        ...     d = DeadLetter.from_validation_error(raw, exc, topic="cs.tickets",
        ...                                          partition=0, offset=3)
        >>> [e["field"] for e in d.errors]
        ['ticket_id', 'status']

        """
        error, errors = format_validation_error(exc)
        return cls.from_bytes(
            raw,
            topic=topic,
            partition=partition,
            offset=offset,
            error=error,
            errors=errors,
            received_at=received_at,
            max_payload_bytes=max_payload_bytes,
        )


class Undelivered(BaseModel):
    """An alert a delivery sink did not accept, on ``cs.alerts.undelivered`` (an additive extension
    of the contract, written by ``stream-app deliver``).

    Parked once the sink's retry budget is spent, or at once on an answer that retrying cannot
    change (a 4xx other than 408/429). ``undelivered_id`` is ``"<alert_id>:<sink>"``: re-parking
    after a restart yields the same id (consumers dedupe). The alert is kept as it was read.

    Examples
    --------

    >>> u = Undelivered(alert_id="acme:churn_risk:1", sink="ops-webhook", sink_type="webhook",
    ...                 attempts=8, last_status=503, last_error="HTTP 503",
    ...                 topic="cs.alerts", partition=0, offset=41, parked_at=1767600000000,
    ...                 alert={"alert_id": "acme:churn_risk:1"})
    >>> u.undelivered_id, u.parked_at.isoformat()
    ('acme:churn_risk:1:ops-webhook', '2026-01-05T08:00:00+00:00')

    """

    model_config = _OUTPUT_CONFIG

    undelivered_id: NonEmpty
    alert_id: NonEmpty
    customer_id: str | None = None
    sink: NonEmpty
    sink_type: Literal["webhook", "slack", "crm"] | None = Field(None, description="None: the record was no alert")
    attempts: Annotated[int, Field(ge=0)]
    last_status: int | None = Field(None, description="the last HTTP status (None: no answer, e.g. a timeout)")
    last_error: NonEmpty
    first_attempt_at: UtcDateTime | None = None
    parked_at: UtcDateTime
    topic: NonEmpty
    partition: Annotated[int, Field(ge=0)]
    offset: Annotated[int, Field(ge=0)]
    alert: dict[str, Any] | None = Field(None, description="the alert as read (None when it was not valid JSON)")
    payload_text: str | None = Field(None, description="the record as text when it was not a JSON object")

    @model_validator(mode="before")
    @classmethod
    def _default_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("undelivered_id") is None:
            data = {**data, "undelivered_id": f"{data.get('alert_id')}:{data.get('sink')}"}
        return data
