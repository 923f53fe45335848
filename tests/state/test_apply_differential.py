"""The Python port of the update (``state/apply.py``) against the script it ports
(``state/lua/apply_events.lua``) on the real Redis: random event histories (hypothesis) and a
few tricky cases, every hash compared field by field after every batch, and the port's change
set (``CustomerState.changes``) replayed onto the previous state must give the new one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from importlib import resources
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from stream_app.core import DAY_MS
from stream_app.state import layout
from stream_app.state.apply import apply_events, apply_save
from stream_app.state.codec import ScoreSave
from stream_app.state.customer import N_HASHES, CustomerState, Limits
from stream_app.state.layout import ALREADY_APPLIED, APPLIED, DUPLICATE, CustomerKeys

T0_DAY = 20454  # 2026-01-01
LIMITS = Limits(max_window_days=5, dedupe_days=3, top_actions=2, ticket_retention_days=2, max_open_tickets=3,
                max_tracked_users=4, retention_ms=15 * DAY_MS)


class Lua:
    """The script on the real Redis, under a private key prefix."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix
        src = resources.files("stream_app.state").joinpath("lua/apply_events.lua").read_text()
        self.sha = client.script_load(src)

    def run(self, cid: str, events: list[list[Any]], save: ScoreSave | None, lim: Limits) -> tuple[list[int], dict[str, Any]]:
        """One script call (the save, then the events); the statuses and every key's content."""
        k = CustomerKeys.for_customer(self.prefix, cid)
        pipe = self.r.pipeline(transaction=False)
        pipe.evalsha(self.sha, 7, *k.script_keys(), lim.max_window_days, lim.dedupe_days, lim.top_actions,
                     lim.ticket_retention_days, lim.max_open_tickets, lim.max_tracked_users, orjson.dumps(events),
                     save.encode() if save is not None else b"", lim.retention_ms)
        for key in (k.main, k.days, k.seen, k.tickets, k.dedupe, k.snapshots):
            pipe.hgetall(key)
        pipe.lrange(k.outbox, 0, -1)
        pipe.pttl(k.main)
        statuses, *hashes, labels, outbox, ttl = pipe.execute()
        return [int(s) for s in statuses], {"hashes": hashes, "labels": labels, "outbox": outbox, "ttl": ttl}

    def delete(self) -> None:
        keys = list(self.r.scan_iter(match=f"{self.prefix}*", count=1000))
        if keys:
            self.r.delete(*keys)


class Mirror:
    """One customer in both: the script's keys and the port's state, plus what the port's
    writer would have written so far (label snapshots, outbox, whether the keys expire)."""

    def __init__(self, lua: Lua, cid: str, lim: Limits) -> None:
        self.lua, self.cid, self.lim = lua, cid, lim
        self.st = CustomerState.empty(cid)
        self.labels: dict[str, str] = {}
        self.outbox: list[str] = []
        self.expires = False

    def step(self, events: list[list[Any]], save: ScoreSave | None = None) -> list[int]:
        st = self.st
        before = [dict(h) for h in st.hashes]
        if save is not None:
            apply_save(st, save)
        statuses = apply_events(st, events, self.lim)
        want, redis_state = self.lua.run(self.cid, events, save, self.lim)
        where = f"{self.cid}: events {events}, save {save}"
        assert statuses == want, where
        for h, (mine, theirs) in enumerate(zip(st.hashes, redis_state["hashes"])):
            assert mine == theirs, f"hash {h} differs after {where}"
        assert st.dedupe_days == len(st.dedupe)
        self._check_changes(before, where)
        self._write()
        assert self.labels == redis_state["labels"], where
        assert self.outbox == redis_state["outbox"], where
        assert (redis_state["ttl"] > 0) == (self.expires and bool(st.main)), where
        return statuses

    def _check_changes(self, before: list[dict[str, str]], where: str) -> None:
        """The change set replayed onto the previous state gives the new state."""
        st = self.st
        for h in range(N_HASHES):
            sets, dels = st.changes(h)
            replayed = {} if st.reset else dict(before[h])
            replayed.update(sets)
            for f in dels:
                assert f not in sets
                replayed.pop(f, None)
            assert replayed == st.hashes[h], f"changes of hash {h} after {where}"

    def _write(self) -> None:
        """What the writer does with the flags (the script's DEL and PEXPIRE), then ``written``."""
        st = self.st
        if st.reset:
            self.labels.clear()
            self.expires = False
        if st.touched_day:
            self.expires = True
        self.labels.update(st.labels)
        self.outbox.extend(st.outbox)
        st.written()


