"""At-risk alert rules: one alert per episode, by event time (pure).

* ``churn_risk``  probability rises to ``risk_enter``; the episode ends below ``risk_exit``
  (hysteresis), so a probability hovering at the threshold alerts once.
* ``band_change`` the band worsens (an improvement updates the state silently: nobody is
  paged for good news); leaving a band needs ``band_margin`` points beyond its threshold,
  so a score on a boundary does not flap.
* ``health_drop`` the score is ``drop_points`` below its maximum over the last 7 days.
* ``detractor``   an NPS answer of 0-6.
* ``escalation``  an urgent or reopened ticket while the customer is yellow or red.

Every kind has a per-customer cooldown in event time. Alert ids are deterministic
(customer, kind, event time), so replaying history yields the same alerts.

>>> cfg = AlertConfig()
>>> st = AlertState(band="green")
>>> alerts, st = evaluate(cfg, st, "c1", 10 * DAY_MS, score=40.0, band="red",
...     history={9: 80.0}, churn_p=0.7, model_version="m1", reasons=[], triggers=[])
>>> sorted(a.kind for a in alerts)
['band_change', 'churn_risk', 'health_drop']
>>> again, st = evaluate(cfg, st, "c1", 10 * DAY_MS + 1, score=40.0, band="red",
...     history={9: 80.0, 10: 40.0}, churn_p=0.7, model_version="m1", reasons=[], triggers=[])
>>> again
[]
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from schemas import Alert, Reason, SurveyEvent, TicketEvent
from stream_app.core import DAY_MS

Kind = Literal["churn_risk", "health_drop", "band_change", "detractor", "escalation"]
BAND_RANK = {"green": 0, "yellow": 1, "red": 2}


class AlertConfig(BaseModel):
    risk_enter: float = Field(0.5, gt=0, lt=1)
    risk_exit: float = Field(0.35, gt=0, lt=1)
    risk_critical: float = Field(0.75, gt=0, le=1)
    drop_points: float = Field(15.0, gt=0)
    drop_critical_points: float = Field(30.0, gt=0)
    band_margin: float = Field(4.0, ge=0)
    cooldown_days: dict[str, float] = Field(
        default={"churn_risk": 14, "health_drop": 7, "band_change": 7, "detractor": 14, "escalation": 3}
    )


class AlertState(BaseModel):
    """Per-customer alert memory, stored with the customer's state."""

    band: str | None = None
    in_risk: bool = False
    last: dict[str, int] = Field(default_factory=dict, description="kind -> event time (ms) of the last alert")


class Trigger(BaseModel):
    """An input event that can raise an alert by itself (a detractor answer, an escalated ticket)."""

    kind: Literal["detractor", "escalation"]
    ts_ms: int
    value: float
    label: str


def _cooled(cfg: AlertConfig, st: AlertState, key: str, ts_ms: int) -> bool:
    last = st.last.get(key)
    return last is None or ts_ms - last >= cfg.cooldown_days.get(key.split(":")[0], 0) * DAY_MS


def _stable_band(margin: float, prev: str | None, score: float, band: str, green_min: float, yellow_min: float) -> str:
    """The band with hysteresis: leaving a band needs ``margin`` points beyond its threshold."""
    if prev is None:
        return band
    if prev == "green":
        return "green" if score >= green_min - margin else band
    if prev == "red":
        return "red" if score < yellow_min + margin else band
    if score >= green_min + margin:
        return "green"
    if score < yellow_min - margin:
        return "red"
    return "yellow"


