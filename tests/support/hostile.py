"""Hostile input for the ingestion path: hypothesis strategies and a pure expectation.

A generated stream is a list of :class:`Msg`: valid contract events (some of them hostile
in content: odd ids, late timestamps, deep but legal nesting in an unknown field, duplicate
ids with different content) and messages the contract rejects (wrong types, missing
fields, huge strings and messages, deep nesting, invalid UTF-8, NaN/Infinity, timestamps
out of range or in the future, unknown enums, non-object JSON, garbage). Each message
says what must happen to it: applied, a duplicate, or dead-lettered naming a field/rule.

:class:`Expectation` replays the valid ones in the ingestor's order with the contract's
rules (same ``event_id`` and customer = same event, first wins; ids are remembered for
``DEDUPE_DAYS`` of event time) and predicts each customer's counters and 7-day window,
independently of Redis and Lua.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
T0_MS = int(T0.timestamp() * 1000)
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MAX_BYTES = 65_536

#: Customer ids of awkward content (all valid: 1..128 chars).
ODD_CUSTOMERS = [
    "acme",
    "a}b{c",
    "{x}",
    "%7D%",
    "a:b:c",
    "line\nbreak",
    "nul\x00byte",
    "emoji-😀-ünï",
    "".join(chr(33 + (i * 7) % 94) for i in range(128)),  # 128 chars of printable junk
    " ",
]

STR_FIELDS = {
    "activity": ["event_id", "customer_id", "action", "user_id", "feature"],
    "tickets": ["event_id", "customer_id", "ticket_id", "status", "priority"],
    "surveys": ["event_id", "customer_id", "survey", "comment"],
    "subscriptions": ["event_id", "customer_id", "status", "plan"],
}
NUM_FIELDS = {
    "activity": ["duration_s", "count"],
    "tickets": ["sentiment"],
    "surveys": ["score"],
    "subscriptions": ["mrr"],
}
REQUIRED = {
    "activity": ["event_id", "customer_id", "ts", "action"],
    "tickets": ["event_id", "customer_id", "ts", "ticket_id", "status"],
    "surveys": ["event_id", "customer_id", "ts", "survey", "score"],
    "subscriptions": ["event_id", "customer_id", "ts", "status", "mrr"],
}
ENUMS = {
    "tickets": ["status", "priority"],
    "surveys": ["survey"],
    "subscriptions": ["status"],
}
#: (field, a value outside its rule) per topic
OUT_OF_RANGE: dict[str, list[tuple[str, Any]]] = {
    "activity": [("duration_s", -0.5), ("duration_s", 31_536_001), ("count", 0), ("count", -3), ("count", 1_000_001)],
    "tickets": [("sentiment", 1.0001), ("sentiment", -7)],
    "surveys": [("score", 11), ("score", -1), ("score", 9.5)],
    "subscriptions": [("mrr", -0.01), ("mrr", 1e9 + 1)],
}
WRONG_FOR_STR = [1, 1.5, True, [], {}, ["x"], {"a": "b"}]
HOSTILE_KINDS = (
    "wrong_type", "missing", "long_string", "empty_string", "huge_message", "unknown_enum", "nan_inf",
    "out_of_range", "future_ts", "bad_ts", "invalid_utf8", "non_object", "truncated", "garbage",
    "deep_nesting", "tombstone", "wrapped",
)
ODD_KINDS = ("unknown_fields", "legal_nesting", "duplicate_keys")
GARBAGE = st.binary(min_size=1, max_size=64)
WRONG_FOR_NUM = ["5", True, [], {}, [1], "NaN"]


@dataclass
class Msg:
    """One generated record value and what the pipeline must do with it."""

    topic: str  # logical topic
    raw: bytes | None
    #: the event as the contract reads it, when it is valid
    body: dict[str, Any] | None
    #: kind of message, for the report
    kind: str
    #: for rejects: a field the errors must name ("" = the whole message), and accepted rules
    field: str | None = None
    rules: frozenset[str] | None = None
    #: True for everything but plain baseline events
    hostile: bool = True
    #: for rejects: the message is rejected only by the ts-in-future rule
    future: bool = False
    #: the Kafka key (customer id) the producer used: it picks the partition
    key: str = ""

    @property
    def valid(self) -> bool:
        return self.body is not None


def _ts_value(ms: int, style: int) -> Any:
    """An event time as the wire allows it: int ms, or ISO with Z / an offset."""
    if style == 0:
        return ms
    dt = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    if style == 1:
        return dt.isoformat().replace("+00:00", "Z")
    off = timezone(timedelta(hours=5, minutes=30)) if style == 2 else timezone(timedelta(hours=-11))
    try:
        return dt.astimezone(off).isoformat()
    except OverflowError:  # the local time would be past year 9999
        return dt.isoformat()


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=bool(len(body) % 2)).encode("utf-8")


# --- valid events --------------------------------------------------------------------------
NAMES = ("login", "feature_used", "post", "export", "a,b", "ünïcødé", "x" * 128, "tab\tname", "{brace}", "%25")
PAST_MS = (0, 946_684_800_000, -1_000_000_000_000, -62_135_596_800_000, T0_MS - 400 * DAY_MS)
BOOL = st.booleans()
_STRATS: dict[tuple[Any, ...], st.SearchStrategy[Any]] = {}


def ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Cached integer strategy (building strategies per draw dominates the run time)."""
    key = ("i", lo, hi)
    if key not in _STRATS:
        _STRATS[key] = st.integers(lo, hi)
    return _STRATS[key]


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    key = ("f", lo, hi)
    if key not in _STRATS:
        _STRATS[key] = st.floats(lo, hi)
    return _STRATS[key]


