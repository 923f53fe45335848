"""Wire schemas of churn-stream (contract v1): input events and output messages.

Examples
--------

>>> from schemas import TOPIC_MODELS
>>> event = TOPIC_MODELS["activity"].model_validate_json(
...     b'{"event_id": "e1", "customer_id": "acme", "ts": "2026-01-05T08:00:00Z",'
...     b' "action": "login"}'
... )
>>> type(event).__name__, event.ts_ms
('ActivityEvent', 1767600000000)

"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ._time import TS_RULE, EventTime, UtcDateTime, parse_event_time, to_epoch_ms
from .errors import FieldError, field_error, format_errors, format_validation_error
from .events import (
    TOPIC_MODELS,
    ActivityEvent,
    EventBase,
    InputEvent,
    SubscriptionEvent,
    SurveyEvent,
    TicketEvent,
)
from .outputs import Alert, Change, DeadLetter, HealthBand, Reason, ScoreChange, ScoreSnapshot, Undelivered

__all__ = [
    "ActivityEvent",
    "Alert",
    "Change",
    "DeadLetter",
    "EventBase",
    "EventTime",
    "FieldError",
    "HealthBand",
    "InputEvent",
    "OUTPUT_MODELS",
    "Reason",
    "ScoreChange",
    "ScoreSnapshot",
    "SubscriptionEvent",
    "SurveyEvent",
    "TOPIC_MODELS",
    "TS_RULE",
    "TicketEvent",
    "Undelivered",
    "UtcDateTime",
    "field_error",
    "format_errors",
    "format_validation_error",
    "json_schemas",
    "parse_event_time",
    "to_epoch_ms",
]

#: Stable name -> output model.
OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "alert": Alert,
    "score": ScoreSnapshot,
    "deadletter": DeadLetter,
    "undelivered": Undelivered,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every wire model, keyed by a stable name.

    >>> sorted(json_schemas())
    ['activity', 'alert', 'deadletter', 'score', 'subscriptions', 'surveys', 'tickets', 'undelivered']
    >>> json_schemas()["surveys"]["properties"]["survey"]["enum"]
    ['nps', 'csat', 'ces']

    """
    models: dict[str, type[BaseModel]] = {**TOPIC_MODELS, **OUTPUT_MODELS}
    return {name: _summarise(model.model_json_schema()) for name, model in models.items()}


def _summarise(schema: dict[str, Any]) -> dict[str, Any]:
    # Pydantic copies whole class docstrings (doctests included) into
    # "description"; published schemas only need the summary paragraph.
    for node in (schema, *schema.get("$defs", {}).values()):
        if "description" in node:
            node["description"] = node["description"].split("\n\n", 1)[0].strip()
    return schema
