"""Redis Cluster (``REDIS_CLUSTER=true``): everything a worker, the learner, the dashboard and the
tools do in Redis gives on a real three-node cluster (``support/redis_cluster.py``) exactly what
it gives on the plain Redis, and the keys really spread over the nodes.

One simulated history runs in process (ingest, scoring, the learner's checkpoints, the portfolio
KPIs and segments, progress) once on each; then the states, outputs, model, indexes, portfolio
sums, the dashboard's and the CLI's read queries and the tiles' pass are compared."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from redis.asyncio.cluster import RedisCluster

from support.harness import Harness
from support.redis_cluster import RedisClusterProcess
from support.sim import run, sim_records
from stream_app.model.checkpoints import ModelHolder
from stream_app.pipeline.clients import redis_client as make_client
from stream_app.portfolio.periods import Period
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.read.queries import customer_detail, customer_view, model_summary, risk_page, riskiest
from stream_app.read.tiles import scan_portfolio
from stream_app.settings import Settings
from stream_app.state.cluster import PipelinedScript, is_cluster
from stream_app.state.customer import MAIN
from stream_app.state.layout import Keys
from stream_app.state.owned import OwnedStates
from stream_app.state.store import StateStore, delete_prefix


@pytest.fixture
def small_model(settings: Settings) -> Settings:
    # a model that starts serving within the short history: checkpoints are written and read
    return settings.model_copy(update={"model_min_labels": 20, "model_min_positives": 2})


@pytest_asyncio.fixture
async def cluster_client(redis_cluster: RedisClusterProcess, key_prefix: str) -> AsyncIterator[Any]:
    settings = Settings(_env_file=None, redis_url=redis_cluster.url, redis_cluster=True, key_prefix=key_prefix)
    client = make_client(settings)
    yield client
    await delete_prefix(client, key_prefix)
    await client.aclose()


async def reads(h: Harness, cids: list[str]) -> dict[str, Any]:
    """What the dashboard and the CLI read, and the portfolio's sums."""
    store, settings = h.store, h.settings
    tracker = PortfolioTracker(settings)
    now_month = await tracker.now_month(store.redis)
    assert now_month is not None
    periods = [Period("month", now_month - i) for i in range(4)]
    scan = await scan_portfolio(store, settings)
    holder = ModelHolder(settings.sections.model, settings.key_prefix)
    through = await holder.load_through(store.redis)
    assert through is not None
    return {
        "views": [await customer_view(store, settings, cid, None) for cid in cids],
        "details": [await customer_detail(store, settings, cid) for cid in cids],
        "riskiest": await riskiest(store, settings, 10),
        "page": await risk_page(store, settings, 0, 20),
        "band_page": await risk_page(store, settings, 0, 5, band="red", band_ids=scan.band_ids.get("red", [])),
        "model": await model_summary(store, settings),
        "model_for_days": [(await holder.for_day(store.redis, d)).labels_seen for d in range(through - 30, through + 1)],
        "tiles": scan.tiles.model_dump(exclude={"computed_at", "duration_ms"}),
        "band_ids": scan.band_ids,
        "sums": await tracker.sums(store.redis, periods),
        "report": [k.model_dump() for k in await tracker.report(store.redis, "month", 3)],
        "segments": [repr(s) for s in await tracker.describe_segments(store.redis)],
        "cohorts": [repr(c) for c in await tracker.cohorts(store.redis)],
        "handled": await store.handled(list(settings.input_topics), 2),
        "watermark": await store.watermark(),
        "customers": sorted(await store.customer_ids(10_000)),
    }


async def test_the_pipeline_and_every_read_give_the_same_on_a_cluster(
    small_model: Settings, redis_client: Any, cluster_client: Any, redis_cluster: RedisClusterProcess
) -> None:
    assert is_cluster(cluster_client) and isinstance(cluster_client, RedisCluster)
    logs = sim_records(customers=30, days=70, seed=9)
    plain = Harness(small_model, redis_client)
    on_cluster = Harness(small_model.model_copy(update={"redis_url": redis_cluster.url, "redis_cluster": True}),
                         cluster_client)
    a = await run(plain, logs, random.Random(4))
    b = await run(on_cluster, logs, random.Random(4))
    # the run did real work: labels resolved into checkpoints, alerts fired
    assert len(a["examples"]) > 20 and a["model"]["labels_seen"] > 20 and a["alerts"]
    for what in ("state", "examples", "model", "through", "alerts", "scores"):
        assert a[what] == b[what], what

    cids = sorted(a["state"])
    got_a, got_b = await reads(plain, cids), await reads(on_cluster, cids)
    assert got_a["sums"] and got_a["tiles"]["customers"] == len(cids) and got_a["model"]
    for what in got_a:
        assert got_a[what] == got_b[what], what

    # the global indexes, key by key
    keys = Keys(small_model.key_prefix)
    for key in (keys.risk, keys.labels_pending, keys.model_days):
        assert await redis_client.zrange(key, 0, -1, withscores=True) == await cluster_client.zrange(
            key, 0, -1, withscores=True), key
    # the keys really spread: every node holds some of this run's customers
    per_node = redis_cluster.keys_per_node(f"{small_model.key_prefix}*")
    assert sum(1 for n in per_node.values() if n > 0) >= 2, per_node

    # the tools' wipe (SCAN of every primary, UNLINK split by slot)
    assert await delete_prefix(cluster_client, small_model.key_prefix) == sum(per_node.values())
    assert sum(redis_cluster.keys_per_node(f"{small_model.key_prefix}*").values()) == 0