@pytest.fixture(scope="module")
def lua(redis_url: str) -> Iterator[Lua]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    script = Lua(client, f"cstest:apply:{uuid.uuid4().hex[:10]}:")
    yield script
    script.delete()
    client.close()


# --- random histories --------------------------------------------------------------------------------
ACTIONS = ["login", "export", "post", "share", "invite"]
USERS = ["uAAAAAAA", "uBBBBBBB", "u-CCCCCC", "u_DDDDDD", "uEEEEEEE", "uFFFFFFF"]
FEATURES = ["reports", "Reports", "api", "sso", "billing", "a_b"]
TICKETS = ["tk000001", "tk000002", "tk000003", "tk000004", "tk000005"]
TICKET_STATUS = ["opened", "updated", "resolved", "closed", "reopened"]
SUB_STATUS = ["started", "renewed", "upgraded", "downgraded", "cancelled", "reactivated"]


class History:
    """Draws a plausible, hostile stream: topics and partitions with their offsets, a day
    cursor per customer that jumps (windows, horizons, the retention period), late events."""

    def __init__(self, draw: Any) -> None:
        self.draw = draw
        self.offsets: dict[tuple[str, int], int] = {}
        self.ids: list[str] = []

    def offset(self, kind: str) -> tuple[int, int]:
        d = self.draw
        p = d(hs.sampled_from([0, 0, 0, 1]))
        o = self.offsets.get((kind, p), -1)
        if o >= 0 and d(hs.integers(0, 9)) == 0:  # redelivered: an older offset again
            return p, max(0, o - d(hs.integers(0, 3)))
        self.offsets[(kind, p)] = o + 1
        return p, o + 1

    def event_id(self) -> str:
        if self.ids and self.draw(hs.integers(0, 7)) == 0:  # re-sent: the same event_id again
            return self.draw(hs.sampled_from(self.ids))
        eid = f"e{len(self.ids):07d}"
        self.ids.append(eid)
        return eid

    def ts(self, day: int) -> int:
        d = self.draw
        late = d(hs.sampled_from([0, 0, 0, 0, 0, 1, 2, 4, 7, 12]))
        if d(hs.integers(0, 60)) == 0:  # a bogus time before 1970 is still a late event
            return -d(hs.integers(1, 3 * DAY_MS))
        # whole hours often: equal times (tickets opened together) must tie-break alike
        return (day - late) * DAY_MS + d(hs.one_of(hs.sampled_from([0, 3_600_000, 7_200_000]), hs.integers(0, DAY_MS - 1)))

    def event(self, day: int) -> list[Any]:
        d = self.draw
        kind = d(hs.sampled_from("aaaattsb"))
        p, o = self.offset(kind)
        head = [kind, p, o, self.event_id(), self.ts(day)]
        if kind == "a":
            return head + [d(hs.sampled_from(ACTIONS)), d(hs.sampled_from(USERS + [""])),
                           d(hs.sampled_from(FEATURES + [""])), d(hs.integers(0, 300)),
                           d(hs.sampled_from([1, 1, 1, 2, 3, 10, 40]))]
        if kind == "t":
            return head + [d(hs.sampled_from(TICKETS)), d(hs.sampled_from(TICKET_STATUS)),
                           d(hs.sampled_from([0, 1, 2, 4, 8])), d(hs.one_of(hs.just(False), hs.integers(-1000, 1000)))]
        if kind == "s":
            survey = d(hs.sampled_from(["nps", "csat", "ces"]))
            top = {"nps": 10, "csat": 5, "ces": 7}[survey]
            return head + [survey, 1000 * d(hs.integers(0 if survey == "nps" else 1, top))]
        return head + [d(hs.sampled_from(SUB_STATUS)), d(hs.integers(0, 50_000)), d(hs.sampled_from(["", "pro", "team"]))]

    def save(self, day: int) -> ScoreSave:
        d = self.draw
        fields = {layout.SORT_KEY: f"{day}.{d(hs.integers(0, 99))}", layout.CHURN_P: str(d(hs.integers(0, 9999)))}
        if d(hs.booleans()):
            fields[layout.alert_last_field("drop")] = str(day * DAY_MS)
        if d(hs.integers(0, 4)) == 0:
            return ScoreSave(day=-1, score10=0, fields=fields, keep_days=0)
        sday = day - d(hs.sampled_from([0, 0, 1, 3]))
        snap = f"{sday}:{d(hs.integers(0, 86399))}" if d(hs.booleans()) else ""
        return ScoreSave(day=sday, score10=d(hs.integers(0, 1000)), fields=fields, snapshot=snap,
                         snapshot_text="[1,2,3]" if snap else "", keep_days=d(hs.integers(0, 4)),
                         outbox=[f"s{{\"d\":{sday}}}"] * d(hs.integers(0, 2)))