def evaluate(
    cfg: AlertConfig,
    st: AlertState,
    customer_id: str,
    ts_ms: int,
    *,
    score: float,
    band: str,
    history: dict[int, float],
    churn_p: float,
    model_version: str,
    reasons: list[Reason] | Callable[[], list[Reason]],
    triggers: list[Trigger],
    green_min: float = 70.0,
    yellow_min: float = 45.0,
    owned: bool = False,
) -> tuple[list[Alert], AlertState]:
    """Alerts raised at event time ``ts_ms`` and the customer's new alert state.

    ``reasons``: the standing reasons every alert carries, or a function making them (called
    only when an alert is raised); ``owned``: ``st`` is the caller's to give away (updated in
    place and returned, not copied)."""
    if not owned:
        st = st.model_copy(deep=True)
    out: list[Alert] = []
    ts_holder: list[datetime] = []
    made: list[list[Reason]] = []
    band = _stable_band(cfg.band_margin, st.band, score, band, green_min, yellow_min)

    def raise_(kind: Kind, severity: str, extra: list[Reason] | None = None, at_ms: int | None = None) -> None:
        at = at_ms if at_ms is not None else ts_ms
        if not made:
            made.append(reasons() if callable(reasons) else reasons)
        if at_ms is None and not ts_holder:
            ts_holder.append(datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc))
        out.append(
            Alert(
                alert_id=f"{customer_id}/{kind}/{at}",
                customer_id=customer_id,
                ts=datetime.fromtimestamp(at / 1000, tz=timezone.utc) if at_ms is not None else ts_holder[0],
                kind=kind,
                severity=severity,  # type: ignore[arg-type]
                health_score=max(0.0, min(100.0, score)),
                health_band=band,  # type: ignore[arg-type]
                churn_probability=max(0.0, min(1.0, churn_p)),
                reasons=(extra or []) + made[0],
                model_version=model_version,
            )
        )
        st.last[kind] = at

    # churn risk, with hysteresis
    if not st.in_risk and churn_p >= cfg.risk_enter:
        st.in_risk = True
        if _cooled(cfg, st, "churn_risk", ts_ms):
            raise_("churn_risk", "critical" if churn_p >= cfg.risk_critical else "warning",
                   [Reason(factor="churn_probability", value=round(churn_p, 4), impact=round(churn_p - cfg.risk_enter, 4))])
    elif st.in_risk and churn_p < cfg.risk_exit:
        st.in_risk = False

    # band change
    # the cooldown is per target band: yellow today does not mute red tomorrow
    worse = st.band is not None and BAND_RANK[band] > BAND_RANK[st.band]
    if worse and _cooled(cfg, st, f"band_change:{band}", ts_ms):
        raise_("band_change", "critical" if band == "red" else "warning",
               [Reason(factor=f"band_{st.band}_to_{band}", value=score, impact=0.0)])
        st.last[f"band_change:{band}"] = ts_ms
    st.band = band

    # health drop within 7 days of event time
    today = ts_ms // DAY_MS
    recent = [v for d, v in history.items() if today - 7 <= d < today + 1]
    if recent:
        peak = max(recent)
        drop = peak - score
        if drop >= cfg.drop_points and _cooled(cfg, st, "health_drop", ts_ms):
            raise_("health_drop", "critical" if drop >= cfg.drop_critical_points else "warning",
                   [Reason(factor="health_drop_7d", value=round(drop, 2), impact=-round(drop, 2))])

    # event-triggered alerts
    for t in sorted(triggers, key=lambda t: t.ts_ms):
        if t.kind == "detractor" and _cooled(cfg, st, "detractor", t.ts_ms):
            raise_("detractor", "critical" if t.value <= 3 else "warning",
                   [Reason(factor="nps_answer", value=t.value, impact=-(7 - t.value))], at_ms=t.ts_ms)
        elif t.kind == "escalation" and band in ("yellow", "red") and _cooled(cfg, st, "escalation", t.ts_ms):
            raise_("escalation", "critical" if band == "red" else "warning",
                   [Reason(factor=t.label, value=t.value, impact=-1.0)], at_ms=t.ts_ms)
    return out, st


def triggers_of(event: object) -> Trigger | None:
    """The alert an input event can raise by itself, if any."""
    if isinstance(event, SurveyEvent) and event.survey == "nps" and event.score <= 6:
        return Trigger(kind="detractor", ts_ms=event.ts_ms, value=event.score, label="nps_answer")
    if isinstance(event, TicketEvent) and (
        event.status == "reopened" or (event.priority == "urgent" and event.status in ("opened", "updated"))
    ):
        return Trigger(kind="escalation", ts_ms=event.ts_ms, value=1.0, label=f"ticket_{event.status}_{event.priority}")
    return None


def trend(history: dict[int, float], today: int, score: float, days: int) -> float | None:
    """Score change over ``days`` of event time: now minus the latest score at least that old."""
    past = [d for d in history if d <= today - days]
    if not past:
        return None
    return round(score - history[max(past)], 2)
