"""Tests for the wire schemas (contract v1). Pure: no I/O."""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from schemas import (
    OUTPUT_MODELS,
    TOPIC_MODELS,
    ActivityEvent,
    Alert,
    DeadLetter,
    EventBase,
    Reason,
    ScoreSnapshot,
    SubscriptionEvent,
    SurveyEvent,
    TicketEvent,
    field_error,
    format_errors,
    format_validation_error,
    json_schemas,
)

UTC = timezone.utc
TS_ISO = "2026-01-05T10:00:00+02:00"
TS_MS = 1_767_600_000_000  # == TS_ISO
TS_DT = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

BASE: dict[str, Any] = {"event_id": "e-1", "customer_id": "acme", "ts": TS_ISO}
VALID: dict[type[EventBase], dict[str, Any]] = {
    ActivityEvent: {**BASE, "action": "login"},
    TicketEvent: {**BASE, "ticket_id": "T-1", "status": "opened"},
    SurveyEvent: {**BASE, "survey": "nps", "score": 9},
    SubscriptionEvent: {**BASE, "status": "started", "mrr": 99.0},
}
ALL_EVENTS = list(VALID)


def make(model: type[EventBase], **changes: Any) -> EventBase:
    """Validate VALID[model] with some fields changed (value ... = field removed)."""
    data = {**VALID[model], **changes}
    data = {k: v for k, v in data.items() if v is not ...}
    return model.model_validate(data)


def make_json(model: type[EventBase], **changes: Any) -> EventBase:
    """Same as make() but through the JSON path the stream uses."""
    data = {k: v for k, v in {**VALID[model], **changes}.items() if v is not ...}
    return model.model_validate_json(json.dumps(data))


