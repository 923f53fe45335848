"""Input events (wire format v1, see ``event-contract.md``).

Producers we do not control write these messages, so validation is strict:
no type coercion (``"5"`` is not a number, ``5`` is not a string, ``True`` is
not a count), no NaN/Infinity, and every value has a range. Unknown extra
fields are ignored, as the contract promises additive extensions.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._time import EventTime, to_epoch_ms

__all__ = [
    "ActivityEvent",
    "EventBase",
    "EventTime",
    "InputEvent",
    "SubscriptionEvent",
    "SurveyEvent",
    "TicketEvent",
    "TOPIC_MODELS",
]

Str128 = Annotated[str, Field(min_length=1, max_length=128)]

# Sanity caps. They are not in the contract's types but are implied by "a value
# outside its rule is rejected": one malformed or malicious message must not be
# able to poison a customer's windowed aggregates (a count of 10**12 or a
# century-long session would dominate every sum and average for the window).
MAX_COUNT = 1_000_000
MAX_DURATION_S = 31_536_000.0  # one year
MAX_MRR = 1e9
MAX_COMMENT_CHARS = 10_000

# The per-kind survey scales from the contract: (low, high, must be integral).
SURVEY_SCALES: dict[str, tuple[int, int, bool]] = {
    "nps": (0, 10, True),
    "csat": (1, 5, False),
    "ces": (1, 7, False),
}


class EventBase(BaseModel):
    """Fields common to every input event.

    Parameters
    ----------
    event_id
        Globally unique id, 1..128 chars; a redelivery carries the same id.
    customer_id
        The account (also the Kafka key), 1..128 chars.
    ts
        Event time: ISO-8601 string with a UTC offset, or int epoch ms.
        Stored as an aware UTC ``datetime``; :attr:`ts_ms` gives epoch ms.

    Examples
    --------

    >>> e = EventBase.model_validate_json(
    ...     '{"event_id": "e1", "customer_id": "acme", "ts": "2026-01-05T10:00:00+02:00"}'
    ... )
    >>> e.ts.isoformat()
    '2026-01-05T08:00:00+00:00'
    >>> e.ts_ms
    1767600000000

    """

    # strict: producers are external, so silent coercion would hide their bugs.
    # EventTime parses its own input in a BeforeValidator, so strict mode only
    # sees the already-built aware datetime and accepts it.
    model_config = ConfigDict(
        extra="ignore", frozen=True, strict=True, allow_inf_nan=False
    )

    event_id: Str128
    customer_id: Str128
    ts: EventTime

    @cached_property
    def ts_ms(self) -> int:
        """Event time as integer epoch milliseconds (UTC); computed once."""
        return to_epoch_ms(self.ts)

    def model_copy(
        self, *, update: dict[str, Any] | None = None, deep: bool = False
    ) -> Self:
        """Copy the event; drops the cached :attr:`ts_ms` when fields change."""
        copied = super().model_copy(update=update, deep=deep)
        if update:
            # cached_property lives in __dict__ and would survive a ts update.
            copied.__dict__.pop("ts_ms", None)
        return copied


class ActivityEvent(EventBase):
    """Product telemetry (topic ``activity``, default ``cs.activity``).

    Parameters
    ----------
    action
        What happened (``login``, ``feature_used``, ...); free vocabulary.
    user_id
        The person inside the account, for distinct active users.
    feature
        Product feature / module, for adoption breadth.
    duration_s
        Session or action length in seconds, 0..31,536,000.
    count
        Pre-aggregated occurrences, integer 1..1,000,000 (default 1).

    Examples
    --------

    >>> e = ActivityEvent.model_validate_json(
    ...     '{"event_id": "a1", "customer_id": "acme", "ts": 1767600000000,'
    ...     ' "action": "login", "user_id": "u7", "source": "ignored"}'
    ... )
    >>> e.action, e.user_id, e.count, e.ts_ms
    ('login', 'u7', 1, 1767600000000)

    """

    action: Str128
    user_id: Str128 | None = None
    feature: Str128 | None = None
    duration_s: Annotated[float, Field(ge=0, le=MAX_DURATION_S)] | None = None
    count: Annotated[int, Field(ge=1, le=MAX_COUNT)] = 1


class TicketEvent(EventBase):
    """Support desk ticket change (topic ``tickets``, default ``cs.tickets``).

    Parameters
    ----------
    ticket_id
        The desk's ticket id, 1..128 chars.
    status
        ``opened``, ``updated``, ``resolved``, ``reopened`` or ``closed``.
    priority
        ``low``, ``normal`` (default), ``high`` or ``urgent``.
    sentiment
        The desk's own text sentiment in [-1, 1], optional.

    Examples
    --------

    >>> t = TicketEvent.model_validate_json(
    ...     '{"event_id": "t1", "customer_id": "acme", "ts": "2026-01-05T10:00:00Z",'
    ...     ' "ticket_id": "T-42", "status": "opened", "sentiment": -0.4}'
    ... )
    >>> t.status, t.priority, t.sentiment
    ('opened', 'normal', -0.4)

    """

    ticket_id: Str128
    status: Literal["opened", "updated", "resolved", "reopened", "closed"]
    priority: Literal["low", "normal", "high", "urgent"] = "normal"
    sentiment: Annotated[float, Field(ge=-1, le=1)] | None = None


class SurveyEvent(EventBase):
    """Survey response (topic ``surveys``, default ``cs.surveys``).

    Parameters
    ----------
    survey
        ``nps``, ``csat`` or ``ces``.
    score
        ``nps``: integer 0..10 (``9.0`` is fine, ``9.5`` is not);
        ``csat``: 1..5; ``ces``: 1..7.
    comment
        Free text, at most 10,000 chars.

    Examples
    --------

    >>> s = SurveyEvent.model_validate_json(
    ...     '{"event_id": "s1", "customer_id": "acme", "ts": "2026-01-05T10:00:00Z",'
    ...     ' "survey": "nps", "score": 9}'
    ... )
    >>> s.survey, s.score
    ('nps', 9.0)
    >>> SurveyEvent.model_validate_json(  # doctest: +ELLIPSIS
    ...     '{"event_id": "s2", "customer_id": "acme", "ts": "2026-01-05T10:00:00Z",'
    ...     ' "survey": "nps", "score": 11}'
    ... )
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for SurveyEvent
    score
      Value error, nps must be an integer 0..10, got 11 ...

    """

    survey: Literal["nps", "csat", "ces"]
    score: float
    comment: Annotated[str, Field(max_length=MAX_COMMENT_CHARS)] | None = None

    @model_validator(mode="after")
    def _check_score_scale(self) -> Self:
        # The valid range depends on another field, hence a model validator.
        # Raising a ValidationError with loc ("score",) (rather than a bare
        # ValueError, which would have an empty location) keeps the field name
        # in the error, so dead letters say which field broke which rule.
        low, high, integral = SURVEY_SCALES[self.survey]
        score = self.score
        if low <= score <= high and (not integral or score.is_integer()):
            return self
        kind = "an integer" if integral else "a number"
        shown = int(score) if score.is_integer() and abs(score) < 1e15 else score
        raise ValidationError.from_exception_data(
            type(self).__name__,
            [
                {
                    "type": "value_error",
                    "loc": ("score",),
                    "input": score,
                    "ctx": {
                        "error": f"{self.survey} must be {kind} {low}..{high}, got {shown}"
                    },
                }
            ],
        )


class SubscriptionEvent(EventBase):
    """Billing / lifecycle change (topic ``subscriptions``), the churn label source.

    Parameters
    ----------
    status
        ``started``, ``renewed``, ``upgraded``, ``downgraded``, ``cancelled``
        (= the customer churned) or ``reactivated``.
    mrr
        Monthly recurring revenue after this event, 0..1e9.
    plan
        Plan name, 1..128 chars, optional.

    Examples
    --------

    >>> s = SubscriptionEvent.model_validate_json(
    ...     '{"event_id": "b1", "customer_id": "acme", "ts": "2026-01-05T10:00:00Z",'
    ...     ' "status": "cancelled", "mrr": 0}'
    ... )
    >>> s.status, s.mrr, s.plan
    ('cancelled', 0.0, None)

    """

    status: Literal[
        "started", "renewed", "upgraded", "downgraded", "cancelled", "reactivated"
    ]
    mrr: Annotated[float, Field(ge=0, le=MAX_MRR)]
    plan: Str128 | None = None


#: Any input event.
InputEvent: TypeAlias = ActivityEvent | TicketEvent | SurveyEvent | SubscriptionEvent

#: Logical input topic name -> model (physical topic names are configurable).
TOPIC_MODELS: dict[str, type[EventBase]] = {
    "activity": ActivityEvent,
    "tickets": TicketEvent,
    "surveys": SurveyEvent,
    "subscriptions": SubscriptionEvent,
}