@hs.composite
def histories(draw: Any) -> tuple[Limits, list[tuple[int, list[list[Any]], ScoreSave | None]]]:
    lim = Limits(max_window_days=draw(hs.integers(2, 6)), dedupe_days=draw(hs.integers(1, 4)),
                 top_actions=draw(hs.integers(1, 3)), ticket_retention_days=draw(hs.integers(1, 3)),
                 max_open_tickets=draw(hs.integers(1, 3)), max_tracked_users=draw(hs.integers(2, 5)),
                 retention_ms=draw(hs.sampled_from([0, 9 * DAY_MS, 20 * DAY_MS])))
    h = History(draw)
    cursor = [T0_DAY, T0_DAY + 2, T0_DAY]
    steps = []
    for _ in range(draw(hs.integers(1, 24))):
        c = draw(hs.integers(0, 2))
        cursor[c] += draw(hs.sampled_from([0, 0, 0, 1, 1, 2, 4, 10, 25]))
        events = [h.event(cursor[c]) for _ in range(draw(hs.integers(0, 6)))]
        save = h.save(cursor[c]) if draw(hs.integers(0, 2)) == 0 else None
        steps.append((c, events, save))
    return lim, steps


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_the_port_matches_the_script_on_random_histories(lua: Lua, history: Any) -> None:
    lim, steps = history
    run = uuid.uuid4().hex[:8]
    customers = [Mirror(lua, f"{run}-c{i}", lim) for i in range(3)]
    try:
        for c, events, save in steps:
            customers[c].step(events, save)
    finally:
        lua.r.delete(*[key for m in customers for key in CustomerKeys.for_customer(lua.prefix, m.cid).all()])


# --- tricky cases ------------------------------------------------------------------------------------
@pytest.fixture
def pair(lua: Lua) -> Iterator[Any]:
    made: list[Mirror] = []

    def make(lim: Limits = LIMITS) -> Mirror:
        made.append(Mirror(lua, f"case-{uuid.uuid4().hex[:8]}", lim))
        return made[-1]

    yield make
    for m in made:
        lua.r.delete(*CustomerKeys.for_customer(lua.prefix, m.cid).all())


def at(day: int, ms: int = 0) -> int:
    return (T0_DAY + day) * DAY_MS + ms


def act(o: int, eid: str, ts: int, action: str = "login", user: str = "", feature: str = "", count: int = 1) -> list[Any]:
    return ["a", 0, o, eid, ts, action, user, feature, 10, count]


def ticket(o: int, eid: str, ts: int, tid: str, status: str, w: int = 2) -> list[Any]:
    return ["t", 0, o, eid, ts, tid, status, w, False]


def test_equally_old_open_tickets_are_dropped_by_name_whatever_the_hash_encoding(pair: Any) -> None:
    """131 tickets opened at the same time, 130 allowed: the ticket hash is past the listpack
    limit (128 fields), so HGETALL order is the hash table's; the first by name is dropped."""
    m = pair(Limits(5, 3, 2, 2, 130, 4, 0))
    names = [f"t{(i * 37) % 131:07d}" for i in range(131)]
    m.step([ticket(i, f"e{i:07d}", at(0), tid, "opened") for i, tid in enumerate(names)])
    assert len(m.st.tickets) == 130 and "kt0000000" not in m.st.tickets
    assert m.st.main[layout.OPEN_TICKETS] == "130"


