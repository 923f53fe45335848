"""The dashboard's JSON and SSE API against real Redis (state written by the real ingestor and
scorer from simulated events) and, for the live feed, the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
import redis
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from support.harness import Harness

from stream_app.scoring.aggregates import DAY_MS
from stream_app.web.feeds import LiveFeeds
from stream_app.settings import Settings
from stream_app.tools.simulator import SimConfig, Simulator
from stream_app.web.dashboard import FEEDS, PREFIX, standalone_app

API = f"{PREFIX}/api"


async def feed_simulation(h: Harness, customers: int = 14, days: int = 40, seed: int = 3) -> None:
    """Simulated events through the real ingestor + scorer into Redis, in event-time order."""
    batch: list[tuple[str, bytes]] = []
    for e in Simulator(SimConfig(customers=customers, days=days, seed=seed, activity_scale=0.3)).events():
        batch.append((e.topic, orjson.dumps(e.event)))
        if len(batch) >= 400:
            await h.feed(batch)
            batch = []
    if batch:
        await h.feed(batch)


# one event loop for the module: the simulated state is written once and read by several tests
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def module_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"cstest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def seeded(redis_url: str, module_prefix: str) -> AsyncIterator[Harness]:
    """Simulated customers written by the real ingestor and scorer (read-only for the tests)."""
    settings = Settings(_env_file=None, redis_url=redis_url, key_prefix=module_prefix, broker_url=None)
    client = aioredis.Redis.from_url(redis_url)
    h = Harness(settings, client)
    await feed_simulation(h)
    yield h
    await client.aclose()


async def _client(settings: Settings) -> AsyncIterator[TestClient]:
    app = standalone_app(settings)  # broker_url unset: no Kafka tails, the feed is filled by hand
    async with TestClient(TestServer(app)) as c:
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    """The dashboard on an empty key prefix of its own."""
    async for c in _client(settings):
        yield c


@pytest_asyncio.fixture(loop_scope="module")
async def seeded_client(seeded: Harness) -> AsyncIterator[TestClient]:
    """The dashboard on the simulated state."""
    async for c in _client(seeded.settings):
        yield c


def sub_app(client: TestClient) -> Any:
    return client.server.app._subapps[0]


async def all_main(h: Harness) -> dict[str, dict[str, str]]:
    """Every customer's main hash (the test's oracle: HGETALL, not the dashboard's code)."""
    out = {}
    for cid in await h.store.customer_ids(10_000):
        out[cid] = (await h.store.read(cid)).main
    return out


async def get_json(client: TestClient, path: str, status: int = 200) -> Any:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    return await resp.json()


async def test_at_risk_is_the_risk_ranking_paged(seeded: Harness, seeded_client: TestClient) -> None:
    redis, key = seeded.store.redis, f"{seeded.settings.key_prefix}risk"
    ranked = [(m.decode(), s) for m, s in await redis.zrevrange(key, 0, -1, withscores=True)]
    assert len(ranked) >= 10
    first = await get_json(seeded_client, f"{API}/at-risk?limit=5")
    second = await get_json(seeded_client, f"{API}/at-risk?limit=5&offset=5")
    assert first["total"] == second["total"] == len(ranked)
    ids = [r["customer_id"] for r in first["rows"] + second["rows"]]
    assert ids == [cid for cid, _ in ranked[:10]]
    assert [r["rank"] for r in second["rows"]] == [6, 7, 8, 9, 10]
    probs = [r["churn_probability"] for r in first["rows"] + second["rows"]]
    assert probs == [round(p, 4) for _, p in ranked[:10]]  # the ranking's own probabilities
    mains = await all_main(seeded)
    today = (await seeded.store.watermark()) // DAY_MS
    for r in first["rows"]:
        main = mains[r["customer_id"]]
        assert r["health_score"] == int(main["hs"]) / 10 and r["health_band"] == main["hb"]
        assert r["mrr"] == (int(main["mrr"]) / 100 if "mrr" in main else None)
        assert r["reasons"] == [main[f"r{i}"].rsplit(":", 1)[0] for i in (1, 2, 3) if main.get(f"r{i}")]
        expected_trend = sorted((int(f[1:]), int(v) / 10) for f, v in main.items()
                                if f[0] == "h" and f[1:].isdigit() and today - 30 < int(f[1:]) <= today)
        assert [tuple(p) for p in r["trend"]] == expected_trend and len(expected_trend) > 1


