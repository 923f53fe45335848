"""Delayed labels with an event-time watermark, the single learner, checkpoint and restore (real Redis)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from support.harness import DAY, T0, Harness, ev
from stream_app.model.features import slog
from stream_app.model.churn import ChurnModel
from stream_app.settings import Settings


@pytest.fixture
def lh(settings: Settings, redis_client: Any) -> Harness:
    s = settings.model_copy(update={"label_horizon_days": 30, "snapshot_every_days": 7, "label_resolve_interval_s": 0.0})
    return Harness(s, redis_client)


def activity(cid: str, day: int, n: int = 1) -> list[tuple[str, bytes]]:
    return [ev("activity", f"{cid}-{day}-{i}", T0 + day * DAY + i * timedelta(minutes=5), cid=cid, action="login")
            for i in range(n)]


async def test_positive_waits_for_its_horizon_like_negatives(lh: Harness) -> None:
    # day 0: both customers get a snapshot
    await lh.feed(activity("stay", 0) + activity("churn", 0))
    assert lh.ingestor.scorer.stats.snapshots == 2
    # day 10: "churn" cancels. Its label is now known, but it must not be learnt before day 30
    await lh.feed([ev("subscriptions", "cx", T0 + 10 * DAY, cid="churn", status="cancelled", mrr=0)]
                  + activity("stay", 10))
    assert lh.out.example_list == []
    # day 29: horizon not passed yet
    await lh.feed(activity("stay", 29))
    assert lh.out.example_list == []
    # day 31: both day-0 snapshots resolve together: one positive, one negative
    await lh.feed(activity("stay", 31))
    got = {e["customer_id"]: e["y"] for e in lh.out.example_list}
    assert got == {"churn": True, "stay": False}
    assert all(e["x"]["health_score"] >= 0 for e in lh.out.example_list)


async def test_watermark_is_the_slowest_partition(lh: Harness) -> None:
    await lh.feed(activity("a", 0), partition=0)
    # the billing partition is behind: more records wait in its log
    await lh.feed([ev("subscriptions", "s0", T0, cid="b", status="started", mrr=10)], partition=1, lag=5)
    # partition 0 runs 40 days ahead; the subscriptions partition is still at day 0
    await lh.feed(activity("a", 40), partition=0)
    assert lh.out.example_list == []
    # a late cancellation (day 20, out of order with the activity already seen) arrives, then the
    # billing partition catches up: the snapshot of "b" resolves positive
    await lh.feed([ev("subscriptions", "s1", T0 + 20 * DAY, cid="b", status="cancelled", mrr=0),
                   ev("subscriptions", "s2", T0 + 35 * DAY, cid="z", status="started", mrr=10)], partition=1)
    got = {e["customer_id"]: e["y"] for e in lh.out.example_list}
    assert got["b"] is True and got["a"] is False


async def test_idle_sparse_partition_does_not_stall_the_watermark(lh: Harness) -> None:
    await lh.feed([ev("subscriptions", "s0", T0, cid="a", status="started", mrr=10)])  # caught up: idle
    await lh.feed(activity("a", 0))
    await lh.feed(activity("a", 35))
    assert [e["customer_id"] for e in lh.out.example_list] == ["a"]


async def test_snapshots_at_most_every_n_days_and_none_after_cancellation(lh: Harness) -> None:
    for day in range(0, 20):
        await lh.feed(activity("c", day))
    assert lh.ingestor.scorer.stats.snapshots == 3  # days 0, 7, 14
    await lh.feed([ev("subscriptions", "x", T0 + 20 * DAY, cid="c", status="cancelled", mrr=0)])
    await lh.feed(activity("c", 28))
    assert lh.ingestor.scorer.stats.snapshots == 3


def test_prior_until_enough_labels_and_until_beaten() -> None:
    m = ChurnModel(min_labels=10, min_positives=2, warmup=10, window=200)
    p_sick, version = m.predict_one({"health_score": 10.0})
    p_well, _ = m.predict_one({"health_score": 90.0})
    assert version == "prior-health-v1" and p_sick > 0.5 > p_well
    # labels the prior ranks perfectly: no learnt model can beat it, the prior keeps serving
    for i in range(40):
        m.learn_one({"health_score": 10.0 if i % 4 == 0 else 90.0}, y=i % 4 == 0)
    assert m.decide() == "prior" and m.ready
    # churn that health does not explain (here: tenure does): a learnt model takes over at
    # the next checkpoint (``decide``), not in the middle of one
    for i in range(400):
        churn = i % 4 == 0
        m.learn_one({"health_score": 50.0 + (i % 7), "tenure_days": 10.0 if churn else 400.0}, y=churn)
    assert m.champion == "prior"
    serving = m.decide()
    assert serving != "prior" and m.predict_one({"health_score": 50.0, "tenure_days": 10.0})[1].startswith("online-")
    summary = m.summary()
    assert summary["labels_seen"] == 440 and set(summary["prequential"]) == {"logreg", "residual", "prior"}
    assert summary["prequential"][serving]["roc_auc"] > summary["prequential"]["prior"]["roc_auc"] + 0.01


def test_linear_explanation_is_coefficient_times_standardised_value() -> None:
    m = ChurnModel(min_labels=10, min_positives=2, warmup=10)
    for i in range(300):
        sick = i % 5 == 0
        m.learn_one({"health_score": 60.0 + i % 3, "tenure_days": 10.0 if sick else 300.0}, y=sick)
    serving = m.decide()
    assert serving in ("logreg", "residual")
    x = {"health_score": 61.0, "tenure_days": 5.0}
    (feature, value, contribution), *_ = m.explain(x)
    lr = m.candidates[serving]
    scaled = lr.scaler.transform_one({k: slog(v) for k, v in x.items()})
    assert feature == "tenure_days" and value == 5.0  # short tenure pushes the risk up
    assert contribution == lr.weights["tenure_days"] * scaled["tenure_days"] > 0


async def test_a_topic_running_ahead_does_not_make_a_customer_look_idle(lh: Harness) -> None:
    """Billing (sparse) is consumed months ahead of a backlogged activity topic."""
    await lh.feed([ev("subscriptions", "s0", T0, cid="c", status="started", mrr=100)])
    for day in range(0, 30):
        await lh.feed(activity("c", day, n=3), lag=1000)  # the activity partition is far behind its log end
    await lh.feed([ev("subscriptions", "s1", T0 + 90 * DAY, cid="c", status="renewed", mrr=100)])
    raw = await lh.store.read("c")
    assert raw.main["hb"] != "red"  # judged at the activity watermark (day 29), not at day 90
    assert not [a for a in lh.out.alert_list if a.kind == "churn_risk"]
    assert lh.out.score_list[-1].ts.date() == (T0 + 29 * DAY).date()
