"""Tests for stream_app.tools.simulator: contract validity, ordering, determinism, churn realism."""

from __future__ import annotations

import collections
import doctest
import gzip
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import schemas
import stream_app.tools.simulator.engine as simulator
from stream_app.tools.simulator import CustomerTruth, FEATURES, PLANS, SimConfig, SimEvent, Simulator, TOPICS, write_jsonl, write_truth

DAY_MS = 86_400_000

# --------------------------------------------------------------------------- contract checks
# A minimal, independent reading of /work/shared/event-contract.md (wire format v1).
_TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")
_TICKET_STATUS = {"opened", "updated", "resolved", "reopened", "closed"}
_PRIORITY = {"low", "normal", "high", "urgent"}
_SURVEY_RANGE = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}
_SUB_STATUS = {"started", "renewed", "upgraded", "downgraded", "cancelled", "reactivated"}


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_id(x: Any) -> bool:
    return isinstance(x, str) and 1 <= len(x) <= 128


def contract_errors(topic: str, ev: dict[str, Any]) -> list[str]:
    """Structural problems of one payload under the contract (empty list = valid)."""
    errs: list[str] = []
    if not _is_id(ev.get("event_id")):
        errs.append("event_id")
    if not _is_id(ev.get("customer_id")):
        errs.append("customer_id")
    ts = ev.get("ts")
    if not (isinstance(ts, str) and _TS_RE.match(ts)):
        errs.append(f"ts {ts!r}")
    if topic == "activity":
        if not (isinstance(ev.get("action"), str) and ev["action"]):
            errs.append("action")
        for k in ("user_id", "feature"):
            if k in ev and not (isinstance(ev[k], str) and ev[k]):
                errs.append(k)
        if "duration_s" in ev and not (_is_num(ev["duration_s"]) and ev["duration_s"] >= 0):
            errs.append("duration_s")
        if "count" in ev and not (type(ev["count"]) is int and ev["count"] >= 1):
            errs.append("count")
    elif topic == "tickets":
        if not isinstance(ev.get("ticket_id"), str) or not ev["ticket_id"]:
            errs.append("ticket_id")
        if ev.get("status") not in _TICKET_STATUS:
            errs.append("status")
        if ev.get("priority", "normal") not in _PRIORITY:
            errs.append("priority")
        if "sentiment" in ev and not (_is_num(ev["sentiment"]) and -1 <= ev["sentiment"] <= 1):
            errs.append("sentiment")
    elif topic == "surveys":
        kind = ev.get("survey")
        if kind not in _SURVEY_RANGE:
            errs.append("survey")
        else:
            lo, hi = _SURVEY_RANGE[kind]
            s = ev.get("score")
            if not (_is_num(s) and lo <= s <= hi) or (kind == "nps" and type(s) is not int):
                errs.append(f"score {s!r}")
        if "comment" in ev and not (isinstance(ev["comment"], str) and len(ev["comment"]) <= 10_000):
            errs.append("comment")
    elif topic == "subscriptions":
        if ev.get("status") not in _SUB_STATUS:
            errs.append("status")
        if not (_is_num(ev.get("mrr")) and ev["mrr"] >= 0):
            errs.append("mrr")
        if "plan" in ev and not isinstance(ev["plan"], str):
            errs.append("plan")
    else:
        errs.append(f"topic {topic!r}")
    return errs


def _schema_models() -> dict[str, Any]:
    return schemas.TOPIC_MODELS


# --------------------------------------------------------------------------- one shared run
MAIN_CFG = SimConfig(customers=300, days=120, seed=7, activity_scale=0.5)


