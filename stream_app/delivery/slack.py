"""The Slack message of an alert: Block Kit blocks for an incoming webhook.

Blocks used (and only these, so the test's Block Kit schema covers them): ``header``,
``section`` (``text`` or ``fields``), ``context`` and ``actions`` with one link ``button``. Texts
respect Slack's limits (header 150, section 3000, field 2000, button 75 characters) and
user-supplied text is escaped for mrkdwn (``&``, ``<``, ``>``).

>>> msg = slack_message({"alert_id": "a1", "customer_id": "acme", "ts": "2026-01-05T08:00:00+00:00",
...     "kind": "churn_risk", "severity": "critical", "health_score": 21.5, "health_band": "red",
...     "churn_probability": 0.83, "reasons": [{"factor": "logins_7d", "value": 0, "impact": -30}],
...     "model_version": "v1"}, "https://cs.example.com/dashboard/")
>>> [b["type"] for b in msg["blocks"]]
['header', 'section', 'section', 'actions', 'context']
>>> msg["blocks"][3]["elements"][0]["url"]
'https://cs.example.com/dashboard/#/customer/acme'
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

KIND_TITLE = {"churn_risk": "Churn risk", "health_drop": "Health drop", "band_change": "Band change",
              "detractor": "Detractor", "escalation": "Escalation"}
SEVERITY_EMOJI = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
BAND_EMOJI = {"green": ":large_green_circle:", "yellow": ":large_yellow_circle:", "red": ":red_circle:"}


def mrkdwn_escape(text: str) -> str:
    """Escape the three characters mrkdwn gives a meaning to.

    >>> mrkdwn_escape("<b> & co")
    '&lt;b&gt; &amp; co'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def customer_link(dashboard_url: str, customer_id: str) -> str:
    """The dashboard's page of a customer (its hash route)."""
    base = dashboard_url if dashboard_url.endswith("/") else dashboard_url + "/"
    return f"{base}#/customer/{quote(customer_id, safe='')}"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def slack_message(alert: dict[str, Any], dashboard_url: str | None, max_reasons: int = 3,
                  max_changes: int = 3) -> dict[str, Any]:
    """The incoming-webhook payload (``text`` is the notification fallback)."""
    cid = str(alert.get("customer_id", "?"))
    kind, severity = str(alert.get("kind", "")), str(alert.get("severity", ""))
    band = str(alert.get("health_band", ""))
    p = alert.get("churn_probability")
    title = f"{KIND_TITLE.get(kind, kind)} · {cid}"
    fallback = f"{severity.upper()} {KIND_TITLE.get(kind, kind)} for {cid}: health {_num(alert.get('health_score'))} ({band})"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150), "emoji": True}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Customer*\n{_cut(mrkdwn_escape(cid), 1900)}"},
            {"type": "mrkdwn", "text": f"*Severity*\n{SEVERITY_EMOJI.get(severity, '')} {severity}"},
            {"type": "mrkdwn", "text": f"*Kind*\n{kind}"},
            {"type": "mrkdwn", "text": f"*Health*\n{BAND_EMOJI.get(band, '')} {_num(alert.get('health_score'))} ({band})"},
            {"type": "mrkdwn", "text": "*Churn probability*\n" + (f"{100 * p:.0f} %" if isinstance(p, (int, float)) else "–")},
        ]},
    ]
    reasons = list(alert.get("reasons") or [])[:max_reasons]
    if reasons:
        lines = [f"• {mrkdwn_escape(str(r.get('factor')))} = {_num(r.get('value'))} (impact {_num(r.get('impact'))})"
                 for r in reasons]
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut("*Top reasons*\n" + "\n".join(lines), 3000)}})
    since = alert.get("since_previous") or {}
    changes = list(since.get("changes") or [])[:max_changes]
    if changes:
        lines = [f"• {mrkdwn_escape(str(c.get('name')))}: {_num(c.get('before'))} → {_num(c.get('after'))} "
                 f"({_num(c.get('impact'))} pts)" for c in changes]
        head = f"*What changed* (health was {_num(since.get('health_score_before'))})"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _cut(head + "\n" + "\n".join(lines), 3000)}})
    if dashboard_url:
        blocks.append({"type": "actions", "elements": [{
            "type": "button", "text": {"type": "plain_text", "text": "Open customer", "emoji": False},
            "url": _cut(customer_link(dashboard_url, cid), 3000), "action_id": "open_customer"}]})
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(mrkdwn_escape(
        f"alert {alert.get('alert_id')} · {alert.get('ts')} · model {alert.get('model_version')}"), 2000)}]})
    return {"text": _cut(mrkdwn_escape(fallback), 3000), "blocks": blocks}
