"""Delivery bench: deliveries/s to a local webhook receiver, and end-to-end latency (alert
produced to Kafka -> webhook received) at a steady rate.

    python bench/delivery_bench.py            # 5,000-alert backlog, then 30 s at 100 alerts/s
    python bench/delivery_bench.py --smoke    # 1,000 alerts, then 5 s at 100 alerts/s

Uses BROKER_URL when set, else an embedded broker. The delivery service (``DeliveryService``,
one webhook sink, signed) and the receiver (an aiohttp server answering 200) run in this one
process on one event loop, so the figures include the receiver's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Services, git_commit, percentile  # noqa: E402

from stream_app.delivery.config import parse_config  # noqa: E402
from stream_app.delivery.service import DeliveryService  # noqa: E402
from stream_app.settings import UNDELIVERED_TOPIC, Settings  # noqa: E402
from stream_app.tools.embedded import ensure_topics  # noqa: E402


def alert(run: str, i: int) -> dict[str, object]:
    cid = f"c{i % 500}"
    return {"alert_id": f"{run}:{i}", "customer_id": cid, "ts": "2026-03-02T09:00:00+00:00", "kind": "churn_risk",
            "severity": "critical", "health_score": 30.0, "health_band": "red", "churn_probability": 0.6,
            "reasons": [{"factor": "logins_7d", "value": 0, "impact": -20.0}], "model_version": "v1"}


async def produce(settings: Settings, alerts: list[dict[str, object]], rate: float | None, sent: dict[str, float]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers(), linger_ms=0 if rate else 5)
    await p.start()
    try:
        t0 = time.monotonic()
        for i, a in enumerate(alerts):
            if rate:
                wait = t0 + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            sent[str(a["alert_id"])] = time.time()
            await p.send(settings.topic("alerts"), orjson.dumps(a), key=str(a["customer_id"]).encode())
        await p.flush()
    finally:
        await p.stop()


async def main(broker_url: str, backlog: int, seconds: float, rate: float, label: str) -> None:
    run = uuid.uuid4().hex[:8]
    settings = Settings(_env_file=None, broker_url=broker_url, topic_prefix=f"db{run}.", app_id=f"db-{run}",
                        topic_partitions=4, rebalance_timeout_s=4, session_timeout_s=10, heartbeat_interval_s=1,
                        delivery_port=0)
    await ensure_topics(settings.bootstrap_servers(),
                        {settings.topic(t): 4 for t in ("alerts", "scores", UNDELIVERED_TOPIC)})
    received: dict[str, float] = {}

    async def hook(request: web.Request) -> web.Response:
        received.setdefault(request.headers["Idempotency-Key"], time.time())
        await request.read()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cfg = parse_config({"sinks": [{"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "secret": "k"}]})

    sent: dict[str, float] = {}
    await produce(settings, [alert(f"{run}b", i) for i in range(backlog)], None, sent)
    service = DeliveryService(settings, cfg)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(service.run(stop, ready))
    await ready.wait()
    while len(received) < 1:
        await asyncio.sleep(0.001)
    t0 = time.time()
    while len(received) < backlog:
        await asyncio.sleep(0.01)
    t1 = time.time()
    throughput = (backlog - 1) / (t1 - t0)

    steady = [alert(f"{run}s", i) for i in range(int(seconds * rate))]
    sent.clear()
    await produce(settings, steady, rate, sent)
    deadline = time.time() + 30
    while any(str(a["alert_id"]) not in received for a in steady) and time.time() < deadline:
        await asyncio.sleep(0.05)
    lat = [1000 * (received[k] - v) for k, v in sent.items() if k in received]
    stop.set()
    await task
    await runner.cleanup()
    print(f"commit {git_commit()}; broker: {label}")
    print(f"backlog of {backlog:,} alerts: {throughput:,.0f} deliveries/s to a local receiver")
    print(f"steady {rate:g} alerts/s for {seconds:g} s ({len(lat)}/{len(steady)} received): end-to-end latency "
          f"p50 {percentile(lat, 0.5):.1f} ms, p95 {percentile(lat, 0.95):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="a few seconds")
    ap.add_argument("--rate", type=float, default=100.0)
    args = ap.parse_args()
    backlog, seconds = (1000, 5.0) if args.smoke else (5000, 30.0)
    with Services() as services:
        label = "embedded Tansu" if services.embedded_broker else services.broker_url
        asyncio.run(main(services.broker_url, backlog, seconds, args.rate, label))
