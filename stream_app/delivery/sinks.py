"""What each sink sends for a message, and whether it should (routing, quiet period, CRM
triggers): the planning step, made in offset order before anything is sent.

* webhook: the alert's bytes as read (the contract JSON), ``Idempotency-Key: <alert_id>``, the
  signature header when the sink has a ``secret``;
* slack: :func:`~stream_app.delivery.slack.slack_message` as JSON;
* crm: :func:`~stream_app.delivery.crm.crm_record` as JSON, with the method configured;
  ``Idempotency-Key`` is the alert id (for a ``cs.scores`` snapshot: ``<customer>:score:<ts>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from stream_app.delivery.config import CrmSink, DeliveryConfig, SlackSink, WebhookSink
from stream_app.delivery.crm import CrmTriggers, crm_record
from stream_app.delivery.routing import Context, QuietPeriods, event_ms, route_miss
from stream_app.delivery.signing import IDEMPOTENCY_HEADER
from stream_app.delivery.slack import slack_message
from stream_app.delivery.transport import Outgoing

AnySink = WebhookSink | SlackSink | CrmSink
USER_AGENT = "churn-stream-delivery/1"
#: where a message was read: an alert (``cs.alerts``) or a health snapshot (``cs.scores``)
ALERTS, SCORES = "alerts", "scores"


@dataclass
class Plan:
    """One sink's part of one message: the request to send, or why nothing is sent."""

    sink: AnySink
    request: Outgoing | None
    skipped: str | None = None


def idempotency_key(msg: dict[str, Any], source: str) -> str:
    """The ``Idempotency-Key`` of a message: the same on every re-send.

    >>> idempotency_key({"alert_id": "a1"}, "alerts"), idempotency_key({"customer_id": "c", "ts": "t"}, "scores")
    ('a1', 'c:score:t')
    """
    if source == ALERTS:
        return str(msg.get("alert_id"))
    return f"{msg.get('customer_id')}:score:{msg.get('ts')}"


def build_request(sink: AnySink, msg: dict[str, Any], raw: bytes, source: str,
                  dashboard_url: str | None) -> Outgoing:
    """The HTTP request ``sink`` sends for ``msg`` (``raw``: the record's bytes)."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
    secret = None
    if isinstance(sink, SlackSink):
        body = orjson.dumps(slack_message(msg, dashboard_url, sink.max_reasons, sink.max_changes))
        return Outgoing("POST", sink.url.get_secret_value(), body, headers)
    headers.update(sink.headers)
    headers[IDEMPOTENCY_HEADER] = idempotency_key(msg, source)
    if sink.secret is not None:
        secret = sink.secret.get_secret_value().encode()
    if isinstance(sink, CrmSink):
        return Outgoing(sink.method, sink.url.get_secret_value(), orjson.dumps(crm_record(sink, msg)), headers, secret)
    return Outgoing("POST", sink.url.get_secret_value(), raw, headers, secret)


class Planner:
    """Decides, message by message in offset order, which sinks send what."""

    def __init__(self, config: DeliveryConfig, dashboard_url: str | None) -> None:
        self.config = config
        self.dashboard_url = dashboard_url
        self.quiet = QuietPeriods()
        self.crm = CrmTriggers()

    def needs_context(self) -> bool:
        return any(s.route.segments or s.route.lifecycle_stages for s in self.config.sinks)

    def plan(self, msg: dict[str, Any], raw: bytes, source: str, ctx: Context,
             only: AnySink | None = None) -> list[Plan]:
        out: list[Plan] = []
        for sink in [only] if only is not None else self.config.sinks:
            if source == SCORES and not (isinstance(sink, CrmSink) and sink.include_scores):
                continue
            reason = route_miss(sink.route, msg, ctx) if only is None else None
            if reason is None and isinstance(sink, CrmSink) and only is None:
                due = self.crm.due(sink, msg)
                reason = None if due else "no band change or threshold crossing"
            if reason is None and only is None:
                reason = self.quiet.hold(sink.name, str(msg.get("customer_id")), event_ms(msg),
                                         str(msg.get("severity")), sink.route.quiet_period_s)
            if reason is not None:
                out.append(Plan(sink, None, reason))
            else:
                out.append(Plan(sink, build_request(sink, msg, raw, source, self.dashboard_url)))
        return out
