"""CRM sync: a customer's health record, sent when its band changes or its churn probability
crosses a threshold, with the field names the CRM expects.

>>> from stream_app.delivery.config import CrmSink
>>> sink = CrmSink(name="crm", type="crm", url="https://crm.example/x", churn_thresholds=[0.25, 0.5],
...                fields={"customer_id": "AccountId", "churn_probability": "Churn_Risk__c"})
>>> a = {"customer_id": "acme", "ts": "2026-01-05T08:00:00+00:00", "kind": "churn_risk", "health_score": 40.0,
...      "health_band": "yellow", "churn_probability": 0.3, "reasons": [{"factor": "logins_7d", "value": 0, "impact": -9}],
...      "since_previous": {"since": "2026-01-04T08:00:00+00:00", "health_score_before": 55, "churn_probability_before": 0.2}}
>>> t = CrmTriggers()
>>> t.due(sink, a)
'churn probability crossed 0.25'
>>> crm_record(sink, a)
{'AccountId': 'acme', 'health_score': 40.0, 'health_band': 'yellow', 'Churn_Risk__c': 0.3, 'top_reason': 'logins_7d', 'as_of': '2026-01-05T08:00:00+00:00'}
>>> t.due(sink, {**a, "churn_probability": 0.32, "since_previous": None})
"""

from __future__ import annotations

from typing import Any

from stream_app.delivery.config import CRM_FIELDS, CrmSink


def crm_record(sink: CrmSink, msg: dict[str, Any]) -> dict[str, Any]:
    """The record sent: ``customer_id, health_score, health_band, churn_probability, top_reason,
    as_of`` under the sink's field names."""
    reasons = msg.get("reasons") or []
    ours = {
        "customer_id": msg.get("customer_id"),
        "health_score": msg.get("health_score"),
        "health_band": msg.get("health_band"),
        "churn_probability": msg.get("churn_probability"),
        "top_reason": reasons[0].get("factor") if reasons else None,
        "as_of": msg.get("ts"),
    }
    return {sink.field_name(k): ours[k] for k in CRM_FIELDS}


def crossed(before: float | None, after: float | None, thresholds: list[float]) -> float | None:
    """The first threshold between ``before`` and ``after`` (None: none crossed, or unknown).

    >>> crossed(0.2, 0.3, [0.25]), crossed(0.3, 0.2, [0.25]), crossed(0.3, 0.4, [0.25]), crossed(None, 0.4, [0.25])
    (0.25, 0.25, None, None)
    """
    if before is None or after is None:
        return None
    for t in thresholds:
        if (before < t) != (after < t):
            return t
    return None


class CrmTriggers:
    """The last band and probability seen per sink and customer (in memory), to tell a change."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[str | None, float | None]] = {}

    def due(self, sink: CrmSink, msg: dict[str, Any]) -> str | None:
        """Why this message should be synced (None: not due). The first message seen for a
        customer syncs it (the CRM may never have had it)."""
        cid = str(msg.get("customer_id"))
        band, p = msg.get("health_band"), msg.get("churn_probability")
        key = (sink.name, cid)
        last = self._last.get(key)
        self._last[key] = (band, p)
        since = msg.get("since_previous") or {}
        p_before = since.get("churn_probability_before", last[1] if last else None)
        if sink.on_band_change and (msg.get("kind") == "band_change" or (last is not None and last[0] != band)):
            return f"band changed to {band}"
        if (t := crossed(p_before, p, sink.churn_thresholds)) is not None:
            return f"churn probability crossed {t:g}"
        if last is None and not since:
            return "first record of the customer"
        return None
