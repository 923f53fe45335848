"""Which alerts a sink receives: its route's criteria, the customer's context, a quiet period.

>>> from stream_app.delivery.config import Route
>>> a = {"customer_id": "acme", "kind": "churn_risk", "severity": "warning", "health_band": "red",
...      "churn_probability": 0.4, "ts": "2026-01-05T08:00:00+00:00"}
>>> route_miss(Route(severities=["critical"]), a, Context()), route_miss(Route(bands=["red"]), a, Context())
('severity warning not in [critical]', None)
>>> route_miss(Route(lifecycle_stages=["loyal"]), a, Context(lifecycle_stage="adopting"))
'lifecycle stage adopting not in [loyal]'
>>> q = QuietPeriods()
>>> q.hold("s", "acme", 0, "warning", 3600), q.hold("s", "acme", 1000, "warning", 3600), q.hold("s", "acme", 2000, "critical", 3600)
(None, 'quiet period: acme had an alert on s 1s ago', None)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from stream_app.delivery.config import Route

SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Context:
    """What routing knows about a customer beyond the alert (None: unknown)."""

    segment: str | None = None
    lifecycle_stage: str | None = None


def _listed(what: str, value: Any, allowed: list[Any]) -> str | None:
    if allowed and value not in allowed:
        return f"{what} {value} not in [{', '.join(map(str, allowed))}]"
    return None


def route_miss(route: Route, msg: dict[str, Any], ctx: Context) -> str | None:
    """Why ``msg`` does not match ``route`` (None: it matches). Unknown context never matches a
    criterion that lists values."""
    for reason in (
        _listed("kind", msg.get("kind"), list(route.kinds)),
        _listed("severity", msg.get("severity"), list(route.severities)),
        _listed("band", msg.get("health_band"), list(route.bands)),
        _listed("segment", ctx.segment, route.segments),
        _listed("lifecycle stage", ctx.lifecycle_stage, list(route.lifecycle_stages)),
    ):
        if reason:
            return reason
    p = msg.get("churn_probability")
    if route.min_churn_probability is not None and not (isinstance(p, (int, float)) and p >= route.min_churn_probability):
        return f"churn probability {p} below {route.min_churn_probability}"
    return None


def event_ms(msg: dict[str, Any]) -> int:
    """A message's event time (its ``ts``, ISO-8601) in epoch milliseconds (0 when unreadable)."""
    try:
        return int(datetime.fromisoformat(str(msg.get("ts"))).timestamp() * 1000)
    except ValueError:
        return 0


class QuietPeriods:
    """Per sink and customer: the event time and severity of the last alert sent. Held in
    memory (a customer's alerts stay in one partition, so in one process); bounded by pruning
    entries older than the longest quiet period seen."""

    def __init__(self, max_entries: int = 200_000) -> None:
        self._last: dict[tuple[str, str], tuple[int, int]] = {}
        self._max = max_entries
        self._longest_ms = 0

    def hold(self, sink: str, customer_id: str, ts_ms: int, severity: str, quiet_s: float) -> str | None:
        """Why to hold this alert back (None: send it, and the quiet period starts again)."""
        if quiet_s <= 0:
            return None
        key, rank, quiet_ms = (sink, customer_id), SEVERITY_RANK.get(severity, 0), int(quiet_s * 1000)
        last = self._last.get(key)
        if last is not None and 0 <= ts_ms - last[0] < quiet_ms and rank <= last[1]:
            return f"quiet period: {customer_id} had an alert on {sink} {(ts_ms - last[0]) / 1000:g}s ago"
        self._last[key] = (ts_ms, rank)
        self._longest_ms = max(self._longest_ms, quiet_ms)
        if len(self._last) > self._max:
            self._last = {k: v for k, v in self._last.items() if ts_ms - v[0] < self._longest_ms}
        return None