def error_fields(exc: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [e["field"] for e in format_validation_error(exc.value)[1]]


def assert_rejected(model: type[EventBase], field: str, *, json_too: bool = True, **changes: Any) -> str:
    """Assert the change is rejected naming ``field``, via dict and JSON input."""
    with pytest.raises(ValidationError) as exc:
        make(model, **changes)
    assert error_fields(exc) == [field]
    text = format_validation_error(exc.value)[0]
    assert text.startswith(f"{field}: ")
    if json_too:
        with pytest.raises(ValidationError) as exc_json:
            make_json(model, **changes)
        assert error_fields(exc_json) == [field]
    return text


# --------------------------------------------------------------------------- ts


@pytest.mark.parametrize(
    "ts, expected",
    [
        (TS_ISO, TS_DT),
        ("2026-01-05T08:00:00Z", TS_DT),
        ("2026-01-05T08:00:00+00:00", TS_DT),
        ("2026-01-05T03:00:00-05:00", TS_DT),
        ("2026-01-05T08:00:00.250Z", TS_DT + timedelta(milliseconds=250)),
        (TS_MS, TS_DT),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
    ],
)
@pytest.mark.parametrize("model", ALL_EVENTS)
def test_ts_accepted_and_normalised_to_utc(model: type[EventBase], ts: Any, expected: datetime) -> None:
    for event in (make(model, ts=ts), make_json(model, ts=ts)):
        assert event.ts == expected
        assert event.ts.utcoffset() == timedelta(0)
        assert event.ts_ms == (expected - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_ts_ms_is_exact_for_int_input_and_cached() -> None:
    event = make(ActivityEvent, ts=TS_MS + 1)
    assert event.ts_ms == TS_MS + 1
    assert event.__dict__["ts_ms"] == TS_MS + 1  # cached after first access
    moved = event.model_copy(update={"ts": TS_DT + timedelta(seconds=1)})
    assert moved.ts_ms == TS_MS + 1000  # the cache does not survive a ts update


def test_ts_accepts_aware_datetime_from_python_code() -> None:
    assert make(ActivityEvent, ts=TS_DT).ts_ms == TS_MS


@pytest.mark.parametrize(
    "ts, rule",
    [
        ("2026-01-05T10:00:00", "timezone_aware"),  # naive ISO
        ("2026-01-05", "timezone_aware"),
        (True, "datetime_type"),
        (False, "datetime_type"),
        (1767600000000.0, "datetime_type"),  # float
        ("1767600000000", "datetime_parsing"),  # numeric string
        ("yesterday", "datetime_parsing"),
        ("", "datetime_parsing"),
        (None, "datetime_type"),
        ([TS_MS], "datetime_type"),
        (10**30, "datetime_out_of_range"),  # huge int: no OverflowError crash
        (-(10**30), "datetime_out_of_range"),
        # beyond Python's int->str limit (pytest cannot even print it as an id)
        pytest.param(10**5000, "datetime_out_of_range", id="10**5000"),
        (253_402_300_800_000, "datetime_out_of_range"),  # year 10000
        ("0001-01-01T00:00:00+01:00", "datetime_out_of_range"),
    ],
)
def test_ts_rejected(ts: Any, rule: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(ActivityEvent, ts=ts)
    text, errors = format_validation_error(exc.value)
    assert [(e["field"], e["rule"]) for e in errors] == [("ts", rule)]
    assert text.startswith(
        "ts: must be an ISO-8601 string with a UTC offset or integer epoch milliseconds"
    )
    assert len(text) < 300  # never echoes a huge input


def test_ts_rejected_in_json_too() -> None:
    for raw in (
        b'{"event_id": "e", "customer_id": "c", "action": "x", "ts": 1767600000000.0}',
        b'{"event_id": "e", "customer_id": "c", "action": "x", "ts": true}',
        b'{"event_id": "e", "customer_id": "c", "action": "x", "ts": "2026-01-05T10:00:00"}',
        b'{"event_id": "e", "customer_id": "c", "action": "x", "ts": 1' + b"0" * 40 + b"}",
    ):
        with pytest.raises(ValidationError) as exc:
            ActivityEvent.model_validate_json(raw)
        assert error_fields(exc) == ["ts"]


# ------------------------------------------------------------- common fields


@pytest.mark.parametrize("model", ALL_EVENTS)
@pytest.mark.parametrize("field", ["event_id", "customer_id"])
@pytest.mark.parametrize("length, ok", [(0, False), (1, True), (128, True), (129, False)])
def test_id_lengths(model: type[EventBase], field: str, length: int, ok: bool) -> None:
    if ok:
        assert getattr(make(model, **{field: "x" * length}), field) == "x" * length
    else:
        text = assert_rejected(model, field, **{field: "x" * length})
        assert "too_short" in text or "too_long" in text


@pytest.mark.parametrize("model", ALL_EVENTS)
@pytest.mark.parametrize("field", ["event_id", "customer_id", "ts"])
def test_required_common_fields(model: type[EventBase], field: str) -> None:
    text = assert_rejected(model, field, **{field: ...})
    assert text == f"{field}: field required (missing)"


@pytest.mark.parametrize("model", ALL_EVENTS)
def test_extra_fields_ignored(model: type[EventBase]) -> None:
    event = make_json(model, extra_field={"nested": [1, 2]}, source="crm", event_version=3)
    assert not hasattr(event, "extra_field")
    assert "source" not in event.model_dump()
    assert event.model_extra is None


@pytest.mark.parametrize("model", ALL_EVENTS)
@pytest.mark.parametrize("field", ["event_id", "customer_id"])
@pytest.mark.parametrize("value", [42, 4.2, True, None])
def test_number_for_string_field_rejected(model: type[EventBase], field: str, value: Any) -> None:
    assert_rejected(model, field, **{field: value})


@pytest.mark.parametrize("model", ALL_EVENTS)
def test_events_are_frozen_and_hashable(model: type[EventBase]) -> None:
    event = make(model)
    with pytest.raises(ValidationError):
        event.customer_id = "other"  # type: ignore[misc]
    assert hash(event) == hash(make(model))
    assert event == make_json(model)


# ------------------------------------------------------------------ activity


def test_activity_defaults() -> None:
    event = make(ActivityEvent)
    assert (event.count, event.user_id, event.feature, event.duration_s) == (1, None, None, None)


@pytest.mark.parametrize(
    "changes",
    [
        {"count": 1},
        {"count": 1_000_000},
        {"duration_s": 0},
        {"duration_s": 12.5},
        {"duration_s": 31_536_000},
        {"user_id": "u" * 128, "feature": "f"},
        {"user_id": None, "feature": None, "duration_s": None},
    ],
)
def test_activity_accepts(changes: dict[str, Any]) -> None:
    event = make_json(ActivityEvent, **changes)
    for key, value in changes.items():
        assert getattr(event, key) == value


@pytest.mark.parametrize(
    "field, value",
    [
        ("action", ""),
        ("action", "a" * 129),
        ("action", 7),
        ("action", ...),
        ("user_id", ""),
        ("user_id", "u" * 129),
        ("user_id", 123),
        ("feature", ""),
        ("feature", "f" * 129),
        ("count", 0),
        ("count", -1),
        ("count", 1_000_001),
        ("count", 2.0),  # strict int
        ("count", 2.5),
        ("count", True),
        ("count", "2"),
        ("count", None),
        ("duration_s", -0.001),
        ("duration_s", 31_536_000.5),
        ("duration_s", "12"),  # numeric string
        ("duration_s", True),
        ("duration_s", math.nan),
        ("duration_s", math.inf),
    ],
)
def test_activity_rejects(field: str, value: Any) -> None:
    # NaN/Inf cannot be written by json.dumps in strict JSON; checked via dict.
    json_too = not (isinstance(value, float) and not math.isfinite(value))
    assert_rejected(ActivityEvent, field, json_too=json_too, **{field: value})


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_inf_rejected_from_json_literals(literal: bytes) -> None:
    raw = b'{"event_id": "e", "customer_id": "c", "ts": 0, "action": "x", "duration_s": ' + literal + b"}"
    with pytest.raises(ValidationError) as exc:
        ActivityEvent.model_validate_json(raw)
    assert error_fields(exc) == ["duration_s"]


# ------------------------------------------------------------------- tickets


def test_ticket_default_priority() -> None:
    assert make(TicketEvent).priority == "normal"
    assert make(TicketEvent).sentiment is None


@pytest.mark.parametrize("status", ["opened", "updated", "resolved", "reopened", "closed"])
@pytest.mark.parametrize("priority", ["low", "normal", "high", "urgent"])
def test_ticket_enums_accepted(status: str, priority: str) -> None:
    event = make_json(TicketEvent, status=status, priority=priority)
    assert (event.status, event.priority) == (status, priority)


@pytest.mark.parametrize("sentiment", [-1, -1.0, -0.25, 0, 1, 1.0])
def test_ticket_sentiment_accepted(sentiment: float) -> None:
    assert make_json(TicketEvent, sentiment=sentiment).sentiment == sentiment


@pytest.mark.parametrize(
    "field, value",
    [
        ("status", "open"),
        ("status", "OPENED"),
        ("status", ...),
        ("status", 1),
        ("priority", "critical"),
        ("priority", None),
        ("ticket_id", ""),
        ("ticket_id", "t" * 129),
        ("ticket_id", 42),
        ("ticket_id", ...),
        ("sentiment", -1.0001),
        ("sentiment", 1.0001),
        ("sentiment", "0.5"),
        ("sentiment", False),
        ("sentiment", math.nan),
    ],
)
def test_ticket_rejects(field: str, value: Any) -> None:
    json_too = not (isinstance(value, float) and math.isnan(value))
    assert_rejected(TicketEvent, field, json_too=json_too, **{field: value})


# ------------------------------------------------------------------- surveys


@pytest.mark.parametrize(
    "survey, score",
    [
        ("nps", 0),
        ("nps", 10),
        ("nps", 9.0),
        ("nps", 6),
        ("csat", 1),
        ("csat", 5),
        ("csat", 4.5),
        ("ces", 1),
        ("ces", 7),
        ("ces", 3.5),
    ],
)
def test_survey_score_accepted(survey: str, score: float) -> None:
    event = make_json(SurveyEvent, survey=survey, score=score)
    assert event.score == score and isinstance(event.score, float)


@pytest.mark.parametrize(
    "survey, score, message",
    [
        ("nps", 11, "nps must be an integer 0..10, got 11"),
        ("nps", -1, "nps must be an integer 0..10, got -1"),
        ("nps", 9.5, "nps must be an integer 0..10, got 9.5"),
        ("nps", 10.000001, "nps must be an integer 0..10, got 10.000001"),
        ("csat", 0, "csat must be a number 1..5, got 0"),
        ("csat", 5.5, "csat must be a number 1..5, got 5.5"),
        ("ces", 0.99, "ces must be a number 1..7, got 0.99"),
        ("ces", 8, "ces must be a number 1..7, got 8"),
    ],
)
def test_survey_score_out_of_scale(survey: str, score: float, message: str) -> None:
    text = assert_rejected(SurveyEvent, "score", survey=survey, score=score)
    assert text == f"score: {message} (value_error)"


@pytest.mark.parametrize(
    "field, value",
    [
        ("survey", "sus"),
        ("survey", ...),
        ("score", "9"),
        ("score", True),
        ("score", None),
        ("score", ...),
        ("score", math.inf),
        ("comment", "c" * 10_001),
        ("comment", 5),
    ],
)
def test_survey_rejects(field: str, value: Any) -> None:
    json_too = not (isinstance(value, float) and math.isinf(value))
    assert_rejected(SurveyEvent, field, json_too=json_too, **{field: value})


@pytest.mark.parametrize("comment", [None, "", "great", "c" * 10_000])
def test_survey_comment_accepted(comment: str | None) -> None:
    assert make_json(SurveyEvent, comment=comment).comment == comment


# ------------------------------------------------------------- subscriptions


@pytest.mark.parametrize(
    "status", ["started", "renewed", "upgraded", "downgraded", "cancelled", "reactivated"]
)
def test_subscription_status_accepted(status: str) -> None:
    assert make_json(SubscriptionEvent, status=status).status == status


@pytest.mark.parametrize("mrr", [0, 0.0, 49.99, 1e9])
def test_subscription_mrr_accepted(mrr: float) -> None:
    event = make_json(SubscriptionEvent, mrr=mrr, plan="pro")
    assert event.mrr == mrr and event.plan == "pro"


@pytest.mark.parametrize(
    "field, value",
    [
        ("status", "churned"),
        ("status", ...),
        ("mrr", -0.01),
        ("mrr", 1e9 + 1),
        ("mrr", "99"),
        ("mrr", True),
        ("mrr", ...),
        ("mrr", math.inf),
        ("plan", ""),
        ("plan", "p" * 129),
        ("plan", 3),
    ],
)
def test_subscription_rejects(field: str, value: Any) -> None:
    json_too = not (isinstance(value, float) and math.isinf(value))
    assert_rejected(SubscriptionEvent, field, json_too=json_too, **{field: value})


# -------------------------------------------------------------- topic models


def test_topic_models() -> None:
    assert TOPIC_MODELS == {
        "activity": ActivityEvent,
        "tickets": TicketEvent,
        "surveys": SurveyEvent,
        "subscriptions": SubscriptionEvent,
    }
    for model in TOPIC_MODELS.values():
        assert issubclass(model, EventBase)


# ---------------------------------------------------- format_validation_error


def test_format_validation_error_several_fields() -> None:
    raw = json.dumps({"event_id": "e", "ts": TS_MS, "survey": "nps", "score": 11, "comment": "x" * 10_001})
    with pytest.raises(ValidationError) as exc:
        SurveyEvent.model_validate_json(raw)
    text, errors = format_validation_error(exc.value)
    assert [(e["field"], e["rule"]) for e in errors] == [
        ("customer_id", "missing"),
        ("comment", "string_too_long"),
    ]
    assert text.startswith("customer_id: field required (missing); comment: ")
    assert text.endswith("(string_too_long)")
    assert all(set(e) == {"field", "rule", "message"} for e in errors)
    assert "x" * 50 not in text  # inputs are not echoed


def test_format_validation_error_model_rule_names_field() -> None:
    with pytest.raises(ValidationError) as exc:
        make(SurveyEvent, survey="nps", score=11)
    text, errors = format_validation_error(exc.value)
    assert text == "score: nps must be an integer 0..10, got 11 (value_error)"
    assert errors == [
        {"field": "score", "rule": "value_error", "message": "nps must be an integer 0..10, got 11"}
    ]


@pytest.mark.parametrize(
    "raw, rule",
    [
        (b"{not json", "json_invalid"),
        (b'{"event_id": "\xff"}', "json_invalid"),  # invalid UTF-8
        (b"[1, 2]", "model_type"),
        (b"", "json_invalid"),
    ],
)
def test_format_validation_error_whole_message(raw: bytes, rule: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ActivityEvent.model_validate_json(raw)
    text, errors = format_validation_error(exc.value)
    assert [(e["field"], e["rule"]) for e in errors] == [("", rule)]
    assert text.endswith(f"({rule})") and not text.startswith(":")


def test_format_validation_error_dotted_paths() -> None:
    with pytest.raises(ValidationError) as exc:
        Alert.model_validate({**_alert_data(), "reasons": [{"factor": "x", "value": 1, "impact": "big"}]})
    assert error_fields(exc) == ["reasons.0.impact"]


def test_field_error_and_format_errors() -> None:
    errors = [
        field_error("", "too_large", "message is 70000 bytes, limit 65536"),
        field_error("ts", "ts_in_future", "more than 24 h after the newest event time"),
    ]
    assert format_errors(errors) == (
        "message is 70000 bytes, limit 65536 (too_large); "
        "ts: more than 24 h after the newest event time (ts_in_future)"
    )


# ------------------------------------------------------------------- outputs


def _alert_data(**changes: Any) -> dict[str, Any]:
    return {
        "alert_id": "a-1",
        "customer_id": "acme",
        "ts": TS_ISO,
        "kind": "churn_risk",
        "severity": "critical",
        "health_score": 21.5,
        "health_band": "red",
        "churn_probability": 0.83,
        "reasons": [{"factor": "logins_7d", "value": 0, "impact": -30.0}],
        "model_version": "v1",
        **changes,
    }


def _score_data(**changes: Any) -> dict[str, Any]:
    return {
        "customer_id": "acme",
        "ts": TS_MS,
        "health_score": 72,
        "health_band": "yellow",
        "churn_probability": 0.12,
        "model_version": "v1",
        "components": {"engagement": 80, "support": 0, "sentiment": 100},
        **changes,
    }


def test_alert_roundtrip_and_iso_ts() -> None:
    alert = Alert.model_validate(_alert_data())
    assert alert.ts == TS_DT and alert.reasons == [Reason(factor="logins_7d", value=0, impact=-30)]
    wire = json.loads(alert.model_dump_json())
    assert wire["ts"] == "2026-01-05T08:00:00+00:00"
    assert datetime.fromisoformat(wire["ts"]) == TS_DT
    assert Alert.model_validate_json(alert.model_dump_json()) == alert


@pytest.mark.parametrize("kind", ["churn_risk", "health_drop", "band_change", "detractor", "escalation"])
@pytest.mark.parametrize("severity", ["info", "warning", "critical"])
def test_alert_enums(kind: str, severity: str) -> None:
    assert Alert.model_validate(_alert_data(kind=kind, severity=severity)).kind == kind


@pytest.mark.parametrize(
    "field, value",
    [
        ("kind", "churn"),
        ("severity", "fatal"),
        ("health_score", -0.1),
        ("health_score", 100.1),
        ("health_score", math.nan),
        ("health_band", "orange"),
        ("churn_probability", 1.01),
        ("churn_probability", -0.01),
        ("ts", "2026-01-05T10:00:00"),
        ("alert_id", ""),
        ("unknown", 1),
    ],
)
def test_alert_rejects(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        Alert.model_validate(_alert_data(**{field: value}))
    assert error_fields(exc) == [field]


def test_score_snapshot() -> None:
    snap = ScoreSnapshot.model_validate(_score_data())
    wire = json.loads(snap.model_dump_json())
    assert wire["ts"] == "2026-01-05T08:00:00+00:00"
    assert wire["components"] == {"engagement": 80.0, "support": 0.0, "sentiment": 100.0}
    assert ScoreSnapshot.model_validate_json(snap.model_dump_json()) == snap


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"components": {"engagement": 100.5}}, "components.engagement"),
        ({"components": {"support": -1}}, "components.support"),
        ({"health_band": "blue"}, "health_band"),
        ({"churn_probability": 2}, "churn_probability"),
    ],
)
def test_score_snapshot_rejects(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreSnapshot.model_validate(_score_data(**changes))
    assert error_fields(exc) == [field]


# --------------------------------------------------------------- dead letter

RECEIVED = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _dead(raw: bytes, **kwargs: Any) -> DeadLetter:
    return DeadLetter.from_bytes(
        raw,
        topic="cs.activity",
        partition=3,
        offset=1042,
        error="customer_id: field required (missing)",
        errors=[field_error("customer_id", "missing", "field required")],
        received_at=RECEIVED,
        **kwargs,
    )


def test_dead_letter_from_utf8_bytes() -> None:
    raw = '{"event_id": "e1", "note": "café ☕"}'.encode()
    dead = _dead(raw)
    assert dead.dead_letter_id == "cs.activity:3:1042"
    assert (dead.topic, dead.partition, dead.offset) == ("cs.activity", 3, 1042)
    assert dead.payload_text == raw.decode("utf-8")
    assert dead.payload_base64 is None
    assert dead.payload_size == len(raw) and not dead.payload_truncated
    assert dead.errors == [{"field": "customer_id", "rule": "missing", "message": "field required"}]
    wire = json.loads(dead.model_dump_json())
    assert wire["received_at"] == "2026-01-05T09:00:00+00:00"
    assert DeadLetter.model_validate_json(dead.model_dump_json()) == dead


@pytest.mark.parametrize("raw", [b"\xff\xfe\x00garbage", b'{"a": "\xc3"}', bytes(range(256))])
def test_dead_letter_from_invalid_utf8_bytes(raw: bytes) -> None:
    dead = _dead(raw)
    assert dead.payload_text is None
    assert dead.payload_base64 is not None
    assert base64.b64decode(dead.payload_base64) == raw
    assert DeadLetter.model_validate_json(dead.model_dump_json()) == dead


def test_dead_letter_empty_payload_and_default_received_at() -> None:
    before = datetime.now(UTC)
    dead = DeadLetter.from_bytes(
        b"", topic="cs.tickets", partition=0, offset=0, error="invalid JSON (json_invalid)", errors=[]
    )
    assert dead.payload_text == "" and dead.payload_base64 is None
    assert before <= dead.received_at <= datetime.now(UTC)


def test_dead_letter_truncation_keeps_whole_characters() -> None:
    raw = ("é" * 10).encode()  # 20 bytes, 2 per char
    dead = _dead(raw, max_payload_bytes=5)
    assert dead.payload_text == "éé" and dead.payload_truncated and dead.payload_size == 20
    binary = _dead(b"\xff" * 10, max_payload_bytes=4)
    assert base64.b64decode(binary.payload_base64 or "") == b"\xff" * 4


def test_dead_letter_from_validation_error() -> None:
    raw = b'{"event_id": "e", "customer_id": "c", "ts": "2026-01-05T10:00:00", "survey": "nps", "score": 9}'
    with pytest.raises(ValidationError) as exc:
        SurveyEvent.model_validate_json(raw)
    dead = DeadLetter.from_validation_error(
        raw, exc.value, topic="cs.surveys", partition=1, offset=9, received_at=RECEIVED
    )
    assert dead.dead_letter_id == "cs.surveys:1:9"
    assert dead.error.startswith("ts: must be an ISO-8601 string with a UTC offset")
    assert dead.errors[0]["field"] == "ts"
    assert dead.payload_text == raw.decode()


def test_dead_letter_direct_construction_rules() -> None:
    common = {"topic": "cs.activity", "partition": 0, "offset": 5, "error": "x", "received_at": RECEIVED}
    assert DeadLetter(**common, payload_text="{}").dead_letter_id == "cs.activity:0:5"
    with pytest.raises(ValidationError, match="dead_letter_id must be"):
        DeadLetter(**common, payload_text="{}", dead_letter_id="other")
    with pytest.raises(ValidationError, match="exactly one of"):
        DeadLetter(**common)
    with pytest.raises(ValidationError, match="exactly one of"):
        DeadLetter(**common, payload_text="{}", payload_base64="e30=")


# -------------------------------------------------------------- json schemas


def test_json_schemas() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"activity", "tickets", "surveys", "subscriptions", "alert", "score", "deadletter", "undelivered"}
    for name, schema in schemas.items():
        assert isinstance(schema, dict) and isinstance(schema["properties"], dict), name
        json.dumps(schema)  # serialisable
    assert set(schemas["activity"]["properties"]) >= {"event_id", "customer_id", "ts", "action", "count"}
    assert {"type": "integer", "description": "epoch milliseconds"} in schemas["tickets"]["properties"]["ts"]["anyOf"]
    assert schemas["alert"]["properties"]["ts"]["type"] == "string"
    assert set(OUTPUT_MODELS) == {"alert", "score", "deadletter", "undelivered"}
    assert all(issubclass(m, BaseModel) for m in OUTPUT_MODELS.values())
