"""Event-time ordering: how records are batched and how topics interleave must not change
any output (state, scores, alerts, labels, model), and the learner's checkpoints are pinned
to event-time days (real Redis)."""

from __future__ import annotations

import random
import zlib
from typing import Any

import orjson
import pytest

from support.harness import Harness
from support.sim import run, sim_records, snapshot_of
from stream_app.pipeline.ingest import Ingestor
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


async def test_four_workers_in_one_group_give_the_state_of_one(small_model: Settings, redis_client: Any) -> None:
    """Eight partitions owned by one ingestor, or by four (two each, each keeping its own
    customers in memory, one of them running the learner), fed interleaved: the same state,
    model, labels and, per customer, the same outputs."""
    logs: dict[tuple[str, int], list[bytes]] = {}
    for (topic, _), values in sim_records(customers=40, days=60, seed=5).items():
        for v in values:
            cid = orjson.loads(v)["customer_id"]
            logs.setdefault((topic, zlib.crc32(cid.encode()) % 8), []).append(v)
    base = small_model.key_prefix
    one = await run(Harness(small_model.model_copy(update={"key_prefix": base + "a:"}), redis_client), logs, None)

    h = Harness(small_model.model_copy(update={"key_prefix": base + "b:"}), redis_client)
    workers = [h.ingestor] + [Ingestor(h.store, h.settings, h.out, clock=lambda: h.clock_s, inline_learner=False)
                              for _ in range(3)]
    owner = {p: workers[p % 4] for p in range(8)}
    for i, w in enumerate(workers):
        await w.assign({(h.settings.topic(t), p): len(log) for (t, p), log in logs.items() if p % 4 == i})
    cursor = {tp: 0 for tp in logs}
    rng = random.Random(4)
    while any(cursor[tp] < len(log) for tp, log in logs.items()):
        tp = rng.choice([tp for tp in sorted(logs) if cursor[tp] < len(logs[tp])])
        chunk = logs[tp][cursor[tp]: cursor[tp] + rng.randint(1, 200)]
        cursor[tp] += len(chunk)
        await owner[tp[1]].handle(h.records([(tp[0], v) for v in chunk], tp[1], len(logs[tp]) - cursor[tp]))
    for _ in range(200):  # what the last batches left held: released as the others' progress moves
        for w in workers:
            await w.pump()
        if not any(w.held() for w in workers):
            break
    assert not any(w.held() for w in workers)
    assert all(len(w.scorer.owned) > 0 for w in workers)  # each kept its own customers
    four = await snapshot_of(h)
    assert len(one["examples"]) > 50 and one["alerts"]
    for what in ("model", "through", "state"):
        assert one[what] == four[what], what
    assert sorted(one["examples"]) == sorted(four["examples"])
    for what in ("alerts", "scores"):
        for cid in one["state"]:
            assert [x for x in one[what] if x["customer_id"] == cid] == \
                [x for x in four[what] if x["customer_id"] == cid], (what, cid)