async def test_a_pipelined_script_is_loaded_again_after_a_node_forgets_it(
    redis_cluster: RedisClusterProcess, cluster_client: Any, key_prefix: str
) -> None:
    script = PipelinedScript("return redis.call('INCR', KEYS[1])")
    keys = [f"{key_prefix}n:{{{i}}}" for i in range(12)]  # twelve slots: all three nodes
    assert await script.run(cluster_client, [([k], []) for k in keys]) == [1] * 12
    await cluster_client.script_flush()  # every primary forgets its scripts (a restart would)
    assert await script.run(cluster_client, [([k], []) for k in keys]) == [2] * 12


async def test_the_state_store_and_progress_on_a_cluster(cluster_client: Any, key_prefix: str,
                                                         redis_cluster: RedisClusterProcess) -> None:
    settings = Settings(_env_file=None, redis_url=redis_cluster.url, redis_cluster=True, key_prefix=key_prefix)
    store = StateStore(cluster_client, settings)
    for p in range(3):
        await store.ensure_progress("cs.activity", p, idle=False)  # a single-slot MULTI
        await store.set_progress("cs.activity", p, 10 * p + 9, 1_000 + p, low_ms=500 + p)
    assert await store.get_progress("cs.activity", 2) == (29, 1_002)
    assert await store.handled(["cs.activity"], 3) == 60
    assert await store.progress_watermark([("cs.activity", p) for p in range(3)]) == 500
    raw = await store.read("nobody")
    assert raw.main == {} and raw.dedupe_days == 0
    summary = orjson.dumps({"serving": "prior-health-v1"})
    await cluster_client.set(Keys(key_prefix).model_summary, summary)
    assert (await model_summary(store, settings) or {}).get("serving") == "prior-health-v1"


async def test_owned_state_writes_by_slot_and_survives_a_script_flush(cluster_client: Any, key_prefix: str,
                                                                       redis_cluster: RedisClusterProcess) -> None:
    """The worker's once-per-drain write on a cluster: one script call per hash slot, every
    customer read back as written; after every node forgot the scripts, the write is sent
    again without appending the outbox twice; a fenced worker writes nothing."""
    settings = Settings(_env_file=None, redis_url=redis_cluster.url, redis_cluster=True, key_prefix=key_prefix)
    store = StateStore(cluster_client, settings)
    owned = OwnedStates(store, capacity=1000)
    await owned.claim([0])
    cids = [f"c{i}" for i in range(40)]
    states = await owned.get({cid: 0 for cid in cids})
    for i, st in enumerate(states.values()):
        st.hset(MAIN, "n", str(i))
        st.outbox.append(f"a{i}")
    await cluster_client.script_flush()
    assert await owned.write(states.values(), [("zadd", (Keys(key_prefix).risk, {"c0": 0.5}))], 7) == set()
    again = await OwnedStates(store, capacity=1000).get({cid: 0 for cid in cids})
    assert [again[cid].main["n"] for cid in cids] == [str(i) for i in range(40)]
    assert all(again[cid].leftovers == [f"a{i}".encode()] for i, cid in enumerate(cids))
    nodes = [n for n in cluster_client.get_nodes() if n.server_type == "primary"]
    sizes = [await cluster_client.dbsize(target_nodes=n) for n in nodes]
    assert sum(1 for size in sizes if size) >= 2
    other = OwnedStates(store, capacity=1000)
    await other.claim([0])
    await other.get({"c1": 0})
    states["c1"].hset(MAIN, "n", "99")
    assert await owned.write([states["c1"]], [], -1) == {"c1"}
    assert (await store.read("c1")).main["n"] == "1"
