"""Turn validation failures into dead-letter friendly text and structure.

Every rejected message goes to the dead-letter topic with a one-line human
``error`` and a structured ``errors`` list of ``{"field", "rule", "message"}``.
Pydantic errors are converted here; checks done outside pydantic (message too
large, ``ts`` in the future) build the same shape with :func:`field_error`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from typing_extensions import TypedDict

__all__ = ["FieldError", "field_error", "format_errors", "format_validation_error"]

# Pydantic prefixes messages from custom validators; the rule id already says
# it was a value error, so the prefix is noise in a one-line summary.
_PREFIXES = ("Value error, ", "Assertion failed, ")


class FieldError(TypedDict):
    """One structured error: dotted ``field`` ("" = whole message), ``rule``, ``message``."""

    field: str
    rule: str
    message: str


def field_error(field: str, rule: str, message: str) -> FieldError:
    """Build a :class:`FieldError` for a check made outside pydantic.

    >>> field_error("", "too_large", "message is 70000 bytes, limit 65536")
    {'field': '', 'rule': 'too_large', 'message': 'message is 70000 bytes, limit 65536'}

    """
    return {"field": field, "rule": rule, "message": message}


def format_errors(errors: Iterable[FieldError]) -> str:
    """One-line human text: ``"field: message (rule); ..."``.

    >>> format_errors([field_error("ts", "ts_in_future", "more than 24 h ahead")])
    'ts: more than 24 h ahead (ts_in_future)'

    """
    parts = []
    for err in errors:
        prefix = f"{err['field']}: " if err["field"] else ""
        parts.append(f"{prefix}{err['message']} ({err['rule']})")
    return "; ".join(parts)


def _clean_message(err: dict[str, Any]) -> str:
    msg: str = err.get("msg", "")
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
            break
    # "Field required" -> "field required" reads better after "name: ", but
    # keep acronyms such as "NPS ..." or "JSON ..." intact.
    if msg[:1].isupper() and msg[1:2].islower():
        msg = msg[0].lower() + msg[1:]
    return msg


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def format_validation_error(exc: ValidationError) -> tuple[str, list[FieldError]]:
    """Convert a pydantic ``ValidationError`` to ``(human_text, structured_errors)``.

    The field is the dotted error location, the rule is pydantic's error
    ``type`` (``missing``, ``string_too_long``, ``json_invalid``, ...).

    Examples
    --------

    >>> from schemas import SurveyEvent
    >>> try:
    ...     SurveyEvent.model_validate_json(
    ...         '{"event_id": "s1", "ts": "2026-01-05T10:00:00Z", "survey": "nps", "score": 3}'
    ...     )
    ... except ValidationError as exc:
    ...     text, errors = format_validation_error(exc)
    >>> text
    'customer_id: field required (missing)'
    >>> errors
    [{'field': 'customer_id', 'rule': 'missing', 'message': 'field required'}]

    """
    errors: list[FieldError] = [
        field_error(_dotted(err["loc"]), err["type"], _clean_message(err))
        # The input is left out: it can be large and the payload is kept anyway.
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return format_errors(errors), errors
