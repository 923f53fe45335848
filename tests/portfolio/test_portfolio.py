"""Portfolio KPIs kept live in a real Redis: idempotent replacement, replays through the
pipeline (Ingestor -> Redis -> Scorer -> portfolio) checked against the batch reference."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from click.testing import CliRunner
from support.harness import Harness, ev

from stream_app.tools.cli.main import main as cli_main
from stream_app.portfolio.cohorts import cohort_table
from stream_app.portfolio.contributions import Contribution, EventFacts, ScoreFacts
from stream_app.core import Record
from stream_app.portfolio.kpi_batch import EVENT_FIELDS, reference_sums
from stream_app.portfolio.lifecycle import STAGES
from stream_app.portfolio.periods import Period, month_of, parse_label
from stream_app.portfolio.reports import read_meta
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.portfolio.segments import FEATURES
from stream_app.settings import Settings
from stream_app.tools.simulator import SimConfig, Simulator

JAN = parse_label("2026-01")
FEB, MAR, APR = JAN.next(), JAN.next(2), JAN.next(3)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def tracker_of(h: Harness) -> PortfolioTracker:
    return h.ingestor.scorer.portfolio


def sim_events(customers: int, days: int, seed: int) -> list[dict[str, Any]]:
    sim = Simulator(SimConfig(customers=customers, days=days, seed=seed, activity_scale=0.02,
                              start=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    return [dict(e.event, topic=e.topic) for e in sim.events()]


async def feed_all(h: Harness, events: list[dict[str, Any]], batch: int = 150) -> list[Record]:
    """Feed the events in batches; returns the last batch's records."""
    recs: list[Record] = []
    for i in range(0, len(events), batch):
        recs = await h.feed([(e["topic"], json.dumps({k: v for k, v in e.items() if k != "topic"}).encode())
                             for e in events[i:i + batch]])
    return recs


async def all_sums(t: PortfolioTracker, redis: Any, periods: list[Period]) -> dict[Period, dict[str, dict[str, int]]]:
    return await t.sums(redis, periods)


