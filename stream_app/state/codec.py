"""Typed records for what the pipeline stores in a customer's hash, and their encodings.

* :class:`ScoreSave`: the score state of one scored event, saved by ``lua/apply_events.lua``
  together with the customer's next event (``ARGV[8]``); its outputs ride in the outbox.
* :class:`OutboxEntry`: the kinds of outbox entries (alert, score snapshot, segmentation
  observation, portfolio month facts), each entry its kind's tag + payload.
* alert state (``ab``, ``ar``, ``al:<kind>``), score history (``h<day>``), the order key
  (``sk``), the previous published score and the latest explained change (``pc``, ``pr*``,
  ``lc*``), all kept short so the hash stays in Redis' compact encoding (values < 64 bytes);
* :func:`encode_for_script`: an input event as the compact tuple the Lua reads.

Field names come from :mod:`stream_app.state.layout`.

>>> save = ScoreSave(day=20100, score10=655, fields={layout.SORT_KEY: "1.2.3.4"}, outbox=["sx"])
>>> save.encode()
b'[20100,655,{"sk":"1.2.3.4"},"","",35,["sx"]]'
>>> OutboxEntry.ALERT.entry('{"a":1}'), OutboxEntry.of(b's{"x":1}')
('a{"a":1}', (<OutboxEntry.SCORE: 's'>, b'{"x":1}'))
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import orjson

from schemas import ActivityEvent, InputEvent, ScoreChange, SubscriptionEvent, SurveyEvent, TicketEvent
from stream_app.scoring.alerts import AlertState
from stream_app.scoring.scorecard import COMPONENTS, HealthResult
from stream_app.state import layout
from stream_app.state.customer import MAIN, N_HASHES, CustomerState

#: Days of score history kept behind the newest scored day (the 30-day trend needs 30).
HISTORY_KEEP_DAYS = 35


@dataclass(frozen=True)
class ScoreSave:
    """The score state of one scored event, as ``apply_events.lua`` saves it (``ARGV[8]``):
    the day's history entry, the hash fields, the label snapshot, the outbox entries."""

    #: event-time day of the score (-1: only ``fields``, e.g. a duplicate's order key)
    day: int
    #: health score x10
    score10: int
    fields: dict[str, str]
    #: label snapshot field ``"<day>:<second of day>"`` ('' = none) and its frozen features
    snapshot: str = ""
    snapshot_text: str = ""
    #: history days kept behind ``day``
    keep_days: int = HISTORY_KEEP_DAYS
    #: outbox entries (``OutboxEntry.entry``), published after the drain
    outbox: list[str] = field(default_factory=list)

    @classmethod
    def order_only(cls, key: tuple[int, ...]) -> ScoreSave:
        """Only the order key: re-sent events that changed nothing, remembered as scored."""
        return cls(day=-1, score10=0, fields={layout.SORT_KEY: order_text(key)}, keep_days=0)

    def encode(self) -> bytes:
        """The JSON array the Lua reads (positional: see ``lua/apply_events.lua``, ARGV 8)."""
        return orjson.dumps([self.day, self.score10, self.fields, self.snapshot, self.snapshot_text,
                             self.keep_days, self.outbox])


class OutboxEntry(Enum):
    """What an outbox entry holds; its value is the entry's first character."""

    ALERT = "a"
    SCORE = "s"
    OBSERVATION = "o"  # a segmentation observation not yet stored (issue 7)
    FACTS = "f"  # a scoring's month facts not yet in the portfolio (issue 7)

    def entry(self, payload: str) -> str:
        return self.value + payload

    @classmethod
    def of(cls, raw: bytes) -> tuple[OutboxEntry, bytes]:
        """An entry read back: its kind and payload (an untagged kind reads as a score snapshot)."""
        tag = raw[:1].decode()
        kind = next((k for k in cls if k.value == tag), cls.SCORE)
        return kind, raw[1:]


# --- order key, alert state, history -----------------------------------------------------------
def order_text(key: tuple[int, ...]) -> str:
    """An order key as the compact text kept in the customer hash (``sk``)."""
    return ".".join(map(str, key))


