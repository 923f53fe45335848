"""Event-time ordering: how records are batched and how topics interleave must not change
any output (state, scores, alerts, labels, model), and the learner's checkpoints are pinned
to event-time days (real Redis)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from support.harness import Harness
from support.sim import run, sim_records
from stream_app.pipeline.ordering import GroupAligner
from stream_app.model.checkpoints import ModelHolder
from stream_app.settings import Settings

@pytest.fixture
def small_model(settings: Settings) -> Settings:
    # a model that starts serving within the short history, so its pinning is exercised
    return settings.model_copy(update={"model_min_labels": 20, "model_min_positives": 2})


@pytest.mark.parametrize("tick_s", [0, 3600])
async def test_batching_and_interleaving_do_not_change_any_output(small_model: Settings, redis_client: Any,
                                                                  tick_s: int) -> None:
    logs = sim_records(customers=40, days=75, seed=3)
    small_model = small_model.model_copy(update={"score_tick_s": tick_s})
    base = small_model.key_prefix
    topic_by_topic = await run(Harness(small_model.model_copy(update={"key_prefix": base + "a:"}), redis_client),
                               logs, None)
    shuffled = await run(Harness(small_model.model_copy(update={"key_prefix": base + "b:"}), redis_client),
                         logs, random.Random(11))
    # the runs did real work: labels resolved, the model served, alerts fired
    assert len(topic_by_topic["examples"]) > 50 and topic_by_topic["model"]["labels_seen"] > 50
    assert topic_by_topic["alerts"] and topic_by_topic["scores"]
    for what in ("examples", "model", "through", "state"):
        assert topic_by_topic[what] == shuffled[what], what
    # outputs of different customers may interleave differently; each customer's are identical
    for what in ("alerts", "scores"):
        for cid in topic_by_topic["state"]:
            mine_a = [x for x in topic_by_topic[what] if x["customer_id"] == cid]
            mine_b = [x for x in shuffled[what] if x["customer_id"] == cid]
            assert mine_a == mine_b, (what, cid)


async def test_scores_use_the_checkpoint_pinned_to_the_event_day(small_model: Settings, redis_client: Any) -> None:
    logs = sim_records(customers=30, days=70, seed=5)
    h = Harness(small_model, redis_client)
    await run(h, logs, random.Random(2))
    r, p = redis_client, small_model.key_prefix
    through = int(await r.get(f"{p}model:through"))
    checkpoints = {int(m): int(sc) for m, sc in await r.zrange(f"{p}model:days", 0, -1, withscores=True)}
    assert checkpoints, "the learner wrote no checkpoint"
    for m, sc in checkpoints.items():
        assert m == sc <= through and await r.exists(f"{p}model:blob:{m}")
    # a fresh scorer process serves, for each day, the newest checkpoint written on or before
    # (day - lag), and the untrained prior before the first
    holder = ModelHolder(small_model.sections.model, small_model.key_prefix)
    await holder.load_through(r)
    lag = small_model.model_lag_days
    first, last = min(checkpoints), max(checkpoints)
    assert (await holder.for_day(r, first + lag - 1)).labels_seen == 0
    learnt = await holder.for_day(r, last + lag)
    assert learnt.labels_seen > 0 and learnt.labels_seen == h.ingestor.learner.model.labels_seen


def test_a_late_event_keeps_its_place_behind_its_partition() -> None:
    g: GroupAligner[str] = GroupAligner(["a", "b"])
    g.receive(("a", 0), 0, ts=500, item="a-500")
    g.receive(("a", 0), 1, ts=100, item="a-late-100")  # late: ordered at 500, after a-500
    g.receive(("b", 0), 0, ts=300, item="b-300")
    g.caught_up(("a", 0))
    g.caught_up(("b", 0))
    assert [p.item for p in g.release()] == ["b-300", "a-500", "a-late-100"]
    g.done(("a", 0), 1)
    assert g.tracks[("a", 0)].handled == -1  # offset 0 not done yet: progress is a prefix
    g.done(("a", 0), 0)
    assert (g.tracks[("a", 0)].handled, g.tracks[("a", 0)].wm) == (1, 500)