async def test_band_filter_lists_exactly_that_band_by_probability(seeded: Harness, seeded_client: TestClient) -> None:
    mains = await all_main(seeded)
    for band in ("green", "yellow", "red"):
        expected = sorted(
            (cid for cid, m in mains.items() if m.get("hb") == band and m.get("st") != "cancelled"),
            key=lambda c: (-float(mains[c]["cp"]), c),
        )
        page = await get_json(seeded_client, f"{API}/at-risk?band={band}&limit=200")
        assert page["total"] == len(expected)
        assert [r["customer_id"] for r in page["rows"]] == expected
        assert all(r["health_band"] == band for r in page["rows"])
        assert page["band_index_age_s"] is not None


@pytest.mark.parametrize(
    ("query", "field", "rule"),
    [
        ("limit=0", "limit", "greater_than_equal"),
        ("limit=201", "limit", "less_than_equal"),
        ("limit=ten", "limit", "int_parsing"),
        ("offset=-1", "offset", "greater_than_equal"),
        ("band=purple", "band", "literal_error"),
    ],
)
async def test_bad_list_parameters_name_the_field_and_rule(client: TestClient, query: str, field: str, rule: str) -> None:
    body = await get_json(client, f"{API}/at-risk?{query}", status=400)
    assert body["errors"][0]["field"] == field and body["errors"][0]["rule"] == rule
    assert body["error"].startswith(f"{field}: ")