def order_of(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")) if text else (-1,)


def saved_order(main: dict[str, str]) -> tuple[int, ...]:
    """The order key of the customer's newest scored event ((-1,) if none)."""
    return order_of(main.get(layout.SORT_KEY))


def load_alert_state(main: dict[str, str]) -> AlertState:
    """Alert memory is kept as short fields (``ab``, ``ar``, ``al:<kind>``) so the customer's
    hash stays in Redis' compact encoding (every value under 64 bytes)."""
    return AlertState(
        band=main.get(layout.ALERT_BAND),
        in_risk=main.get(layout.ALERT_IN_RISK) == "1",
        last=last_alerts(main),
    )


def last_alerts(main: dict[str, str]) -> dict[str, int]:
    """Alert kind -> event time it last fired."""
    return {kind: int(v) for f, v in main.items() if (kind := layout.alert_last_kind(f)) is not None}


def alert_state_fields(st: AlertState) -> dict[str, str]:
    fields = {layout.ALERT_BAND: st.band or "", layout.ALERT_IN_RISK: "1" if st.in_risk else "0"}
    fields.update({layout.alert_last_field(k): str(v) for k, v in st.last.items()})
    return fields


def score_history(main: dict[str, str]) -> dict[int, float]:
    """Day -> that day's last health score."""
    return {day: int(v) / 10 for f, v in main.items() if (day := layout.history_day(f)) is not None}


def health_score(main: dict[str, str]) -> float | None:
    """The newest health score, if scored."""
    return int(main[layout.HEALTH_SCORE]) / 10 if layout.HEALTH_SCORE in main else None


def reasons_fields(reasons: list[Any]) -> dict[str, str]:
    """``r1``..``r3``: the newest score's standing reasons (unused ones emptied)."""
    fields = {f: "" for f in layout.REASON_FIELDS}
    for f, r in zip(layout.REASON_FIELDS, reasons):
        fields[f] = f"{r.factor}:{r.impact:g}"
    return fields


def stored_reasons(main: dict[str, str]) -> list[str]:
    """The standing reasons as stored (``<factor>:<impact>``), empty ones left out."""
    return [part for part in (main.get(f, "") for f in layout.REASON_FIELDS) if part]


# --- input events as the Lua reads them -------------------------------------------------------
_KIND = {ActivityEvent: layout.KIND_ACTIVITY, TicketEvent: layout.KIND_TICKET, SurveyEvent: layout.KIND_SURVEY,
         SubscriptionEvent: layout.KIND_SUBSCRIPTION}
#: Names longer than this are stored as prefix + digest: Redis keeps a hash compact
#: (listpack) only while every field and value is <= 64 bytes.
_MAX_NAME = 40


def digest(value: str, nbytes: int) -> str:
    """Short, fixed-width, URL-safe digest of a string (``4*nbytes/3`` chars).

    >>> len(digest("evt-1", 9)), digest("evt-1", 9) == digest("evt-1", 9)
    (12, True)
    """
    raw = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=nbytes).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii")


def compact_name(name: str) -> str:
    """A bounded-length, comma-free name for use as a hash field.

    >>> compact_name("login")
    'login'
    >>> len(compact_name("x" * 100))
    33
    """
    if len(name) <= _MAX_NAME and "," not in name:
        return name
    return name[:24].replace(",", "_") + "~" + digest(name, 6)


def encode_for_script(e: InputEvent, partition: int, offset: int, priority_weights: dict[str, int]) -> list[Any]:
    """The compact tuple the Lua script reads (see ``lua/apply_events.lua``)."""
    # 48-bit digests: compared only within one customer's day, a false match needs two of
    # its ~10^2 ids that day to collide (p ~ 10^-11), and they cost 8 bytes each.
    head: list[Any] = [_KIND[type(e)], partition, offset, digest(e.event_id, 6), e.ts_ms]
    if isinstance(e, ActivityEvent):
        return head + [
            compact_name(e.action),
            digest(e.user_id, 6) if e.user_id else "",
            compact_name(e.feature) if e.feature else "",
            int(round(e.duration_s)) if e.duration_s is not None else 0,
            e.count,
        ]
    if isinstance(e, TicketEvent):
        return head + [
            digest(e.ticket_id, 6),
            e.status,
            priority_weights[e.priority],
            int(round(e.sentiment * 1000)) if e.sentiment is not None else False,
        ]
    if isinstance(e, SurveyEvent):
        return head + [e.survey, int(round(e.score * 1000))]
    if isinstance(e, SubscriptionEvent):
        return head + [e.status, int(round(e.mrr * 100)), compact_name(e.plan) if e.plan else ""]
    raise TypeError(f"not an input event: {type(e).__name__}")


# --- change memory: the previous published score and the latest explained change ------------------
#: The raw signals kept with the previous score (``scoring.scorecard.signals_from`` keys), in order.
SIGNALS: tuple[str, ...] = (
    "activity_vs_baseline", "active_days_share_30d", "days_since_last_activity", "features_30d", "active_users_30d",
    "nps_mean_90d", "csat_90d", "open_ticket_load", "reopened_30d", "ticket_load_30d",
    "sentiment_30d", "mrr_change_pct_90d", "downgrades_90d", "tenure_days", "cancelled",
    "activity_percentile",
)
_PER_FIELD = 5

def _num(v: float) -> str:
    """Shortest text of a number to 3 significant digits.

    >>> _num(12.0), _num(0.4567), _num(-1234.5), _num(100.0)
    ('12', '0.457', '-1.23e+03', '100')
    """
    return f"{v:.3g}"


