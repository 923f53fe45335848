"""Raw Kafka record bytes -> a validated contract event, or the reasons it is rejected.

Pure functions: the ingestor decides what to do with a rejection (dead-letter it).

>>> ev = decode(b'{"event_id":"e1","customer_id":"c1","ts":0,"action":"login"}', "activity", 65536)
>>> type(ev).__name__, ev.count
('ActivityEvent', 1)
>>> decode(b'{"event_id":"e1"}', "activity", 65536)[0]["field"]
'customer_id'
>>> decode(b"x" * 70000, "activity", 65536)[0]["rule"]
'too_large'
"""

from __future__ import annotations

from pydantic import ValidationError

from schemas import TOPIC_MODELS, FieldError, InputEvent, field_error, format_validation_error


def decode(raw: bytes | None, logical_topic: str, max_bytes: int) -> InputEvent | list[FieldError]:
    """Validate one record's value against the contract model of its topic."""
    if raw is None:
        return [field_error("", "missing_value", "record has no value (tombstone)")]
    if len(raw) > max_bytes:
        return [field_error("", "too_large", f"message is {len(raw)} bytes, limit {max_bytes}")]
    model = TOPIC_MODELS[logical_topic]
    try:
        return model.model_validate_json(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        return format_validation_error(exc)[1]
    except (ValueError, TypeError, RecursionError, OverflowError) as exc:  # defensive: never crash on input
        return [field_error("", "undecodable", f"{type(exc).__name__}: {exc}"[:500])]


def check_not_future(event: InputEvent, reference_ms: int | None, tolerance_ms: int) -> FieldError | None:
    """Contract rule: ``ts`` at most ``tolerance`` ahead of the newest event time seen.

    >>> from schemas import ActivityEvent
    >>> e = ActivityEvent(event_id="e", customer_id="c", ts=200_000_000, action="x")
    >>> check_not_future(e, 0, 86_400_000)["rule"]
    'ts_in_future'
    >>> check_not_future(e, 150_000_000, 86_400_000) is None
    True
    """
    if reference_ms is None:
        return None
    if event.ts_ms > reference_ms + tolerance_ms:
        hours = (event.ts_ms - reference_ms) / 3_600_000
        return field_error(
            "ts",
            "ts_in_future",
            f"event time is {hours:.1f} h after the newest event time seen, limit {tolerance_ms / 3_600_000:g} h",
        )
    return None
