"""The delivery service on the test broker, with real local HTTP receivers: nothing lost,
nothing silently duplicated, undeliverable alerts parked with their reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition
from support.delivery import alert, create_topics, produce, read_topic, wait_for
from support.receivers import Receiver, always, fail_first

from stream_app.delivery.config import parse_config
from stream_app.delivery.metrics import metrics_app
from stream_app.delivery.service import DeliveryService, group_id
from stream_app.settings import UNDELIVERED_TOPIC, Settings

FAST = {"max_attempts": 3, "base_delay_s": 0.01, "max_delay_s": 0.05, "budget_s": 30}


def settings_for(broker_url: str, **over: Any) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(_env_file=None, broker_url=broker_url, topic_prefix=f"d{run}.", app_id=f"dt-{run}",
                    topic_partitions=3, rebalance_timeout_s=4, session_timeout_s=10, heartbeat_interval_s=1,
                    commit_interval_s=0.2, delivery_port=0, **over)


async def running(service: DeliveryService) -> AsyncIterator[asyncio.Event]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    await asyncio.wait([task, asyncio.create_task(ready.wait())], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    assert ready.is_set(), task.exception() if task.done() else "not ready in 60 s"
    yield stop
    stop.set()
    await asyncio.wait_for(task, 30)


async def committed(settings: Settings) -> int:
    c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), group_id=group_id(settings), enable_auto_commit=False)
    await c.start()
    try:
        tps = [TopicPartition(settings.topic("alerts"), p) for p in range(settings.topic_partitions)]
        return sum([await c.committed(tp) or 0 for tp in tps])
    finally:
        await c.stop()


async def test_flaky_receiver_gets_every_alert_once_and_a_dead_one_parks_them(broker_url: str) -> None:
    settings = settings_for(broker_url)
    await create_topics(settings)
    flaky = await Receiver(fail_first(5, 503), secret=b"k").start()
    dead = await Receiver(always(500)).start()
    picky = await Receiver().start()
    cfg = parse_config({"sinks": [
        {"name": "flaky", "type": "webhook", "url": flaky.url, "secret": "k", "retry": {**FAST, "max_attempts": 10}},
        {"name": "dead", "type": "webhook", "url": dead.url, "retry": FAST},
        {"name": "picky", "type": "webhook", "url": picky.url, "route": {"severities": ["critical"]}},
    ]})
    alerts = [alert(i, severity="critical" if i % 2 else "warning") for i in range(40)]
    service = DeliveryService(settings, cfg)
    try:
        async for _ in running(service):
            await produce(settings, alerts)
            await wait_for(lambda: len(flaky.unique_keys()) == 40 and len(dead.calls) == 120, 60, "deliveries")
            await wait_for(lambda: service.offsets.in_flight == 0, 30, "records settled")
            await asyncio.sleep(0.6)  # a commit round
        ids = [a["alert_id"] for a in alerts]
        # every alert reached the flaky receiver; after de-duplication by key, exactly once each
        assert sorted(flaky.unique_keys()) == sorted(ids)
        assert len(flaky.calls) >= 45 and all(c.signature_ok for c in flaky.calls)
        # routing: only the critical ones reached the picky sink
        assert sorted(c.json()["alert_id"] for c in picky.accepted) == sorted(a["alert_id"] for a in alerts if a["severity"] == "critical")
        # the dead sink: each alert tried 3 times, then parked with its reason; the service moved on
        parked = await read_topic(settings, UNDELIVERED_TOPIC, 40)
        assert sorted(p["alert_id"] for p in parked) == sorted(ids)
        assert {(p["sink"], p["sink_type"], p["attempts"], p["last_status"]) for p in parked} == {("dead", "webhook", 3, 500)}
        assert all("HTTP 500" in p["last_error"] and p["alert"]["alert_id"] == p["alert_id"] for p in parked)
        assert await committed(settings) == 40
        text = service.metrics.render().decode()
        assert 'churnstream_deliveries_total{outcome="parked",sink="dead"} 40.0' in text
        assert 'churnstream_deliveries_total{outcome="delivered",sink="flaky"} 40.0' in text
        assert 'churnstream_deliveries_total{outcome="skipped",sink="picky"} 20.0' in text
        assert "churnstream_delivery_latency_seconds_bucket" in text and "churnstream_delivery_queue_depth" in text
    finally:
        for r in (flaky, dead, picky):
            await r.stop()


async def test_an_unacknowledged_alert_is_not_committed(broker_url: str) -> None:
    """While a sink keeps answering 503 the alert stays in flight: its offset is not committed."""
    settings = settings_for(broker_url)
    await create_topics(settings)
    slow = await Receiver(always(503)).start()
    cfg = parse_config({"sinks": [{"name": "slow", "type": "webhook", "url": slow.url,
                                   "retry": {"max_attempts": 100, "base_delay_s": 0.05, "max_delay_s": 0.1, "budget_s": 600}}]})
    service = DeliveryService(settings, cfg, revoke_wait_s=0.1)
    try:
        async for _ in running(service):
            await produce(settings, [alert(1)])
            await wait_for(lambda: len(slow.calls) >= 5, 30, "retries")
            await asyncio.sleep(0.6)
            assert service.offsets.in_flight == 1
            assert 'churnstream_delivery_oldest_undelivered_age_seconds' in service.metrics.render().decode()
        assert await committed(settings) == 0
    finally:
        await slow.stop()


async def test_metrics_and_health_are_served_behind_the_token(broker_url: str) -> None:
    settings = settings_for(broker_url, web_token="t0k3n")
    await create_topics(settings)
    r = await Receiver().start()
    cfg = parse_config({"sinks": [{"name": "ok", "type": "webhook", "url": r.url}]})
    service = DeliveryService(settings, cfg)
    try:
        async with TestClient(TestServer(metrics_app(settings, service.metrics, service.health))) as client:
            assert (await client.get("/metrics")).status == 401
            resp = await client.get("/metrics", headers={"Authorization": "Bearer t0k3n"})
            assert resp.status == 200 and "churnstream_delivery_in_flight_alerts" in await resp.text()
            assert (await client.get("/health")).status == 503  # not running: anonymous gets the code only
    finally:
        await r.stop()