def _comp(v: float) -> str:
    """A 0..100 sub-score with one decimal, trailing zeros dropped: '72.5', '100', '0'."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Previous:
    """The previous published score, as stored."""

    ts_ms: int
    score: float
    churn_probability: float | None
    components: dict[str, float]
    signals: dict[str, float | None]


def previous_fields(health: HealthResult, churn_p: float, ts_ms: int) -> dict[str, str]:
    """Hash fields that remember this score as the previous one (each value < 64 bytes).

    >>> from stream_app.scoring.scorecard import Scorecard, ScorecardConfig
    >>> h = Scorecard(ScorecardConfig()).score_signals({"tenure_days": 20.0, "features_30d": 3.0})
    >>> f = previous_fields(h, 0.1234, 1_767_600_000_000)
    >>> f["pc"], f["pr1"]
    ('1767600000|636|1234|60|41.1|60|92|90|1.7', ',,,3,')
    >>> all(len(v) < 64 for v in f.values())
    True
    """
    comps = "|".join(_comp(health.components[c]) if c in health.components else "" for c in COMPONENTS)
    fields = {layout.PREVIOUS: f"{ts_ms // 1000}|{int(round(health.score * 10))}|{int(round(churn_p * 10_000))}|{comps}"}
    for i in range(0, len(SIGNALS), _PER_FIELD):
        part = SIGNALS[i:i + _PER_FIELD]
        fields[layout.previous_signals_field(i // _PER_FIELD + 1)] = ",".join(
            "" if (v := finite(health.signals.get(s))) is None else _num(v) for s in part)
    return fields


def load_previous(main: dict[str, str]) -> Previous | None:
    """The previous score from the customer's hash, or None (never published, or unreadable)."""
    pc = main.get(layout.PREVIOUS)
    if not pc:
        return None
    try:
        ts_s, score, p, *comps = pc.split("|")
        components = {c: float(v) for c, v in zip(COMPONENTS, comps) if v != ""}
        signals: dict[str, float | None] = {}
        for i in range(0, len(SIGNALS), _PER_FIELD):
            values = main.get(layout.previous_signals_field(i // _PER_FIELD + 1), "").split(",")
            for s, v in zip(SIGNALS[i:i + _PER_FIELD], values):
                signals[s] = float(v) if v != "" else None
        return Previous(int(ts_s) * 1000, int(score) / 10, int(p) / 10_000, components, signals)
    except ValueError:
        return None




def last_change_fields(change: ScoreChange, score_after: float) -> dict[str, str]:
    """``lc``, ``lc1``, ``lc2``: the latest explained change, compact, for ``stream-app customer``.

    >>> from schemas import Change
    >>> ch = ScoreChange(since=0, health_score_before=80, changes=[
    ...     Change(kind="component", name="engagement", before=90, after=50, impact=-12.0),
    ...     Change(kind="factor", name="activity_vs_baseline", before=1, after=0.2, impact=-12.0)])
    >>> last_change_fields(ch, 68.0)
    {'lc': '0|80|68', 'lc1': 'engagement:-12;activity_vs_baseline:-12', 'lc2': ''}
    """
    items = layout.LAST_CHANGE_ITEMS
    fields = {layout.LAST_CHANGE: f"{int(change.since.timestamp())}|{change.health_score_before:g}|{score_after:g}",
              **{f: "" for f in items}}
    slot = 0
    for ch in change.changes:
        item = f"{ch.name[:40]}:{ch.impact:g}"
        key = items[slot]
        joined = f"{fields[key]};{item}" if fields[key] else item
        if len(joined) < 64:
            fields[key] = joined
        elif slot < len(items) - 1:
            slot += 1
            fields[items[slot]] = item
        else:
            break
    return fields


def load_last_change(main: dict[str, str]) -> dict[str, object] | None:
    """The latest explained change as stored (for ``stream-app customer``), or None."""
    lc = main.get(layout.LAST_CHANGE)
    if not lc:
        return None
    try:
        since_s, before, after = lc.split("|")
        items = []
        for part in ";".join(filter(None, (main.get(f, "") for f in layout.LAST_CHANGE_ITEMS))).split(";"):
            if part:
                name, impact = part.rsplit(":", 1)
                items.append({"name": name, "impact": float(impact)})
        return {"since": datetime.fromtimestamp(int(since_s), tz=timezone.utc).isoformat(),
                "health_score_before": float(before), "health_score_after": float(after), "changes": items}
    except ValueError:
        return None


def finite(v: float | None) -> float | None:
    """A signal as stored and shown: None for unknown or NaN, else rounded to 4 places."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v), 4)


# --- owned state: what a drain changed, as ``lua/write_state.lua`` reads it ---------------------
def encode_changes(st: CustomerState) -> bytes:
    """A customer's changes since its last write (positional: see ``lua/write_state.lua``).

    >>> st = CustomerState.empty("c"); st.hset(MAIN, "n", "2"); st.outbox.append("a{}")
    >>> encode_changes(st)
    b'[0,0,{"n":"2"},[],{},[],{},[],{},[],{},[],{},["a{}"]]'
    """
    parts: list[Any] = [int(st.reset), int(st.touched_day)]
    for h in range(N_HASHES):
        parts += st.changes(h)
    parts += [st.labels, st.outbox]
    return orjson.dumps(parts)