def choice(draw: st.DrawFn, seq: Any) -> Any:
    return seq[draw(ints(0, len(seq) - 1))]


TOPICS = ("activity", "tickets", "surveys", "subscriptions")


def valid_body(draw: st.DrawFn, topic: str, customer: str, event_id: str, far_past: bool = False) -> dict[str, Any]:
    ms = choice(draw, PAST_MS) if far_past else draw(ints(T0_MS - 5 * DAY_MS, T0_MS + 20 * HOUR_MS))
    style = draw(ints(0, 3))
    if ms < 0 and style:  # ISO before year 1 is impossible, keep those as epoch ms
        style = 0
    body: dict[str, Any] = {"event_id": event_id, "customer_id": customer, "ts": _ts_value(ms, style)}
    if topic == "activity":
        body["action"] = choice(draw, NAMES)
        if draw(BOOL):
            body["user_id"] = choice(draw, (["u1", "u2", "ü3", "u" * 128]))
        if draw(BOOL):
            body["feature"] = choice(draw, NAMES)
        if draw(BOOL):
            body["duration_s"] = draw(ints(0, 100_000)) if draw(BOOL) else draw(floats(0, 31_536_000))
        if draw(BOOL):
            body["count"] = draw(ints(1, 20)) if draw(BOOL) else 1_000_000
    elif topic == "tickets":
        body["ticket_id"] = choice(draw, (["T1", "T2", "T-ü", "t" * 128]))
        body["status"] = choice(draw, (["opened", "updated", "resolved", "reopened", "closed"]))
        if draw(BOOL):
            body["priority"] = choice(draw, (["low", "normal", "high", "urgent"]))
        if draw(BOOL):
            body["sentiment"] = draw(floats(-1, 1))
    elif topic == "surveys":
        kind = choice(draw, (["nps", "csat", "ces"]))
        body["survey"] = kind
        if kind == "nps":
            body["score"] = draw(ints(0, 10)) if draw(BOOL) else float(draw(ints(0, 10)))
        else:
            body["score"] = draw(floats(1, 5 if kind == "csat" else 7))
        if draw(BOOL):
            body["comment"] = choice(draw, (["SURVEY-COMMENT-SECRET-7731 slow exports", "ok", "ü" * 10_000]))
    else:
        body["status"] = choice(draw, (["started", "renewed", "upgraded", "downgraded", "cancelled", "reactivated"]))
        body["mrr"] = draw(ints(0, 10_000)) if draw(BOOL) else draw(floats(0, 1e9))
        if draw(BOOL):
            body["plan"] = choice(draw, NAMES)
    return body


# --- hostile variants ------------------------------------------------------------------------
def hostile(draw: st.DrawFn, topic: str, base: dict[str, Any], kind: str, future_from_ms: int) -> Msg:
    """A rejected message of ``kind`` derived from a valid ``base`` body, with the field it
    must name."""
    m = _hostile(draw, topic, base, kind, future_from_ms)
    if m.raw is not None and len(m.raw) > MAX_BYTES:  # the size rule is checked first
        m.field, m.rules, m.future = "", frozenset({"too_large"}), False
    return m


