"""The delivery file's validation, routing decisions, the CRM record and the Slack message's
Block Kit shapes. Pure: no I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml
from support.block_kit import validate_message

from stream_app.delivery.config import DeliveryConfigError, load_config, parse_config
from stream_app.delivery.routing import Context
from stream_app.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign, verify
from stream_app.delivery.sinks import ALERTS, Planner
from stream_app.delivery.slack import slack_message
from stream_app.settings import Settings

ALERT: dict[str, Any] = {
    "alert_id": "acme:churn_risk:1", "customer_id": "acme", "ts": "2026-01-05T08:00:00+00:00",
    "kind": "churn_risk", "severity": "critical", "health_score": 21.5, "health_band": "red",
    "churn_probability": 0.83, "model_version": "v1",
    "reasons": [{"factor": "logins_7d", "value": 0, "impact": -30.0}, {"factor": "tickets_open", "value": 4, "impact": -8}],
    "since_previous": {"since": "2026-01-04T08:00:00+00:00", "health_score_before": 48.0, "churn_probability_before": 0.2,
                       "changes": [{"kind": "factor", "name": "logins_7d", "before": 12, "after": 0, "impact": -20}]},
}


def config(*sinks: dict[str, Any]) -> Any:
    return parse_config({"sinks": list(sinks)}, env={"HOOK_URL": "https://h.example/x", "HOOK_KEY": "s3cret-key"})


@pytest.mark.parametrize("sinks, expected", [
    ([{"name": "a", "type": "webhook"}], "sinks.0.webhook.url: field required (missing)"),
    ([{"name": "a", "type": "pager", "url": "https://x"}], "sinks.0: input tag 'pager' found using 'type'"),
    ([{"name": "a b", "type": "slack", "url": "https://x"}], "sinks.0.slack.name: string should match pattern"),
    ([{"name": "a", "type": "slack", "url": "https://x", "rate_per_s": 0}], "sinks.0.slack.rate_per_s: input should be greater than 0 (greater_than)"),
    ([{"name": "a", "type": "webhook", "url": "https://x", "route": {"severities": ["loud"]}}], "sinks.0.webhook.route.severities.0: input should be 'info', 'warning' or 'critical' (literal_error)"),
    ([{"name": "a", "type": "webhook", "url": "https://x", "retry": {"base_delay_s": 5, "max_delay_s": 1}}], "sinks.0.webhook.retry: max_delay_s must be >= base_delay_s (value_error)"),
    ([{"name": "a", "type": "crm", "url": "https://x", "fields": {"mrr": "MRR__c"}}], "sinks.0.crm.fields: unknown field(s) ['mrr']"),
    ([{"name": "a", "type": "webhook", "url": "https://x", "colour": "red"}], "sinks.0.webhook.colour: extra inputs are not permitted (extra_forbidden)"),
    ([{"name": "a", "type": "webhook", "url": "https://x"}, {"name": "a", "type": "slack", "url": "https://y"}], "sinks: sink name 'a' used twice"),
    ([{"name": "a", "type": "webhook", "url": "${NOPE}"}], "sinks.0.url: environment variable NOPE is not set (env_missing)"),
])
def test_errors_name_the_field_and_the_rule(sinks: list[dict[str, Any]], expected: str) -> None:
    with pytest.raises(DeliveryConfigError) as exc:
        config(*sinks)
    assert expected in str(exc.value)


def test_secrets_come_from_the_environment_and_never_show() -> None:
    cfg = config({"name": "ops", "type": "webhook", "url": "${HOOK_URL}", "secret": "${HOOK_KEY}"})
    sink = cfg.sinks[0]
    assert sink.url.get_secret_value() == "https://h.example/x"
    assert "s3cret-key" not in repr(cfg) and "h.example" not in repr(cfg) and "s3cret-key" not in str(cfg.model_dump())
    with pytest.raises(DeliveryConfigError) as exc:  # a bad value is not echoed either
        config({"name": "ops", "type": "webhook", "url": "ftp://s3cret-key@h"})
    assert "s3cret-key" not in str(exc.value)


def test_webhook_request_is_the_contract_json_signed_with_an_idempotency_key() -> None:
    cfg = config({"name": "ops", "type": "webhook", "url": "${HOOK_URL}", "secret": "${HOOK_KEY}"})
    raw = orjson.dumps(ALERT)
    [plan] = Planner(cfg, None).plan(ALERT, raw, ALERTS, Context())
    req = plan.request
    assert req is not None and req.body == raw and req.method == "POST"
    assert req.headers[IDEMPOTENCY_HEADER] == "acme:churn_risk:1"
    assert "s3cret" not in repr(req) and "h.example" not in repr(req)
    # signed at send time; the receiver's check:
    header = sign(b"s3cret-key", req.body)
    assert verify(b"s3cret-key", header, req.body) and not verify(b"s3cret-key", header, req.body + b" ")
    assert SIGNATURE_HEADER.lower().startswith("x-")


def test_routing_kinds_severities_bands_stages_and_quiet_period() -> None:
    cfg = config(
        {"name": "crit", "type": "webhook", "url": "https://x", "route": {"severities": ["critical"], "bands": ["red"]}},
        {"name": "drops", "type": "webhook", "url": "https://x", "route": {"kinds": ["health_drop"]}},
        {"name": "loyal", "type": "webhook", "url": "https://x", "route": {"lifecycle_stages": ["loyal"]}},
        {"name": "quiet", "type": "webhook", "url": "https://x", "route": {"quiet_period_s": 3600}},
    )
    planner = Planner(cfg, None)

    def sent(alert: dict[str, Any], ctx: Context = Context()) -> set[str]:
        return {p.sink.name for p in planner.plan(alert, orjson.dumps(alert), ALERTS, ctx) if p.request is not None}

    assert sent(ALERT, Context(lifecycle_stage="loyal")) == {"crit", "loyal", "quiet"}
    later = {**ALERT, "alert_id": "2", "ts": "2026-01-05T08:30:00+00:00"}
    assert sent(later) == {"crit"}  # quiet period held; no stage known: 'loyal' does not match
    warn = {**ALERT, "alert_id": "3", "ts": "2026-01-05T10:00:00+00:00", "severity": "warning", "kind": "health_drop"}
    assert sent(warn) == {"drops", "quiet"}  # an hour later the quiet period is over


def test_crm_syncs_on_band_change_and_threshold_crossing_with_mapped_fields() -> None:
    cfg = config({"name": "crm", "type": "crm", "url": "https://crm", "method": "PUT", "churn_thresholds": [0.5],
                  "fields": {"customer_id": "AccountId", "health_band": "Health__c"}})
    planner = Planner(cfg, None)

    def body(alert: dict[str, Any]) -> dict[str, Any] | None:
        [p] = planner.plan(alert, orjson.dumps(alert), ALERTS, Context())
        return None if p.request is None else orjson.loads(p.request.body)

    first = body(ALERT)  # 0.2 -> 0.83 crosses 0.5
    assert first == {"AccountId": "acme", "health_score": 21.5, "Health__c": "red", "churn_probability": 0.83,
                     "top_reason": "logins_7d", "as_of": "2026-01-05T08:00:00+00:00"}
    same = {**ALERT, "alert_id": "2", "churn_probability": 0.85, "since_previous": None}
    assert body(same) is None  # no band change, no crossing
    assert body({**same, "alert_id": "3", "health_band": "yellow"}) is not None  # band changed


def test_slack_message_matches_the_block_kit_shapes() -> None:
    msg = slack_message(ALERT, "https://cs.example.com/dashboard/")
    validate_message(msg)
    text = orjson.dumps(msg).decode()
    for expected in ("acme", "critical", "churn_risk", "21.5 (red)", "83 %", "logins_7d", "What changed",
                     "https://cs.example.com/dashboard/#/customer/acme"):
        assert expected in text
    hostile = {**ALERT, "customer_id": "<!channel> & " + "x" * 5000,
               "reasons": [{"factor": "f" * 4000, "value": 1, "impact": 1}] * 10}
    msg = slack_message(hostile, None, max_reasons=10)
    validate_message(msg)  # cut to Slack's limits, escaped, no button without DASHBOARD_URL
    mrkdwn = [msg["text"]] + [str(b) for b in msg["blocks"] if b["type"] != "header"]  # header: plain_text, not parsed
    assert not any("<!channel>" in t for t in mrkdwn)
    assert all(b["type"] != "actions" for b in msg["blocks"])
    with pytest.raises(jsonschema.ValidationError):  # the validator does reject other shapes
        validate_message({"blocks": [{"type": "header", "text": {"type": "mrkdwn", "text": "x"}}]})


def test_the_example_file_and_the_compose_service_are_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["deliver"]
    env = compose["environment"]
    known = {name.upper() for name in Settings.model_fields}
    secrets = {"OPS_WEBHOOK_URL", "OPS_WEBHOOK_SECRET", "SLACK_WEBHOOK_URL", "CRM_WEBHOOK_URL"}
    assert set(env) - secrets <= known and compose["command"] == ["deliver"]
    cfg = load_config(root / "docs" / "delivery.example.yaml", env={k: "https://h.example/x" for k in secrets})
    assert [s.type for s in cfg.sinks] == ["webhook", "slack", "crm"]