def test_a_promoted_action_moves_the_demoted_slots_days_to_other(pair: Any) -> None:
    m = pair()
    m.step([act(0, "e0000000", at(0), "login", count=3), act(1, "e0000001", at(0), "post", count=2),
            act(2, "e0000002", at(1), "export", count=1)])
    assert m.st.days[str(T0_DAY)] == "20,0,3,2" and m.st.main["q:export"] == "1"
    m.step([act(3, "e0000003", at(1), "export", count=5)])  # 6 > 2: export takes post's slot
    assert m.st.main[layout.slot_name_field(1)] == "export" and m.st.main["q:post"] == "2"
    assert m.st.days[str(T0_DAY)] == "20,2,3" and m.st.days[str(T0_DAY + 1)] == "20,1,0,5"


def test_the_retention_restart_keeps_the_offsets_and_drops_the_label_snapshots(pair: Any) -> None:
    m = pair()
    m.step([act(0, "e0000000", at(0))])
    save = ScoreSave(day=T0_DAY, score10=700, fields={layout.SORT_KEY: "1.2"}, snapshot=f"{T0_DAY}:5",
                     snapshot_text="[1]", outbox=["sx"])
    # the save lands first, then the event 30 days later restarts the customer: the snapshot goes
    assert m.step([act(1, "e0000001", at(30))], save) == [APPLIED]
    assert m.st.reset is False and m.labels == {} and m.outbox == ["sx"]
    assert m.st.main[layout.SORT_KEY] == "1.2" and m.st.main[layout.EVENTS] == "1"
    assert m.step([act(1, "e0000002", at(30))]) == [ALREADY_APPLIED]


def test_the_restart_sets_reset_and_only_a_new_day_touches_the_expiry(pair: Any) -> None:
    m = pair()
    m.step([act(0, "e0000000", at(0))])
    st = m.st
    apply_events(st, [act(1, "e0000001", at(30))], LIMITS)
    assert st.reset and st.touched_day
    st.written()
    apply_events(st, [act(2, "e0000002", at(30, 5))], LIMITS)
    assert not st.reset and not st.touched_day


def test_duplicates_and_redeliveries(pair: Any) -> None:
    m = pair()
    assert m.step([act(0, "e0000000", at(0)), act(1, "e0000000", at(0)), act(1, "e0000001", at(0))]) == \
        [APPLIED, DUPLICATE, ALREADY_APPLIED]
    # another partition: its offsets start over; an id older than the dedupe horizon is not kept
    assert m.step([["a", 1, 0, "e0000002", at(0), "login", "", "", 0, 1], act(2, "e0000003", at(10))]) == \
        [APPLIED, APPLIED]
    assert m.step([act(3, "e0000004", at(1)), act(4, "e0000004", at(1))]) == [APPLIED, APPLIED]
    assert m.st.main[layout.DUPLICATES] == "1"


def test_the_newest_mrr_point_before_the_horizon_is_kept(pair: Any) -> None:
    m = pair(Limits(5, 3, 2, 2, 3, 4, 0))
    sub = [["b", 0, i, f"e{i:07d}", at(d), status, 100 * (i + 1), ""]
           for i, (d, status) in enumerate([(0, "started"), (1, "cancelled"), (2, "reactivated")])]
    m.step(sub)
    m.step([act(0, "e0000010", at(20))])
    points = sorted(f for f in m.st.main if layout.day_bucket(f, layout.MRR_POINT_DAY))
    assert points == [f"m{T0_DAY + 2}"] and m.st.main[points[0]].endswith(",300,1")


def test_times_before_1970_floor_to_negative_days(pair: Any) -> None:
    m = pair(Limits(5, 3, 2, 2, 3, 4, 0))
    m.step([ticket(0, "e0000000", -1, "tk000001", "opened"), ["s", 0, 0, "e0000001", -DAY_MS - 1, "nps", 9000],
            ["b", 0, 0, "e0000002", -5, "started", 10, "pro"]])
    assert "s-2" in m.st.main and "t-1" in m.st.main and "m-1" in m.st.main


def test_a_resolution_before_its_opening_counts_on_the_resolution_day(pair: Any) -> None:
    m = pair(Limits(5, 3, 2, 2, 3, 4, 0))
    m.step([ticket(0, "e0000000", at(2, 5000), "tk000001", "resolved")])
    m.step([ticket(1, "e0000001", at(1), "tk000001", "opened")])  # late: the ticket is done
    assert m.st.tickets["ktk000001"] == f"r,{at(1)},{at(2, 5000)},2"
    assert m.st.main[f"t{T0_DAY + 2}"] == f"0,1,0,0,{DAY_MS // 1000 + 5},1"