def event_part(groups: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The '*' and cohort groups, event-derived fields only (what the reference computes)."""
    out = {}
    for g, fields in groups.items():
        if g == "*" or g.startswith("c"):
            kept = {f: v for f, v in fields.items() if f in EVENT_FIELDS and v}
            if kept:
                out[g] = kept
    return out


def rec(p: Period, a0: bool, a1: bool, m0: int, m1: int, seg: str = "seg0", **kw: int) -> str:
    return Contribution(p, EventFacts(a0=a0, a1=a1, m0=m0, m1=m1, **kw),
                        ScoreFacts(health10=700, band="green", stage="established", segment=seg)).encode()


async def test_replacing_a_contribution_is_idempotent(settings: Settings, redis_client: Any) -> None:
    t = PortfolioTracker(settings)
    writes = [(FEB, "a", rec(FEB, True, True, 100, 150, up=1)), (FEB, "b", rec(FEB, True, False, 200, 0, nps=1, det=1)),
              (MAR, "a", rec(MAR, True, True, 150, 150))]
    assert await t.apply_records(redis_client, writes) == 3
    first = await all_sums(t, redis_client, [FEB, MAR])
    assert first[FEB]["*"]["a0"] == 2 and first[FEB]["*"]["lost"] == 1 and first[FEB]["*"]["m0"] == 300
    assert first[FEB]["seg0"]["a0"] == 2
    # the same records again (a replay): nothing changes
    assert await t.apply_records(redis_client, writes) == 0
    assert await all_sums(t, redis_client, [FEB, MAR]) == first
    # a corrected record replaces the old one: only its delta reaches the sums
    assert await t.apply_records(redis_client, [(FEB, "b", rec(FEB, True, True, 200, 180, seg="seg1"))]) == 1
    now = (await all_sums(t, redis_client, [FEB]))[FEB]
    assert now["*"].get("lost", 0) == 0
    assert now["*"]["a1"] == 2 and now["*"]["m1"] == 330 and "nps" not in now["*"]
    assert now["seg0"]["a0"] == 1 and now["seg1"]["a0"] == 1  # b moved segment
    # carry-in mode never overwrites a real record; an empty record deletes
    assert await t.apply_records(redis_client, [(FEB, "b", rec(FEB, True, True, 1, 1))], mode="n") == 0
    assert await t.apply_records(redis_client, [(FEB, "b", "")]) == 1
    now = (await all_sums(t, redis_client, [FEB]))[FEB]
    assert now["*"] == {"a0": 1, "a1": 1, "m0": 100, "m1": 150, "rm": 150, "gm": 100, "xm": 50, "xc": 1, "up": 1,
                        "sc": 1, "hs": 700, "g": 1, "s_established": 1}
    assert "seg1" not in now  # sums that return to 0 are removed
    # versions: a record computed from an older state of the customer never replaces a newer one
    assert await t.apply_records(redis_client, [(MAR, "v", rec(MAR, True, True, 7, 7), 7)]) == 1
    assert await t.apply_records(redis_client, [(MAR, "v", rec(MAR, True, True, 6, 6), 6)]) == 0
    assert await t.apply_records(redis_client, [(None, "v", "", 8), (MAR, "v", rec(MAR, True, True, 7, 7), 7)]) == 0
    assert (await all_sums(t, redis_client, [MAR]))[MAR]["*"]["m1"] == 150 + 7
    assert await t.apply_records(redis_client, [(MAR, "v", rec(MAR, True, True, 9, 9), 8)]) == 1  # same version: a re-score
    assert (await all_sums(t, redis_client, [MAR]))[MAR]["*"]["m1"] == 150 + 9
    # a period below the floor is closed: its contributions are gone, writing would double count
    await redis_client.hset(t.keys.meta, "floor:month", MAR.label)
    assert await t.apply_records(redis_client, [(FEB, "c", rec(FEB, True, True, 5, 5))]) == 0


async def test_replay_through_the_pipeline_matches_the_batch_reference(settings: Settings, redis_client: Any) -> None:
    # de-duplication horizon beyond the history, so that re-sending all of it is exactly idempotent
    h = Harness(settings.model_copy(update={"dedupe_days": 200}), redis_client)
    events = sim_events(customers=40, days=150, seed=11)
    last = await feed_all(h, events)
    t = tracker_of(h)
    ref = reference_sums(events)
    periods = sorted(ref)
    assert {p.kind for p in periods} == {"month", "quarter"} and len(periods) == 5 + 2
    live = await all_sums(t, redis_client, periods)
    for p in periods:
        assert event_part(live[p]) == {g: {f: v for f, v in s.items() if v} for g, s in ref[p].items()}, p.label
    # the cohort table is the reference's
    now_m = month_of(max(int(datetime.fromisoformat(e["ts"]).timestamp() * 1000) for e in events))
    months = {p.index: g for p, g in ref.items() if p.kind == "month"}
    assert await t.cohorts(redis_client) == cohort_table(months, now_m)
    # segments partition everyone
    for p in periods:
        segs = [s for g, s in live[p].items() if g.startswith("seg")]
        assert {f: sum(s.get(f, 0) for s in segs) for f in live[p]["*"]} == live[p]["*"]
    # the whole history re-sent (a producer retry, new offsets): every event is a duplicate
    await feed_all(h, events)
    assert await all_sums(t, redis_client, periods) == live
    # redelivery of the last records after a crash (progress lost): recognised, re-scored, no change
    for topic in ("activity", "tickets", "surveys", "subscriptions"):
        await redis_client.delete(h.store._progress_key(h.settings.topic(topic), 0))
    await h.ingestor.handle(last)
    assert h.ingestor.stats.total("redelivered") >= len(last)
    again = await all_sums(t, redis_client, periods)
    assert {p: again[p]["*"] for p in periods} == {p: live[p]["*"] for p in periods}


async def test_a_late_event_restates_the_closed_month(h: Harness, redis_client: Any) -> None:
    await h.feed([ev("subscriptions", "b1", T0, status="started", mrr=100),
                  ev("activity", "a1", T0 + 30 * DAY, action="login")])  # Feb 4: January is closed
    t = tracker_of(h)
    before = await all_sums(t, redis_client, [JAN, FEB])
    assert "csat" not in before[JAN]["*"]
    await h.feed([ev("surveys", "s-late", T0 + 25 * DAY, survey="csat", score=5)])  # Jan 30, arriving late
    after = await all_sums(t, redis_client, [JAN, FEB, JAN.next(0)])
    assert after[JAN]["*"]["csat"] == 1 and after[JAN]["*"]["sat"] == 1
    assert "csat" not in after[FEB]["*"]
    q1 = (await all_sums(t, redis_client, [Period("quarter", JAN.index // 3)]))[Period("quarter", JAN.index // 3)]
    assert q1["*"]["csat"] == 1
    # the same late event again: nothing changes
    await h.feed([ev("surveys", "s-late", T0 + 25 * DAY, survey="csat", score=5)])
    assert await all_sums(t, redis_client, [JAN, FEB]) == {JAN: after[JAN], FEB: after[FEB]}


async def test_a_silent_customer_is_carried_into_new_periods(h: Harness, redis_client: Any) -> None:
    await h.feed([ev("subscriptions", "q1", T0, cid="quiet", status="started", mrr=100),
                  ev("subscriptions", "b1", T0, cid="busy", status="started", mrr=50)])
    # only "busy" sends events for three months: event time moves on, "quiet" says nothing
    for i, day in enumerate(range(20, 100, 10)):
        await h.feed([ev("activity", f"a{i}", T0 + day * DAY, cid="busy", action="login")])
    t = tracker_of(h)
    sums = await all_sums(t, redis_client, [FEB, MAR, APR])
    for p in (FEB, MAR):
        assert sums[p]["*"]["a0"] == 2 and sums[p]["*"]["a1"] == 2 and sums[p]["*"]["m1"] == 15000, p.label
    meta = await read_meta(redis_client, t.keys)
    assert meta.rolled["month"] == APR.index
    # quiet cancels in April: lost there, and not carried further
    await h.feed([ev("subscriptions", "q2", T0 + 95 * DAY, cid="quiet", status="cancelled", mrr=0)])
    apr = (await all_sums(t, redis_client, [APR]))[APR]["*"]
    assert apr["lost"] == 1 and apr["lm"] == 10000 and apr["a1"] == 1
    # a second rollover pass over the same months carries nothing more
    carried = t.stats.carried
    await t.rollover(redis_client, APR.index, meta.__class__(rolled={"month": JAN.index, "quarter": 0}))
    assert (await all_sums(t, redis_client, [FEB, MAR, APR])) == {**sums, APR: (await all_sums(t, redis_client, [APR]))[APR]}
    assert t.stats.carried == carried


async def test_score_facts_are_the_customers_latest_scores(h: Harness, redis_client: Any) -> None:
    await feed_all(h, sim_events(customers=30, days=75, seed=3))
    t = tracker_of(h)
    now_m = await t.now_month(redis_client)
    assert now_m is not None
    p = Period("month", now_m)
    s = (await all_sums(t, redis_client, [p]))[p]["*"]
    members = [m.decode() for m in (await redis_client.hkeys(t.keys.contributions(p)))]
    ids = await h.store.customer_ids()
    raws = {r.customer_id: r.main for r in await h.store.read_many(ids)}
    active = [m for c, m in raws.items() if m.get("st") not in (None, "cancelled")]
    assert s["sc"] == len(active) == s["a1"]
    assert s["hs"] == sum(int(m["hs"]) for m in active)
    assert s.get("r", 0) == sum(1 for m in active if m["hb"] == "red")
    assert s.get("g", 0) == sum(1 for m in active if m["hb"] == "green")
    risky = [m for m in active if m["hb"] == "red" or float(m["cp"]) >= h.settings.risk_alert_threshold]
    assert s.get("risk", 0) == len(risky) and s.get("mar", 0) == sum(int(m["mrr"]) for m in risky)
    for stage in STAGES:
        assert s.get(f"s_{stage}", 0) == sum(1 for c in members if raws[c].get("ls") == stage), stage


async def test_stage_changes_go_into_cs_scores(h: Harness) -> None:
    start = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    await h.feed([ev("subscriptions", "s0", start, status="started", mrr=100)])
    for i in range(1, 29):
        await h.feed([ev("activity", f"a{i}", start + i * DAY, action="login", user_id="u1", feature="f1")])
    await h.feed([ev("activity", "before", start + 30 * DAY - timedelta(minutes=2), action="login", user_id="u1")])
    n = len(h.out.score_list)
    assert h.out.score_list[-1].lifecycle_stage == "onboarding"
    await h.feed([ev("activity", "after", start + 30 * DAY + timedelta(minutes=2), action="login", user_id="u1")])
    # the same day, the score barely moved: only the stage change publishes a snapshot
    assert len(h.out.score_list) == n + 1
    last = h.out.score_list[-1]
    assert last.lifecycle_stage == "adopting"
    assert abs(last.health_score - h.out.score_list[-2].health_score) < h.settings.score_publish_delta
    wire = json.loads(last.model_dump_json())
    assert wire["lifecycle_stage"] == "adopting"


def run_cli(settings: Settings, *args: str) -> Any:
    """The real command line, in a subprocess."""
    env = {**os.environ, "REDIS_URL": settings.redis_url or "", "KEY_PREFIX": settings.key_prefix}
    out = subprocess.run([sys.executable, "-m", "stream_app.tools.cli", *args], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout


async def invoke(settings: Settings, *args: str) -> str:
    """The same commands in-process (the CLI runs its own event loop: in a thread)."""
    env = {"REDIS_URL": settings.redis_url or "", "KEY_PREFIX": settings.key_prefix}
    result = await asyncio.to_thread(CliRunner().invoke, cli_main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


async def test_cli_prints_the_kpis_cohorts_and_segments(h: Harness, redis_client: Any) -> None:
    await feed_all(h, sim_events(customers=25, days=70, seed=4))
    t = tracker_of(h)
    data = json.loads(run_cli(h.settings, "kpis", "--json", "--periods", "2"))
    assert data["period"] == "month" and [k["period"] for k in data["periods"]] == ["2026-02", "2026-03"]
    assert data["periods"] == [k.model_dump(mode="json") for k in await t.report(redis_client, "month", 2)]
    assert data["periods"][-1]["partial"] is True and data["periods"][0]["partial"] is False
    q = json.loads(await invoke(h.settings, "kpis", "--json", "--period", "quarter", "--periods", "1"))
    assert q["periods"][0]["period"] == "2026Q1"
    seg = next(g for g in (await t.sums(redis_client, [MAR]))[MAR] if g.startswith("seg"))
    one = json.loads(await invoke(h.settings, "kpis", "--json", "--segment", seg, "--periods", "1"))
    assert one["periods"][0]["segment"] == seg and one["periods"][0]["customers_end"] >= 1
    cohorts = json.loads(await invoke(h.settings, "cohorts", "--json"))
    assert cohorts[0]["cohort"] == "2026-01" and cohorts[0]["size"] > 0 and len(cohorts[0]["retention"]) == 2
    segments = json.loads(await invoke(h.settings, "segments", "--json"))
    assert len(segments) == t.cfg.segments.k and all(len(s["traits"]) == 3 for s in segments)
    table = await invoke(h.settings, "kpis")
    assert "net revenue retention" in table and "2026-03 (so far)" in table
    assert "2026-01" in await invoke(h.settings, "cohorts")


async def test_status_at_month_end_from_day_buckets_matches_the_events(h: Harness, redis_client: Any) -> None:
    """The closed month is restated from day buckets after newer subscription events: a renewal
    and a cancellation on the same day are ordered by the day's latest event."""
    jan20 = datetime(2026, 1, 20, tzinfo=timezone.utc)
    items = [
        # x: renewed then cancelled on Jan 20 (inactive at January's end), reactivated in February
        ("subscriptions", "x0", T0, "x", "started", 100), ("subscriptions", "x1", jan20 + 9 * HOUR, "x", "renewed", 100),
        ("subscriptions", "x2", jan20 + 15 * HOUR, "x", "cancelled", 0),
        # y: cancelled then, later that day, renewed (active at January's end)
        ("subscriptions", "y0", T0, "y", "started", 200), ("subscriptions", "y1", jan20 + 9 * HOUR, "y", "cancelled", 0),
        ("subscriptions", "y2", jan20 + 15 * HOUR, "y", "renewed", 200),
        ("surveys", "ys", jan20 + 16 * HOUR, "y", "nps", 10),
        ("subscriptions", "x3", T0 + 36 * DAY, "x", "reactivated", 80), ("subscriptions", "y3", T0 + 37 * DAY, "y", "upgraded", 250),
    ]
    events = []
    for topic, eid, at, cid, what, value in items:
        fields = {"survey": what, "score": value} if topic == "surveys" else {"status": what, "mrr": value}
        events.append({"topic": topic, "event_id": eid, "customer_id": cid, "ts": at.isoformat(), **fields})
    # January is scored before the February events arrive, then restated after them
    await feed_all(h, events[:7], batch=7)
    await feed_all(h, events[7:], batch=2)
    live = await all_sums(tracker_of(h), redis_client, [JAN, FEB])
    ref = reference_sums(events)
    for p in (JAN, FEB):
        assert event_part(live[p]) == {g: {f: v for f, v in s.items() if v} for g, s in ref[p].items()}, p.label
    assert live[JAN]["*"]["a1"] == 1 and live[FEB]["*"]["a0"] == 1 and live[FEB]["*"]["new"] == 1


HOUR = timedelta(hours=1)


async def test_a_reactivation_older_than_the_window_still_counts_at_month_start(h: Harness, redis_client: Any) -> None:
    """Found by the 2,000-customer bench: cancelled in January, reactivated in early April,
    renewed monthly. By July the April day bucket is pruned (90-day window); the May record,
    still restated then, must keep "active at May 1" (the MRR point kept before the window
    says so), not fall back on the January cancellation."""
    d = lambda m, day: datetime(2026, m, day, 10, tzinfo=timezone.utc)  # noqa: E731
    subs = [("started", d(1, 1), 75), ("cancelled", d(1, 5), 0), ("reactivated", d(4, 4), 60),
            ("renewed", d(5, 4), 60), ("renewed", d(6, 3), 60), ("downgraded", d(6, 24), 45), ("renewed", d(7, 3), 45)]
    events = [{"topic": "subscriptions", "event_id": f"b{i}", "customer_id": "r", "ts": at.isoformat(),
               "status": status, "mrr": mrr} for i, (status, at, mrr) in enumerate(subs)]
    events += [{"topic": "activity", "event_id": f"a{i}", "customer_id": "r", "ts": (d(4, 5) + i * 3 * DAY).isoformat(),
                "action": "login"} for i in range(30)]
    events.sort(key=lambda e: e["ts"])
    await feed_all(h, events, batch=3)
    may, jun = APR.next(), APR.next(2)
    live = await all_sums(tracker_of(h), redis_client, [APR, may, jun])
    ref = reference_sums(events)
    for p in (APR, may, jun):
        assert event_part(live[p]) == {g: {f: v for f, v in s.items() if v} for g, s in ref[p].items()}, p.label
    assert live[may]["*"]["a0"] == 1 and "new" not in event_part(live[may])["*"]


async def test_an_older_state_never_overwrites_a_newer_one(h: Harness, redis_client: Any) -> None:
    """Two refreshes of one customer run concurrently (a worker's agents share the scorer):
    the one that read the state before the other's events finishes last, and is ignored."""
    await h.feed([ev("subscriptions", "s0", T0, status="started", mrr=100)])
    stale = await h.store.read("acme")
    await h.feed([ev("subscriptions", "s1", T0 + DAY, status="upgraded", mrr=300)])
    t = tracker_of(h)
    newer = await all_sums(t, redis_client, [JAN])
    assert newer[JAN]["*"]["m1"] == 30000
    from stream_app.scoring.aggregates import compute_aggregates

    as_of = int(stale.main["lts"])
    agg = compute_aggregates(stale, as_of, h.settings.windows_days)
    health = h.ingestor.scorer.scorecard.score(agg)
    await t.update(redis_client, [t.item("acme", as_of, stale, health, t.assess(agg, health, 0.01))])
    assert await all_sums(t, redis_client, [JAN]) == newer


async def test_batching_and_interleaving_do_not_change_the_portfolio(settings: Settings, redis_client: Any) -> None:
    """The same input gives the same portfolio, segments included, however it is batched."""
    import random

    from support.sim import run, sim_records

    logs = sim_records(customers=30, days=70, seed=8)
    base = settings.key_prefix
    out = []
    for name, rng in (("a:", None), ("b:", random.Random(5))):
        h = Harness(settings.model_copy(update={"key_prefix": base + name}), redis_client)
        await run(h, logs, rng)
        t = tracker_of(h)
        periods = [JAN, FEB, MAR, Period("quarter", JAN.index // 3)]
        sums = await all_sums(t, redis_client, periods)
        assert any(g.startswith("seg") for g in sums[MAR]) and sums[MAR]["*"]["a1"] > 10
        await t.segments.advance(redis_client)  # the days the learner completed last
        out.append((sums, t.segments.through, [i.as_dict() for i in await t.describe_segments(redis_client)]))
    assert out[0] == out[1]


async def test_another_worker_or_a_restart_has_the_same_segments(h: Harness, redis_client: Any) -> None:
    await feed_all(h, sim_events(customers=30, days=60, seed=6))
    t = tracker_of(h)
    await t.segments.advance(redis_client)
    assert t.segments.through is not None and t.segments.model.n > 100
    fresh = PortfolioTracker(h.settings)  # a restarted worker, or a second one
    await fresh.segments.advance(redis_client)
    assert fresh.segments.through == t.segments.through
    assert fresh.segments.model.to_bytes() == t.segments.model.to_bytes()
    # a scoring is assigned by the model pinned to its day, whoever assigns it
    obs = {f: 0.3 + 0.05 * i for i, f in enumerate(FEATURES)}
    day = t.segments.through + h.settings.model_lag_days + 1
    assert fresh.segments.model_for(day).assign(obs, learn=False) == t.segments.model_for(day).assign(obs, learn=False)


async def test_days_without_observations_pass_in_one_step(settings: Settings, redis_client: Any) -> None:
    """A stray event years before the rest (it passes validation: only the future is bounded)
    must not make the segmentation walk those years day by day: a day without observations
    changes nothing, gets no checkpoint, and is served the checkpoint before it."""
    from stream_app.portfolio.periods import DAY_MS
    from stream_app.portfolio.segment_days import KEEP_DAYS

    seg = PortfolioTracker(settings).segments
    r = redis_client

    def obs(i: int) -> dict[str, float]:
        return {f: (0.1 + 0.07 * i + 0.03 * j) % 1 for j, f in enumerate(FEATURES)}

    early, late = 10, 3000  # eight years apart
    await seg.observe(r, [(early * DAY_MS + 1000 * i, f"c{i}", obs(i)) for i in range(6)])
    await seg.observe(r, [(late * DAY_MS + 1000 * i, f"c{i}", obs(i + 3)) for i in range(6)])
    calls = 0
    real = r.execute_command

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await real(*args, **kwargs)

    r.execute_command = counted  # type: ignore[method-assign]
    await r.set(seg.k_through, late + 1)  # the churn learner completed day `late`
    try:
        learnt = await seg.advance(r)
    finally:
        del r.execute_command
    assert learnt == 2 and seg.through == late
    assert calls <= 10  # not one round trip per day of the gap
    days = [int(d) for d in await r.zrange(seg.k_days, 0, -1)]
    assert days == [early, late]
    early_model = seg.model_for(early + settings.model_lag_days + 1)
    probe = obs(1)
    # a day in the gap is assigned by the early day's model
    assert seg.model_for(early + 500).assign(probe, learn=False) == early_model.assign(probe, learn=False)
    assert seg.model_for(early + 500).to_bytes() == early_model.to_bytes()

    # far beyond: both checkpoints are older than KEEP_DAYS; the newest of them stays, and a
    # restarted worker resumes from it with the same model
    await r.set(seg.k_through, late + 10 * KEEP_DAYS)
    assert await seg.advance(r) == 0 and seg.through == late + 10 * KEEP_DAYS - 1
    assert [int(d) for d in await r.zrange(seg.k_days, 0, -1)] == [late]
    assert not await r.exists(seg.k_obs(early)) and not await r.exists(seg.k_blob(early))
    fresh = PortfolioTracker(settings).segments
    await fresh.advance(r)
    assert fresh.through == seg.through and fresh.model.to_bytes() == seg.model.to_bytes()
    day = late + 5 * KEEP_DAYS
    assert fresh.model_for(day).assign(probe, learn=False) == seg.model_for(day).assign(probe, learn=False)
