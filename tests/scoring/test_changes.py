"""Change explanations: the pure diff, its compact storage, and the pipeline carrying it (real Redis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from support.harness import DAY, T0, Harness, ev
from stream_app.scoring.changes import ChangeTracker, explain_change, rescore_previous
from stream_app.state.codec import last_change_fields, load_last_change, load_previous, previous_fields
from stream_app.read.queries import customer_view
from stream_app.scoring.scorecard import Scorecard, ScorecardConfig
from stream_app.settings import Settings

GOOD = {
    "activity_vs_baseline": 1.0, "active_days_share_30d": 0.8, "days_since_last_activity": 0.5, "features_30d": 9,
    "active_users_30d": 12, "nps_mean_90d": 9.0, "csat_90d": 1.0, "open_ticket_load": 0, "reopened_30d": 0,
    "ticket_load_30d": 0, "sentiment_30d": 0.5, "mrr_change_pct_90d": 0.1, "downgrades_90d": 0,
    "tenure_days": 400, "cancelled": 0,
}
CARD = Scorecard(ScorecardConfig())


def test_components_and_factors_each_add_up_to_the_score_change() -> None:
    prev = CARD.score_signals(GOOD)
    curr = CARD.score_signals({**GOOD, "activity_vs_baseline": 0.3, "days_since_last_activity": 10,
                               "open_ticket_load": 20, "nps_mean_90d": 5.0})
    changes = explain_change(prev, curr, min_points=0.0, limit=100)
    delta = curr.score - prev.score
    assert sum(c.impact for c in changes if c.kind == "component") == pytest.approx(delta, abs=0.05)
    assert sum(c.impact for c in changes if c.kind == "factor") == pytest.approx(delta, abs=0.05)
    by_name = {c.name: c for c in changes}
    assert (by_name["activity_vs_baseline"].before, by_name["activity_vs_baseline"].after) == (1.0, 0.3)
    assert by_name["engagement"].before == 100.0 and by_name["engagement"].after < 100.0
    assert "features_30d" not in by_name or by_name["features_30d"].impact == 0  # did not move
    # strongest first, small moves left out by default
    top = explain_change(prev, curr)
    assert [abs(c.impact) for c in top] == sorted((abs(c.impact) for c in top), reverse=True)
    assert all(abs(c.impact) >= 0.5 for c in top) and len(top) <= 8


def test_no_change_no_items_and_a_dropped_component_shows_as_none() -> None:
    assert explain_change(CARD.score_signals(GOOD), CARD.score_signals(GOOD)) == []
    card = Scorecard(ScorecardConfig(missing_components="reweight"))
    prev = card.score_signals(GOOD)
    curr = card.score_signals({**GOOD, "nps_mean_90d": None, "csat_90d": None})  # satisfaction now unknown
    sat = next(c for c in explain_change(prev, curr, min_points=0.0, limit=100) if c.name == "satisfaction")
    assert (sat.before, sat.after, sat.impact) == (100.0, None, -20.0)


def test_previous_score_round_trips_in_short_fields() -> None:
    extreme = {**GOOD, "tenure_days": 12345.6, "mrr_change_pct_90d": -0.987654, "open_ticket_load": 1234.0,
               "sentiment_30d": -0.123456, "days_since_last_activity": 90.0, "csat_90d": None}
    health = CARD.score_signals(extreme)
    fields = previous_fields(health, 0.98765, 1_767_600_123_456)
    assert all(len(v) < 64 for v in fields.values()), fields  # Redis keeps the hash in listpack
    prev = load_previous(fields)
    assert prev is not None and prev.ts_ms == 1_767_600_123_000 and prev.score == round(health.score, 1)
    assert prev.churn_probability == pytest.approx(0.98765, abs=1e-4) and prev.components == pytest.approx(health.components, abs=0.05)
    assert prev.signals["csat_90d"] is None and prev.signals["tenure_days"] == pytest.approx(12300, rel=0.01)
    rescored = rescore_previous(prev, CARD, None)
    assert rescored.score == prev.score and rescored.factor_points  # factors' points re-derived
    assert load_previous({"pc": "garbage"}) is None and load_previous({}) is None


def test_last_change_fields_fit_and_round_trip() -> None:
    prev = CARD.score_signals(GOOD)
    curr = CARD.score_signals({**GOOD, "activity_vs_baseline": 0.0, "features_30d": 0, "open_ticket_load": 99,
                               "nps_mean_90d": 0.0, "mrr_change_pct_90d": -0.5, "tenure_days": 20})
    tracker_change = explain_change(prev, curr)
    from schemas import ScoreChange

    change = ScoreChange(since=T0, health_score_before=prev.score, changes=tracker_change)
    fields = last_change_fields(change, curr.score)
    assert all(len(v) < 64 for v in fields.values()), fields
    loaded = load_last_change(fields)
    assert loaded is not None and loaded["health_score_after"] == curr.score
    kept = [c["name"] for c in loaded["changes"]]  # type: ignore[index]
    assert kept and kept == [c.name for c in tracker_change][: len(kept)]  # strongest first, as many as fit


def test_tracker_loads_nothing_unless_asked() -> None:
    health = CARD.score_signals(GOOD)
    t = ChangeTracker({}, CARD, None, health)
    assert t.attach([]) == [] and t.for_snapshot(0.0) is None and t.fields(False, 0.1, 0) == {}
    assert set(t.fields(True, 0.1, 0)) == {"pc", "pr1", "pr2", "pr3", "pr4"}


def day_of_activity(cid: str, day: int, n: int, users: int = 6, features: int = 6) -> list[tuple[str, bytes]]:
    return [ev("activity", f"{cid}-{day}-{i}", T0 + day * DAY + i * timedelta(minutes=7), cid=cid, action="login",
               user_id=f"u{i % users}", feature=f"f{i % features}") for i in range(n)]


async def test_alerts_and_moving_snapshots_carry_what_changed(settings: Settings, redis_client: Any) -> None:
    h = Harness(settings.model_copy(update={"change_explain_delta": 2.0}), redis_client)
    await h.feed([ev("subscriptions", "s0", T0 - 60 * DAY, cid="acme", status="started", mrr=500, plan="growth")])
    await h.feed([ev("surveys", "n0", T0 - 30 * DAY, cid="acme", survey="nps", score=9)])
    for day in range(0, 30):
        await h.feed(day_of_activity("acme", day, 12))
    before = len(h.out.score_list)
    # things go wrong: usage collapses, urgent tickets pile up, a detractor answer
    bad: list[tuple[str, bytes]] = []
    for i in range(6):
        bad.append(ev("tickets", f"t{i}", T0 + 40 * DAY + i * timedelta(hours=1), cid="acme", ticket_id=f"k{i}",
                      status="opened", priority="urgent", sentiment=-0.8))
    bad.append(ev("surveys", "n1", T0 + 40 * DAY + timedelta(hours=8), cid="acme", survey="nps", score=1))
    bad += day_of_activity("acme", 40, 1, users=1, features=1)
    await h.feed(bad)
    alerts = [a for a in h.out.alert_list if a.ts >= T0 + 40 * DAY]
    assert alerts, "the collapse raises alerts"
    for a in alerts:
        assert a.since_previous is not None and a.since_previous.changes
        assert a.since_previous.health_score_before > a.health_score
    names = {c.name for c in alerts[0].since_previous.changes}
    assert {"support", "open_ticket_load"} <= names or {"engagement"} <= names, names
    moved = [s for s in h.out.score_list[before:] if s.since_previous is not None]
    assert moved and all(abs(s.since_previous.health_score_before - s.health_score) >= 2.0 for s in moved)
    assert all(s.churn_probability_raw is not None for s in h.out.score_list)
    # the customer's hash stays compact, and the CLI view shows the last change
    raw = await h.store.read("acme")
    assert all(len(str(v)) < 64 for v in raw.main.values())
    assert (await redis_client.object("encoding", h.store.keys("acme").main)) in (b"listpack", "listpack")
    view = await customer_view(h.store, h.settings, "acme", None)
    assert view is not None and view.health.last_change is not None
    assert view.health.last_change["health_score_after"] < view.health.last_change["health_score_before"]


async def test_small_moves_publish_without_an_explanation(settings: Settings, redis_client: Any) -> None:
    h = Harness(settings.model_copy(update={"change_explain_delta": 50.0}), redis_client)
    await h.feed([ev("subscriptions", "s0", T0 - 60 * DAY, cid="c", status="started", mrr=500)])
    for day in range(0, 10):
        await h.feed(day_of_activity("c", day, 5))
    assert len(h.out.score_list) >= 10
    assert all(s.since_previous is None for s in h.out.score_list)  # none moved 50 points