def _hostile(draw: st.DrawFn, topic: str, base: dict[str, Any], kind: str, future_from_ms: int) -> Msg:
    b = dict(base)
    if kind == "wrong_type":
        f = choice(draw, (STR_FIELDS[topic] + NUM_FIELDS[topic] + ["ts"]))
        if f == "ts":
            b[f] = choice(draw, ([1.5, True, [], {}, None, [T0_MS]]))
        elif f in NUM_FIELDS[topic]:
            b[f] = choice(draw, (WRONG_FOR_NUM + ([None] if f in REQUIRED[topic] else [])))
        else:
            b[f] = choice(draw, (WRONG_FOR_STR + ([None] if f in REQUIRED[topic] else [])))
        return Msg(topic, _dumps(b), None, kind, f)
    if kind == "missing":
        f = choice(draw, (REQUIRED[topic]))
        b.pop(f, None)
        return Msg(topic, _dumps(b), None, kind, f, frozenset({"missing"}))
    if kind == "long_string":
        f = choice(draw, (STR_FIELDS[topic]))
        if f in ENUMS.get(topic, []):
            f = "event_id"
        limit = 10_000 if f == "comment" else 128
        b[f] = "é" * draw(ints(limit + 1, limit + 3000))
        return Msg(topic, _dumps(b), None, kind, f, frozenset({"string_too_long"}))
    if kind == "empty_string":
        f = choice(draw, ([s for s in STR_FIELDS[topic] if s not in ENUMS.get(topic, []) and s != "comment"]))
        b[f] = ""
        return Msg(topic, _dumps(b), None, kind, f, frozenset({"string_too_short"}))
    if kind == "huge_message":
        b["padding"] = "z" * draw(ints(MAX_BYTES, 3 * MAX_BYTES))
        return Msg(topic, _dumps(b), None, kind, "", frozenset({"too_large"}))
    if kind == "unknown_enum":
        if topic == "activity":  # free vocabulary: no enum; an unknown enum elsewhere in spirit
            b["action"] = ""
            return Msg(topic, _dumps(b), None, kind, "action", frozenset({"string_too_short"}))
        f = choice(draw, (ENUMS[topic]))
        b[f] = choice(draw, (["lost", "OPENED", "Nps", "paused", " ", "cancelled ", "ñ"]))
        return Msg(topic, _dumps(b), None, kind, f, frozenset({"literal_error"}))
    if kind == "nan_inf":
        f = choice(draw, (NUM_FIELDS[topic] + ["ts"]))
        token = choice(draw, (["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]))
        b[f] = "__TOKEN__"
        raw = _dumps(b).replace(b'"__TOKEN__"', token.encode())
        return Msg(topic, raw, None, kind, f)
    if kind == "out_of_range":
        f, v = choice(draw, (OUT_OF_RANGE[topic]))
        if topic == "surveys":
            b["survey"] = "nps"
        b[f] = v
        return Msg(topic, _dumps(b), None, kind, f)
    if kind == "future_ts":
        ms = draw(ints(future_from_ms, future_from_ms + 10_000 * DAY_MS)) if draw(BOOL) else 253_402_300_799_999
        b["ts"] = _ts_value(ms, draw(ints(0, 3)))
        return Msg(topic, _dumps(b), None, kind, "ts", frozenset({"ts_in_future"}), future=True)
    if kind == "bad_ts":
        b["ts"] = choice(
            draw,
            ["yesterday", "", "2026-03-01T00:00:00", "2026-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00",
             10**20, -(10**20), "9999-12-31T23:59:59-01:00", "2026-03-01 25:00Z"],
        )
        return Msg(topic, _dumps(b), None, kind, "ts")
    if kind == "invalid_utf8":
        raw = _dumps(b)
        at = draw(ints(0, len(raw)))
        junk = choice(draw, ([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
        return Msg(topic, raw[:at] + junk + raw[at:], None, kind, "", frozenset({"json_invalid"}))
    if kind == "non_object":
        raw = choice(draw, ([b"[]", b"1", b'"str"', b"null", b"true", b"[{}]", b"-0.0"]))
        if draw(BOOL):
            raw = b"[" + _dumps(b) + b"]"
        return Msg(topic, raw, None, kind, "", frozenset({"model_type"}))
    if kind == "truncated":
        raw = _dumps(b)
        cut = draw(ints(0, len(raw) - 1))
        return Msg(topic, raw[:cut], None, kind, "", frozenset({"json_invalid"}))
    if kind == "garbage":
        raw = b"\x00" + draw(GARBAGE)  # a leading NUL: never accidentally JSON
        return Msg(topic, raw, None, kind, "", frozenset({"json_invalid"}))
    if kind == "deep_nesting":
        depth = draw(ints(300, 50_000))
        f = choice(draw, (["extra", "action", "ts", "event_id"]))
        b[f] = "__TOKEN__"
        raw = _dumps(b).replace(b'"__TOKEN__"', b"[" * depth + b"]" * depth)
        if len(raw) > MAX_BYTES:
            return Msg(topic, raw, None, kind, "", frozenset({"too_large"}))
        return Msg(topic, raw, None, kind, "", frozenset({"json_invalid"}))
    if kind == "tombstone":
        return Msg(topic, None, None, kind, "", frozenset({"missing_value"}))
    # wrapped: the event nested inside another object (a common producer bug)
    return Msg(topic, _dumps({"event": b}), None, kind, "event_id", frozenset({"missing"}))


def valid_but_odd(draw: st.DrawFn, topic: str, base: dict[str, Any], kind: str) -> Msg:
    """Legal messages that still try to confuse: unknown fields (nested up to the parser's
    limit), duplicate JSON keys (the last one counts, as in every JSON parser we use)."""
    if kind == "unknown_fields":
        body = {**base, "source": "x" * draw(ints(0, 5000)), "v": [1, {"a": None}], "__proto__": {}}
        return Msg(topic, _dumps(body), base, kind)
    if kind == "legal_nesting":
        depth = draw(ints(1, 150))
        body = {**base, "extra": "__TOKEN__"}
        raw = _dumps(body).replace(b'"__TOKEN__"', b"[" * depth + b"]" * depth)
        return Msg(topic, raw, base, kind)
    # duplicate keys: a junk first copy of event_id, then the real one
    raw = _dumps(base)
    raw = b'{"event_id": 12345, ' + raw[1:]
    return Msg(topic, raw, base, kind)


class SeededDraw:
    """``draw`` for the details of a message: the cached strategies above are answered from
    one ``random.Random`` seeded by one draw per stream (so reproducible), everything else
    by hypothesis. Hypothesis keeps choosing each message's topic, customer and kind (the
    structure it shrinks); a draw per detail would make generation dominate the run time."""

    def __init__(self, draw: st.DrawFn, rng: random.Random) -> None:
        self.draw, self.rng = draw, rng
        self.specs = {id(v): k for k, v in _STRATS.items()}

    def __call__(self, strategy: st.SearchStrategy[Any]) -> Any:
        r = self.rng
        if strategy is BOOL:
            return r.random() < 0.5
        if strategy is GARBAGE:
            return r.randbytes(r.randint(1, 64))
        spec = self.specs.get(id(strategy))
        if spec is None:
            self.specs = {id(v): k for k, v in _STRATS.items()}  # one created since
            spec = self.specs.get(id(strategy))
        if spec is None:
            return self.draw(strategy)
        kind, lo, hi = spec
        edge = r.random()
        if edge < 0.05:
            return lo
        if edge < 0.10:
            return hi
        return r.randint(lo, hi) if kind == "i" else r.uniform(lo, hi)


@st.composite
def stream(draw: st.DrawFn, size: tuple[int, int] = (60, 160), customers: list[str] = ODD_CUSTOMERS) -> list[Msg]:
    """A stream: mostly hostile, with valid events, duplicates and late events mixed in.
    Hypothesis chooses its length and each message's topic, customer and kind."""
    n = draw(ints(*size))
    detail = SeededDraw(draw, random.Random(draw(ints(0, 2**32))))
    return build_stream(draw, detail, n, customers)


def seeded_stream(seed: int, n: int, future_from_ms: int, customers: list[str] = ODD_CUSTOMERS) -> list[Msg]:
    """The same kind of stream from a plain seed (for the Kafka-level test, where the worker's
    wall clock is the real one: rejected-as-future times start at ``future_from_ms``)."""
    detail = SeededDraw(None, random.Random(seed))  # type: ignore[arg-type]
    return build_stream(detail, detail, n, customers, future_from_ms, dup_of_far_past=False)


def build_stream(
    draw: Any,
    detail: SeededDraw,
    n: int,
    customers: list[str],
    future_from_ms: int = T0_MS + 3 * DAY_MS,
    dup_of_far_past: bool = True,
) -> list[Msg]:
    out: list[Msg] = []
    valid_so_far: list[Msg] = []
    for i in range(n):
        topic = choice(draw, TOPICS)
        customer = choice(draw, customers)
        roll = draw(ints(0, 99))
        far_past = choice(detail, range(10)) == 0
        # far-past events get unique ids: ids are only remembered for the horizon
        eid = f"p{i}" if far_past else choice(detail, (f"e{i}", f"e{i}", "e-shared", "é€{1}"))
        base = valid_body(detail, topic, customer, eid, far_past)
        targets = valid_so_far if dup_of_far_past else [m for m in valid_so_far if m.kind != "far_past"]
        if roll < 62:
            m = hostile(detail, topic, base, choice(draw, HOSTILE_KINDS), future_from_ms)
            m.key = customer
            out.append(m)
        elif roll < 70 and targets:
            # the same event_id (and customer) again with different content: first wins
            orig = choice(detail, targets)
            t2 = choice(detail, (orig.topic, topic))
            body = valid_body(detail, t2, orig.body["customer_id"], orig.body["event_id"])  # type: ignore[index]
            out.append(Msg(t2, _dumps(body), body, "duplicate_id", key=body["customer_id"]))
        elif roll < 80:
            m = valid_but_odd(detail, topic, base, choice(draw, ODD_KINDS))
            m.key = customer
            out.append(m)
            valid_so_far.append(m)
        else:
            m = Msg(topic, _dumps(base), base, "far_past" if far_past else "valid", hostile=far_past, key=customer)
            out.append(m)
            valid_so_far.append(m)
    return out


# --- the pure expectation --------------------------------------------------------------------
def ts_ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    dt = datetime.fromisoformat(value)
    return (dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)


@dataclass
class CustomerExpect:
    applied: list[dict[str, Any]] = field(default_factory=list)  # (body + "_topic")
    duplicates: int = 0
    ids: dict[str, int] = field(default_factory=dict)  # event_id -> its day (remembered ids)
    lts: int | None = None


class Expectation:
    """What the state must be after the valid messages, by the contract's rules alone (and
    the retention rule: a customer silent for ``retention_days`` of event time starts over)."""

    def __init__(self, dedupe_days: int, retention_days: int = 0) -> None:
        self.dedupe_days = dedupe_days
        self.retention_ms = retention_days * DAY_MS
        self.customers: dict[str, CustomerExpect] = defaultdict(CustomerExpect)
        self.counts: Counter[str] = Counter()

    def add(self, topic: str, body: dict[str, Any]) -> None:
        """One valid event, in the order the ingestor applies them."""
        ts = ts_ms(body["ts"])
        c = self.customers[body["customer_id"]]
        if self.retention_ms and c.lts is not None and ts - c.lts > self.retention_ms:
            c = self.customers[body["customer_id"]] = CustomerExpect()  # back after retention: starts over
        day = ts // DAY_MS
        newest = max(c.lts, ts) if c.lts is not None else ts
        today = newest // DAY_MS
        if body["event_id"] in c.ids:
            c.duplicates += 1
            self.counts["duplicate"] += 1
            return
        if day > today - self.dedupe_days:
            c.ids[body["event_id"]] = day
        c.lts = newest
        c.ids = {i: d for i, d in c.ids.items() if d > today - self.dedupe_days}
        c.applied.append({**body, "_topic": topic, "_ts": ts})
        self.counts["applied"] += 1

    def window(self, cid: str, days: int = 7) -> dict[str, float]:
        """Counters of the ``days`` window as of the customer's newest event."""
        c = self.customers[cid]
        assert c.lts is not None
        hi = c.lts // DAY_MS
        lo = hi - days + 1
        w: Counter[str] = Counter()
        for e in c.applied:
            if not lo <= e["_ts"] // DAY_MS <= hi:
                continue
            t = e["_topic"]
            if t == "activity":
                w["activity_events"] += e.get("count", 1)
                w["activity_duration_s"] += int(round(e["duration_s"])) if "duration_s" in e else 0
            elif t == "surveys":
                w[f"{e['survey']}_responses"] += 1
            elif t == "subscriptions":
                key = {"renewed": "renewals", "upgraded": "upgrades", "downgraded": "downgrades",
                       "cancelled": "cancellations"}.get(e["status"])
                if key:
                    w[key] += 1
        return dict(w)


def apply_order(valid: list[tuple[str, int, int, int]], topics: list[str]) -> list[int]:
    """The order in which the ingestor applies valid events (see ``stream_app/ordering.py``):
    by order key ``(k, topic index, partition, offset)`` with ``k`` = max(ts, newest ts of the
    events before it in its topic-partition). ``valid``: (topic, partition, offset, ts) of every
    valid record; returns their indexes in application order."""
    newest: dict[tuple[str, int], int] = {}
    keys = []
    for i, (topic, part, off, ts) in sorted(enumerate(valid), key=lambda x: (x[1][0], x[1][1], x[1][2])):
        before = newest.get((topic, part), -1)
        newest[(topic, part)] = max(before, ts)
        keys.append(((max(ts, before), topics.index(topic), part, off), i))
    return [i for _, i in sorted(keys)]