@dataclass
class Summary:
    n: int = 0
    errors: list[str] = field(default_factory=list)
    ts_mismatch: int = 0
    order_violations: int = 0
    duplicate_ids: int = 0
    topics: collections.Counter = field(default_factory=collections.Counter)
    first: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    sub_events: dict[str, list[tuple[int, str]]] = field(
        default_factory=lambda: collections.defaultdict(list))
    last_ts: dict[str, int] = field(default_factory=dict)
    act_by_day: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    tickets: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: collections.defaultdict(list))
    nps: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    weekday_events: int = 0
    weekend_events: int = 0
    truth: list[CustomerTruth] = field(default_factory=list)
    after_cancel: list[tuple[str, str, str | None]] = field(default_factory=list)


@pytest.fixture(scope="module")
def run() -> Summary:
    """Consume one 300 x 120 run once, collecting everything the tests need (small memory)."""
    sim = Simulator(MAIN_CFG)
    s = Summary()
    seen: set[str] = set()
    prev = -1
    start_weekday = MAIN_CFG.start.weekday()
    start_day = int(MAIN_CFG.start.timestamp() * 1000) // DAY_MS
    for e in sim.events():
        s.n += 1
        ev = e.event
        topic = e.topic
        s.topics[topic] += 1
        errs = contract_errors(topic, ev)
        if errs and len(s.errors) < 20:
            s.errors.append(f"{topic} {ev}: {errs}")
        if e.ts_ms < prev:
            s.order_violations += 1
        prev = e.ts_ms
        if s.n % 50 == 1:  # spot-check the ISO string against ts_ms
            if int(datetime.fromisoformat(ev["ts"]).timestamp() * 1000) != e.ts_ms:
                s.ts_mismatch += 1
        eid = ev["event_id"]
        if eid in seen:
            s.duplicate_ids += 1
        seen.add(eid)
        cid = ev["customer_id"]
        if cid not in s.first:
            s.first[cid] = (topic, ev.get("status"))
        s.last_ts[cid] = e.ts_ms
        day = e.ts_ms // DAY_MS
        if (start_weekday + day - start_day) % 7 >= 5:
            s.weekend_events += 1
        else:
            s.weekday_events += 1
        if topic == "activity":
            s.act_by_day[cid][day] += 1
        elif topic == "subscriptions":
            s.sub_events[cid].append((e.ts_ms, ev["status"]))
        elif topic == "tickets":
            s.tickets[ev["ticket_id"]].append((cid, ev["status"]))
        elif ev["survey"] == "nps":
            s.nps[cid].append(ev["score"])
    s.truth = sim.truth()
    return s


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


