"""Operations in process: the token middleware, /health and /metrics over a real ingestor on the
real Redis, the watchdog's tick (log line, exit), crash hold and fault injection."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from support.harness import T0, Harness, ev
from prometheus_client.parser import text_string_to_metric_families

from stream_app.testing.faults import InjectedFault
from stream_app.pipeline.ingest import Ingestor
from stream_app.core import Record
from stream_app.model.churn import ChurnModel
from stream_app.ops.health import CountingOutputs, Ops
from stream_app.ops.security import install_token_auth, is_authenticated, token_middleware
from stream_app.settings import Settings

SECRET = "s3cret-token-value-1234"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- the token middleware ----------------------------------------------------------------------

def _app(settings: Settings) -> web.Application:
    async def data(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"details": is_authenticated(request)})

    app = web.Application()
    install_token_auth(app, settings)
    install_token_auth(app, settings)  # idempotent: the dashboard may call it too
    app.router.add_get("/data", data)
    app.router.add_get("/health", health)
    return app


@pytest_asyncio.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    s = settings.model_copy(update={"web_token": Settings(_env_file=None, web_token=SECRET).web_token})
    async with TestClient(TestServer(_app(s))) as c:
        yield c


async def test_token_required_by_header_or_query(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert len(client.app.middlewares) == 1
    r = await client.get("/data")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    for bad in ("Bearer wrong", f"Basic {SECRET}", "Bearer", f"Bearer {SECRET}x"):
        r = await client.get("/data", headers={"Authorization": bad})
        assert r.status == 401, bad
        assert SECRET not in await r.text()
    assert (await client.get("/data", headers={"Authorization": f"Bearer {SECRET}"})).status == 200
    assert (await client.get("/data", headers={"Authorization": f"bearer  {SECRET} "})).status == 200
    assert (await client.get("/data", params={"token": SECRET})).status == 200
    assert (await client.get("/data", params={"token": "nope"})).status == 401
    # /health stays open for probes, and its handler knows who may see details
    assert await (await client.get("/health")).json() == {"details": False}
    assert await (await client.get("/health", params={"token": SECRET})).json() == {"details": True}
    assert SECRET not in caplog.text
    assert "token=***" in caplog.text  # the access log line is kept, masked


async def test_no_token_configured_means_open(settings: Settings) -> None:
    for empty in (None, ""):
        s = Settings(_env_file=None, web_token=empty)
        assert s.web_token is None
        async with TestClient(TestServer(_app(s))) as c:
            assert (await c.get("/data")).status == 200
            assert await (await c.get("/health")).json() == {"details": True}


def test_token_is_secret_in_settings() -> None:
    s = Settings(_env_file=None, web_token=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s.redacted())
    assert token_middleware(s) is not None


# --- /metrics and /health over a real ingestor ------------------------------------------------

@pytest_asyncio.fixture
async def ops_setup(settings: Settings, redis_client: Any) -> AsyncIterator[tuple[Harness, Ops, TestClient, Clock]]:
    settings = settings.model_copy(update={"stall_after_s": 10.0, "watchdog_grace_s": 5.0,
                                           "web_token": Settings(_env_file=None, web_token=SECRET).web_token})
    h = Harness(settings, redis_client)
    mono = Clock()
    exits: list[int] = []
    ops = Ops(settings, ingestor=lambda: h.ingestor, mono=mono, exit_fn=exits.append, redis=redis_client)
    ops.exits = exits  # type: ignore[attr-defined]
    counting = CountingOutputs(h.out)
    ops.outputs = counting
    h.ingestor = Ingestor(h.store, settings, counting, clock=lambda: h.clock_s, observer=ops)
    app = web.Application()
    ops.routes(app)
    async with TestClient(TestServer(app)) as c:
        yield h, ops, c, mono


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams: dict[str, Any], sample: str, **labels: str) -> float:
    name = sample.removesuffix("_total").removesuffix("_count").removesuffix("_bucket")
    return sum(s.value for s in fams[name].samples if s.name == sample
               and all(s.labels.get(k) == v for k, v in labels.items()))


def stamped(records: list[Record], ts_s: float) -> list[Record]:
    return [Record(r.topic, r.partition, r.offset, r.value, r.highwater, timestamp_ms=int(ts_s * 1000)) for r in records]


async def test_metrics_read_the_pipeline(ops_setup: tuple[Harness, Ops, TestClient, Clock], redis_client: Any) -> None:
    h, _ops, c, mono = ops_setup
    auth = {"Authorization": f"Bearer {SECRET}"}
    assert (await c.get("/metrics")).status == 401
    empty = families(await (await c.get("/metrics", headers=auth)).text())
    assert value(empty, "churnstream_events_applied_total") == 0

    items = [
        ev("activity", "a1", T0, action="login", user_id="u1"),
        ev("activity", "a2", T0, action="login", user_id="u2"),
        ev("activity", "a1", T0, action="login", user_id="u1"),  # re-sent
        ev("surveys", "s1", T0, survey="nps", score=2),  # a detractor alert
        ("activity", b"{not json"),
    ]
    recs = stamped(h.records(items), h.clock_s - 1.5)  # produced 1.5 s before the ingestor's clock
    await h.ingestor.handle(recs)
    # the learner's checkpoint summary, as the learner writes it
    summary = ChurnModel(h.settings.model_min_labels, h.settings.model_min_positives).summary()
    await redis_client.set(f"{h.settings.key_prefix}model:summary", orjson.dumps(summary))
    await redis_client.set(f"{h.settings.key_prefix}model:version", 3)
    mono.t += 20  # the summary and the KPIs are cached for a few seconds

    fams = families(await (await c.get("/metrics", headers=auth)).text())
    act = h.settings.topic("activity")
    assert value(fams, "churnstream_events_consumed_total", topic=act) == 4
    # 2 events and the re-sent one went through the apply step (the script recognised the
    # re-send); whether the ingestor counts it as applied or duplicate is its business
    assert (value(fams, "churnstream_events_applied_total", topic=act)
            + value(fams, "churnstream_events_duplicates_total", topic=act)) == 3
    assert value(fams, "churnstream_events_dead_lettered_total", topic=act) == 1
    assert value(fams, "churnstream_alerts_total", kind="detractor") == 1 == len(
        [a for a in h.out.alert_list if a.kind == "detractor"])
    sev = {s.labels["severity"] for s in fams["churnstream_alerts"].samples if s.labels["kind"] == "detractor"}
    assert sev == {next(a.severity for a in h.out.alert_list if a.kind == "detractor")}
    assert value(fams, "churnstream_scores_published_total") == len(h.out.score_list) > 0
    # every record's latency, per stage: produced 1.5 s before the ingestor's clock
    assert value(fams, "churnstream_event_latency_seconds_count", stage="received") == 5
    assert value(fams, "churnstream_event_latency_seconds_bucket", stage="processed", le="1.0") == 0
    assert value(fams, "churnstream_event_latency_seconds_bucket", stage="processed", le="2.5") == 5
    assert value(fams, "churnstream_model_checkpoint_version") == 3
    assert value(fams, "churnstream_model_labels_total") == 0
    assert {s.labels["model"] for s in fams["churnstream_model_prequential_roc_auc"].samples} >= {"prior"}
    assert value(fams, "churnstream_model_info", serving=summary["serving"]) == 1
    assert value(fams, "churnstream_dependency_errors_total", component="ingest") == 0
    # issue 7: the live portfolio KPIs as gauges (current month and quarter, everyone): the one
    # NPS answer is a detractor
    assert value(fams, "churnstream_portfolio_nps", period="month", segment="all") == -100.0
    assert value(fams, "churnstream_portfolio_nps", period="quarter", segment="all") == -100.0


async def test_health_then_stall_logged_then_exit(ops_setup: tuple[Harness, Ops, TestClient, Clock],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    h, ops, c, mono = ops_setup
    auth = {"Authorization": f"Bearer {SECRET}"}
    await h.ingestor.handle(stamped(h.records([ev("activity", "a1", T0, action="login")], lag=3), h.clock_s))
    r = await c.get("/health", headers=auth)
    body = await r.json()
    assert r.status == 200 and body["status"] == "ok"
    # the record is held (its partition has 3 more to come, so its event time is not yet
    # safe to pass): 4 records wait
    assert body["partitions"][0]["lag"] == 4 and body["partitions"][0]["waiting"]
    anon = await c.get("/health")
    assert anon.status == 200 and await anon.json() == {"status": "ok"}

    # nothing more is processed while 3 records wait
    caplog.set_level(logging.INFO, logger="stream_app.ops.health")
    mono.t += 10
    rep = await ops.tick()
    assert rep.status == "stalled" and ops.exits == []  # type: ignore[attr-defined]
    r = await c.get("/health", headers=auth)
    body = await r.json()
    assert r.status == 503 and body["status"] == "stalled" and body["exit_in_s"] == 5.0
    assert (await c.get("/health")).status == 503
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert errors and "STALLED" in errors[0].getMessage()
    assert f"{h.settings.topic('activity')}[0] stalled: 4 record(s) waiting" in errors[0].getMessage()
    fams = families(await (await c.get("/metrics", headers=auth)).text())
    assert value(fams, "churnstream_worker_healthy") == 0
    assert value(fams, "churnstream_watchdog_stalled_partitions") == 1
    assert value(fams, "churnstream_worker_status", status="stalled") == 1
    mono.t += 5
    await ops.tick()
    assert ops.exits == [70]  # type: ignore[attr-defined]
    assert any(rec.levelno == logging.CRITICAL and "exiting with status 70" in rec.getMessage() for rec in caplog.records)


async def test_crash_holds_ingestion_and_exits(ops_setup: tuple[Harness, Ops, TestClient, Clock]) -> None:
    h, ops, c, mono = ops_setup
    await ops.on_agent_error(type("A", (), {"name": "stream_app.ingest_activity"})(), ValueError("boom"))
    batch = h.records([ev("activity", "a1", T0, action="login")])
    with pytest.raises(asyncio.TimeoutError):  # held: nothing is applied past the failed batch
        await asyncio.wait_for(h.ingestor.handle(batch), 0.3)
    assert h.ingestor.stats.total("applied") == 0
    rep = await ops.tick()
    assert rep.status == "crashed" and rep.crashes[0].agent == "stream_app.ingest_activity"
    fams = families(await (await c.get("/metrics", headers={"Authorization": f"Bearer {SECRET}"})).text())
    assert value(fams, "churnstream_agent_crashes_total", agent="stream_app.ingest_activity") == 1
    mono.t += 5
    await ops.tick()
    assert ops.exits == [70]  # type: ignore[attr-defined]


async def test_fault_injection_freezes_or_crashes_only_marked_batches(settings: Settings, redis_client: Any) -> None:
    s = settings.model_copy(update={"fault_freeze_marker": "FREEZE-ME", "fault_crash_marker": "CRASH-ME"})
    h = Harness(s, redis_client)
    ops = Ops(s, ingestor=lambda: h.ingestor)
    h.ingestor = Ingestor(h.store, s, h.out, clock=lambda: h.clock_s, observer=ops)
    await h.feed([ev("activity", "a1", T0, action="login")])  # unmarked: normal
    assert h.ingestor.stats.total("applied") == 1
    with pytest.raises(InjectedFault):
        await h.feed([ev("activity", "a2", T0, action="CRASH-ME")])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(h.feed([ev("activity", "a3", T0, action="FREEZE-ME")]), 0.3)
    assert h.ingestor.stats.total("applied") == 1
    assert not Ops(settings).faults.enabled
