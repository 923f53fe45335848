"""Timestamp parsing shared by the input events and the output messages.

The wire contract allows ``ts`` as an ISO-8601 string *with* a UTC offset or as
integer epoch milliseconds. Both are normalised to an aware UTC ``datetime`` so
that downstream code never has to guess a timezone.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

__all__ = [
    "EPOCH",
    "TS_RULE",
    "EventTime",
    "UtcDateTime",
    "parse_event_time",
    "to_epoch_ms",
]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_MS = timedelta(milliseconds=1)

TS_RULE = "must be an ISO-8601 string with a UTC offset or integer epoch milliseconds"


def _short(value: str, limit: int = 40) -> str:
    # Error messages end up in logs and dead letters: never echo a huge input.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def parse_event_time(value: Any) -> datetime:
    """Parse a wire timestamp into an aware UTC ``datetime``.

    Accepts an ISO-8601 string with an offset (``Z`` or ``+hh:mm``), an ``int``
    of epoch milliseconds, or (from Python code only) an aware ``datetime``.
    Everything else raises a ``PydanticCustomError`` whose message starts with
    :data:`TS_RULE`.

    Examples
    --------

    >>> parse_event_time("2026-01-05T10:00:00+02:00")
    datetime.datetime(2026, 1, 5, 8, 0, tzinfo=datetime.timezone.utc)
    >>> parse_event_time(1767600000000)
    datetime.datetime(2026, 1, 5, 8, 0, tzinfo=datetime.timezone.utc)

    """
    # bool is a subclass of int: test the exact type so True is not "1 ms".
    if type(value) is int:
        try:
            return EPOCH + timedelta(milliseconds=value)
        except (OverflowError, ValueError):
            raise PydanticCustomError(
                "datetime_out_of_range",
                TS_RULE + ", got {got} (outside years 1..9999)",
                {"got": value if abs(value) < 10**30 else "a huge integer"},
            ) from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError(
                "datetime_parsing", TS_RULE + ", got {got}", {"got": _short(value)}
            ) from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise PydanticCustomError(
            "datetime_type", TS_RULE + ", got {got}", {"got": type(value).__name__}
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        # A naive time is ambiguous by up to +-14 h, which silently shifts
        # event-time windows; the contract requires an explicit offset.
        raise PydanticCustomError(
            "timezone_aware",
            TS_RULE + ", got {got} without an offset",
            {"got": _short(str(value))},
        )
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # e.g. "0001-01-01T00:00:00+01:00"
        raise PydanticCustomError(
            "datetime_out_of_range",
            TS_RULE + ", got {got} (outside years 1..9999)",
            {"got": _short(str(value))},
        ) from None


def to_epoch_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime, exact (no float rounding).

    >>> to_epoch_ms(parse_event_time("1970-01-01T00:00:01.5Z"))
    1500

    """
    return (dt - EPOCH) // _ONE_MS


def _to_iso(dt: datetime) -> str:
    # Always "+00:00" rather than pydantic's "Z": both are ISO-8601, but the
    # explicit offset is understood by every parser (incl. Python < 3.11).
    return dt.astimezone(timezone.utc).isoformat()


_iso_serializer = PlainSerializer(_to_iso, return_type=str, when_used="json")

#: Input timestamp: ISO-8601 with offset or int epoch ms -> aware UTC datetime.
EventTime = Annotated[
    datetime,
    BeforeValidator(parse_event_time),
    _iso_serializer,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "description": "epoch milliseconds"},
            ],
            "description": "ts " + TS_RULE,
        },
        mode="validation",
    ),
]

#: Output timestamp: same parsing, documented and emitted as an ISO-8601 string.
UtcDateTime = Annotated[
    datetime,
    BeforeValidator(parse_event_time),
    _iso_serializer,
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