# --------------------------------------------------------------------------- tests
def test_doctests() -> None:
    res = doctest.testmod(simulator, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 5 and res.failed == 0


def test_every_event_is_valid_under_the_contract(run: Summary) -> None:
    assert run.n > 100_000
    assert set(run.topics) == set(TOPICS)
    assert run.errors == []
    assert run.ts_mismatch == 0


def test_events_validate_with_schemas_package_if_available() -> None:
    models = _schema_models()
    sim = Simulator(SimConfig(customers=60, days=45, seed=11))
    n = 0
    for e in sim.events():
        model = models.get(e.topic) or models.get(f"cs.{e.topic}")
        assert model is not None, f"no model for topic {e.topic}"
        model.model_validate(e.event)
        n += 1
    assert n > 1_000


def test_event_time_is_non_decreasing(run: Summary) -> None:
    assert run.order_violations == 0


def test_event_ids_are_unique(run: Summary) -> None:
    assert run.duplicate_ids == 0


def test_customers_start_with_started_and_match_truth(run: Summary) -> None:
    assert len(run.truth) == MAIN_CFG.customers
    assert [t.customer_id for t in run.truth] == sorted(t.customer_id for t in run.truth)
    for t in run.truth:
        assert run.first[t.customer_id] == ("subscriptions", "started")
        assert run.sub_events[t.customer_id][0] == (_ms(t.start_ts), "started")
        assert t.plan in PLANS and t.final_mrr > 0
        assert t.latent_health_daily and all(0 <= h <= 1 for h in t.latent_health_daily)
        assert all(round(h, 3) == h for h in t.latent_health_daily)
    # not everybody is onboarded on day 0
    day0 = sum(1 for t in run.truth if _ms(t.start_ts) < _ms(MAIN_CFG.start.isoformat()) + DAY_MS)
    assert 0.4 * len(run.truth) < day0 < 0.95 * len(run.truth)


def test_no_events_after_cancellation_except_reactivation(run: Summary) -> None:
    churners = [t for t in run.truth if t.cancelled_ts]
    assert churners
    cancelled_events = sum(1 for ev in run.sub_events.values() for _, st in ev if st == "cancelled")
    assert cancelled_events == len(churners)  # reactivated customers do not cancel twice
    for t in churners:
        c_ms = _ms(t.cancelled_ts)
        subs = run.sub_events[t.customer_id]
        assert (c_ms, "cancelled") in subs
        if t.reactivated_ts is None:
            assert run.last_ts[t.customer_id] == c_ms
            assert subs[-1] == (c_ms, "cancelled")
        else:
            r_ms = _ms(t.reactivated_ts)
            assert r_ms > c_ms
            after = [x for x in subs if x[0] > c_ms]
            assert after[0] == (r_ms, "reactivated")
            # nothing at all between the cancellation and the reactivation
            days = run.act_by_day[t.customer_id]
            assert not any(c_ms // DAY_MS < d < r_ms // DAY_MS for d in days)


def test_ticket_lifecycles_are_consistent(run: Summary) -> None:
    allowed = {
        "opened": {"updated", "resolved"},
        "updated": {"resolved", "updated"},
        "resolved": {"reopened", "closed"},
        "reopened": {"resolved", "updated"},
        "closed": set(),
    }
    assert len(run.tickets) > 200
    reopened = 0
    for tid, evs in run.tickets.items():
        cid = evs[0][0]
        assert tid.startswith(cid) and all(c == cid for c, _ in evs)
        statuses = [st for _, st in evs]
        assert statuses[0] == "opened", (tid, statuses)
        for a, b in zip(statuses, statuses[1:]):
            assert b in allowed[a], (tid, statuses)
        reopened += "reopened" in statuses
    assert 0 < reopened < 0.5 * len(run.tickets)


def test_churners_show_the_signal_before_cancelling(run: Summary) -> None:
    """Lower latent health and fewer activity events per active day in the last 30 days."""

    def last30_health(t: CustomerTruth) -> float:
        return statistics.mean(t.latent_health_daily[-30:])

    def events_per_active_day(t: CustomerTruth) -> float:
        days = run.act_by_day[t.customer_id]
        end = _ms(t.cancelled_ts) // DAY_MS if t.cancelled_ts else max(days)
        counts = [days[d] for d in range(end - 30, end + 1) if days.get(d)]
        return statistics.mean(counts) if counts else 0.0

    churn = [t for t in run.truth
             if t.cancelled_ts and not t.reactivated_ts and len(t.latent_health_daily) >= 30]
    stay = [t for t in run.truth if not t.cancelled_ts and len(t.latent_health_daily) >= 30]
    assert len(churn) >= 8 and len(stay) >= 150
    h_churn = statistics.mean(map(last30_health, churn))
    h_stay = statistics.mean(map(last30_health, stay))
    a_churn = statistics.mean(map(events_per_active_day, churn))
    a_stay = statistics.mean(map(events_per_active_day, stay))
    assert h_churn < h_stay - 0.1, (h_churn, h_stay)
    assert a_churn < 0.8 * a_stay, (a_churn, a_stay)


def test_nps_follows_health(run: Summary) -> None:
    truth = {t.customer_id: t for t in run.truth}
    pairs = [(statistics.mean(truth[c].latent_health_daily), statistics.mean(s))
             for c, s in run.nps.items()]
    assert len(pairs) > 100
    assert statistics.correlation(*zip(*pairs)) > 0.3


def test_churn_rate_per_month_is_sane(run: Summary) -> None:
    customer_months = sum(len(t.latent_health_daily) for t in run.truth) / 30.44
    rate = sum(1 for t in run.truth if t.cancelled_ts) / customer_months
    assert 0.005 <= rate <= 0.06, rate


def test_weekends_are_much_quieter(run: Summary) -> None:
    per_weekday = run.weekday_events / 5
    per_weekend_day = run.weekend_events / 2
    assert per_weekend_day < 0.4 * per_weekday


def test_volume_per_customer_day_and_activity_scale() -> None:
    def volume(scale: float) -> tuple[float, int, int]:
        sim = Simulator(SimConfig(customers=80, days=21, seed=5, activity_scale=scale))
        n = sum(1 for e in sim.events() if e.topic == "activity")
        cust_days = sum(len(t.latent_health_daily) for t in sim.truth())
        return n / cust_days, n, cust_days

    full, n_full, _ = volume(1.0)
    half, n_half, _ = volume(0.5)
    assert 5 <= full <= 40, full
    assert 0.35 < n_half / n_full < 0.65


def test_activity_vocabulary() -> None:
    sim = Simulator(SimConfig(customers=40, days=14, seed=2))
    actions: collections.Counter = collections.Counter()
    features: set[str] = set()
    counts = no_user = 0
    for e in sim.events():
        if e.topic != "activity":
            continue
        actions[e.event["action"]] += 1
        features.add(e.event.get("feature", "dashboard"))
        counts += e.event.get("count", 1) > 1
        no_user += "user_id" not in e.event
    assert {"login", "feature_used", "post", "message", "export"} <= set(actions)
    assert any(a.startswith("action_") for a in actions)
    assert features <= set(FEATURES) and len(features) >= 10
    assert counts > 0 and no_user > 0


def test_determinism() -> None:
    cfg = SimConfig(customers=50, days=20, seed=42)

    def head(c: SimConfig, n: int = 2000) -> list[SimEvent]:
        out = []
        for e in Simulator(c).events():
            out.append(e)
            if len(out) == n:
                break
        return out

    a, b = head(cfg), head(cfg)
    assert len(a) == 2000 and a == b
    assert head(SimConfig(customers=50, days=20, seed=43)) != a
    sim = Simulator(cfg)
    assert list(sim.events()) == list(sim.events())  # events() restarts from scratch


def test_write_jsonl_round_trip_and_byte_identical(tmp_path: Path) -> None:
    cfg = SimConfig(customers=20, days=10, seed=9)
    events = list(Simulator(cfg).events())
    for name in ("ev.jsonl", "ev.jsonl.gz"):
        p = tmp_path / name
        assert write_jsonl(p, iter(events)) == len(events)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(p, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert len(rows) == len(events)
        for row, e in zip(rows, events):
            assert row.pop("topic") == e.topic
            assert row == e.event
        p2 = tmp_path / ("again-" + name)
        write_jsonl(p2, Simulator(cfg).events())
        assert p.read_bytes() == p2.read_bytes()
    assert (tmp_path / "ev.jsonl.gz").read_bytes()[:2] == b"\x1f\x8b"


def test_write_truth_round_trip(tmp_path: Path) -> None:
    sim = Simulator(SimConfig(customers=10, days=5, seed=1))
    with pytest.raises(RuntimeError):
        sim.truth()
    for _ in sim.events():
        pass
    truth = sim.truth()
    p = tmp_path / "truth.jsonl"
    write_truth(p, truth)
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert [CustomerTruth(**r) for r in rows] == truth


def test_config_validation_and_timezone() -> None:
    with pytest.raises(ValueError):
        Simulator(SimConfig(customers=0))
    naive = SimConfig(customers=3, days=2, start=datetime(2026, 3, 2))
    aware = SimConfig(customers=3, days=2, start=datetime(2026, 3, 2, tzinfo=timezone.utc))
    assert list(Simulator(naive).events()) == list(Simulator(aware).events())