async def test_portfolio_tiles_match_the_state(seeded: Harness, seeded_client: TestClient) -> None:
    mains = await all_main(seeded)
    s = seeded.settings
    active = {c: m for c, m in mains.items() if m.get("st") != "cancelled"}
    tiles = await get_json(seeded_client, f"{API}/portfolio")
    assert tiles["customers"] == len(mains)
    assert tiles["active"] == len(active)
    assert tiles["by_band"] == {b: sum(m["hb"] == b for m in active.values()) for b in ("red", "yellow", "green")}
    scores = [int(m["hs"]) / 10 for m in active.values()]
    assert tiles["avg_health"] == pytest.approx(sum(scores) / len(scores), abs=0.051)
    assert sum(b["count"] for b in tiles["histogram"]) == len(active)
    assert tiles["histogram"][int(min(scores) // 5)]["count"] >= 1
    mrr = {c: int(m.get("mrr", 0)) / 100 for c, m in active.items()}
    assert tiles["mrr_total"] == pytest.approx(sum(mrr.values()))
    at_risk = [c for c, m in active.items() if float(m["cp"]) >= s.risk_alert_threshold]
    assert tiles["at_risk"] == len(at_risk)
    assert tiles["mrr_at_risk"] == pytest.approx(sum(mrr[c] for c in at_risk))
    assert tiles["expected_mrr_loss"] == pytest.approx(sum(float(m["cp"]) * mrr[c] for c, m in active.items()), abs=0.05)
    now = await seeded.store.watermark()
    cancelled_30d = sum(1 for m in mains.values() if m.get("st") == "cancelled" and int(m["cts"]) > now - 30 * DAY_MS)
    assert tiles["cancelled_30d"] == cancelled_30d
    nps = [int(m["npsl"]) for m in active.values() if "npsl" in m and int(m["npst"]) > now - 90 * DAY_MS]
    assert tiles["nps_responses"] == len(nps)
    if nps:
        assert tiles["nps"] == pytest.approx(100 * (sum(x >= 9 for x in nps) - sum(x <= 6 for x in nps)) / len(nps), abs=0.051)
    today = now // DAY_MS
    csat = [[int(x) for x in v.split(",")] + [0] * 10 for m in active.values() for f, v in m.items()
            if f[0] == "s" and f[1:].isdigit() and today - 30 < int(f[1:]) <= today]
    assert tiles["csat_responses"] == sum(b[5] for b in csat) > 0
    assert tiles["csat"] == pytest.approx(sum(b[7] for b in csat) / sum(b[5] for b in csat), abs=0.0006)
    assert tiles["age_s"] is not None and tiles["refresh_s"] >= s.dashboard_refresh_s


async def test_kpis_are_the_live_portfolio_sums(seeded: Harness, seeded_client: TestClient) -> None:
    """/api/kpis serves the tracker's report of the per-period sums (the KPI formulas are tested
    against hand-computed months in test_kpis); here: the same figures, and they are real."""
    from stream_app.portfolio.tracker import PortfolioTracker

    tracker = PortfolioTracker(seeded.settings)
    months = await tracker.report(seeded.store.redis, "month", 3)
    d = await get_json(seeded_client, f"{API}/kpis")
    assert [k["period"] for k in d["months"]] == [k.period for k in months] and len(months) >= 2
    assert d["months"] == [k.model_dump(mode="json") for k in months]
    mains = await all_main(seeded)
    active = [m for m in mains.values() if m.get("st") != "cancelled" and "mrr" in m]
    now = d["months"][-1]
    assert now["partial"] and now["customers_end"] == len(active)
    assert now["mrr_end"] == pytest.approx(sum(int(m["mrr"]) for m in active) / 100)
    assert d["quarters"] and d["quarters"][-1]["customers_end"] == now["customers_end"]
    assert d["cohorts"] and d["cohorts"][0]["size"] >= 1


async def test_customer_page_data(seeded: Harness, seeded_client: TestClient) -> None:
    top = (await get_json(seeded_client, f"{API}/at-risk?limit=1"))["rows"][0]["customer_id"]
    d = await get_json(seeded_client, f"{API}/customer?id={top}")
    main = (await seeded.store.read(top)).main
    assert d["view"]["customer_id"] == top
    assert d["scored_health"] == int(main["hs"]) / 10
    assert set(d["components"]) == {"engagement", "adoption", "satisfaction", "support", "commercial", "lifecycle"}
    assert all(0 <= v <= 100 for v in d["components"].values())
    history = {int(f[1:]): int(v) / 10 for f, v in main.items() if f[0] == "h" and f[1:].isdigit()}
    assert [tuple(p) for p in d["health_history"]] == sorted(history.items()) and history
    assert len(d["tickets"]) == min(20, len((await seeded.store.read(top)).tickets))
    assert d["alerts"] == []  # nothing published to this dashboard's feed
    missing = await get_json(seeded_client, f"{API}/customer?id=nobody-{uuid.uuid4().hex}", status=404)
    assert missing["errors"][0] == {"field": "id", "rule": "not_found", "message": missing["errors"][0]["message"]}
    no_id = await get_json(seeded_client, f"{API}/customer", status=400)
    assert no_id["errors"][0]["field"] == "id" and no_id["errors"][0]["rule"] == "missing"


async def test_page_and_static_files_are_served(client: TestClient) -> None:
    resp = await client.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == f"{PREFIX}/"
    page = await client.get(f"{PREFIX}/")
    html = await page.text()
    assert page.status == 200 and 'id="atrisk"' in html and "static/chart.umd.min.js" in html
    for name in ("chart.umd.min.js", "dashboard.js", "dashboard.css"):
        resp = await client.get(f"{PREFIX}/static/{name}")
        assert resp.status == 200 and len(await resp.read()) > 1000, name


def alert(i: int, cid: str = "acme", ts: str = "2026-03-02T09:00:00+00:00") -> dict[str, Any]:
    return {"alert_id": f"{cid}/churn_risk/{i}", "customer_id": cid, "ts": ts, "kind": "churn_risk", "severity": "critical",
            "health_score": 30.0, "health_band": "red", "churn_probability": 0.4, "reasons": [], "model_version": "v"}


async def read_events(resp: Any, n: int, timeout: float = 5.0) -> list[tuple[str, str, dict[str, Any]]]:
    """The next ``n`` alert events of an SSE response: (id, event, data)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    fields: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        while len(out) < n:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line == "":
                if fields.get("event") == "alert":
                    out.append((fields["id"], "alert", orjson.loads(fields["data"])))
                fields = {}
            elif not line.startswith(":") and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
    return out


async def test_sse_sends_recent_alerts_then_new_ones_and_resumes(client: TestClient) -> None:
    feed = sub_app(client)[FEEDS].alerts
    feed.add(alert(1, ts="2026-03-02T10:00:00+00:00"))
    feed.add(alert(2, ts="2026-03-02T09:00:00+00:00"))  # older event time, arrived later
    resp = await client.get(f"{API}/stream")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    backlog = await read_events(resp, 2)
    assert [e[2]["alert_id"] for e in backlog] == ["acme/churn_risk/2", "acme/churn_risk/1"]  # oldest first
    feed.add(alert(3))
    assert feed.add(alert(3)) is False  # the same alert id again (at-least-once delivery) is dropped
    new = await read_events(resp, 1)
    assert new[0][2]["alert_id"] == "acme/churn_risk/3" and new[0][0] == "3"
    resp.close()
    resumed = await client.get(f"{API}/stream", headers={"Last-Event-ID": "2"})
    assert [e[2]["alert_id"] for e in await read_events(resumed, 1)] == ["acme/churn_risk/3"]
    resumed.close()
    listed = await get_json(client, f"{API}/alerts?limit=2")
    # newest event time first; equal times: the later arrival first
    assert [a["alert_id"] for a in listed["alerts"]] == ["acme/churn_risk/1", "acme/churn_risk/3"]
    assert (await get_json(client, f"{API}/alerts?customer_id=other"))["alerts"] == []


async def test_live_feed_tails_the_alerts_topic(broker_url: str, redis_url: str, key_prefix: str) -> None:
    from aiokafka import AIOKafkaProducer

    from stream_app.tools.embedded import ensure_topics

    settings = Settings(_env_file=None, broker_url=broker_url, redis_url=redis_url, key_prefix=key_prefix,
                        topic_prefix=f"d{uuid.uuid4().hex[:8]}.", topic_partitions=2, dashboard_alert_backlog=2)
    await ensure_topics(settings.bootstrap_servers(), {settings.topic("alerts"): 2, settings.topic("scores"): 2}, 1, {})
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers())
    await producer.start()
    try:
        for i in range(3):  # backlog: 2 per partition are read back
            await producer.send_and_wait(settings.topic("alerts"), orjson.dumps(alert(i, cid=f"c{i}")), partition=0)
        feeds = LiveFeeds(settings)
        feeds.start()
        try:
            await asyncio.wait_for(feeds.alerts_ready.wait(), 20)
            assert sorted(a["alert_id"] for a in feeds.alerts.latest(10)) == ["c1/churn_risk/1", "c2/churn_risk/2"]
            await producer.send_and_wait(settings.topic("alerts"), orjson.dumps(alert(9, cid="c9")), partition=1)
            snap = {"customer_id": "c9", "ts": "2026-03-02T09:00:00+00:00", "health_score": 40, "health_band": "red",
                    "churn_probability": 0.31, "model_version": "v", "components": {}}
            await producer.send_and_wait(settings.topic("scores"), orjson.dumps(snap), partition=1)
            async with asyncio.timeout(15):
                while not (feeds.alerts.latest(1, "c9") and feeds.churn.get("c9")):
                    await asyncio.sleep(0.1)
            assert feeds.churn.get("c9") == [(int(1772442000000 // DAY_MS), 0.31)]
        finally:
            await feeds.stop()
    finally:
        await producer.stop()
