"""Delivery tests and bench: alerts on a real topic, the undelivered topic read back, the
delivery group's committed offsets, a delivery file."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_app.settings import UNDELIVERED_TOPIC, Settings
from stream_app.tools.embedded import ensure_topics

T0_MS = 1_772_442_000_000


def alert(i: int, customer: str | None = None, **over: Any) -> dict[str, Any]:
    ts = T0_MS + i * 60_000
    cid = customer or f"c{i % 17}"
    return {"alert_id": f"{cid}:churn_risk:{ts}:{i}", "customer_id": cid,
            "ts": f"2026-03-02T{(9 + i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}+00:00",
            "kind": "churn_risk", "severity": "critical", "health_score": 30.0, "health_band": "red",
            "churn_probability": 0.6, "reasons": [{"factor": "logins_7d", "value": 0, "impact": -20.0}],
            "model_version": "v1", **over}


async def create_topics(settings: Settings) -> None:
    s = settings
    await ensure_topics(s.bootstrap_servers(), {s.topic(t): s.topic_partitions for t in ("alerts", "scores", UNDELIVERED_TOPIC)})


async def produce(settings: Settings, alerts: list[dict[str, Any]], rate: float | None = None) -> list[float]:
    """Produce alerts (key = customer id); returns the wall time each was sent."""
    p = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers(), linger_ms=0)
    await p.start()
    sent = []
    try:
        t0 = time.monotonic()
        for i, a in enumerate(alerts):
            if rate:
                wait = t0 + i / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            sent.append(time.time())
            await p.send(settings.topic("alerts"), orjson.dumps(a), key=a["customer_id"].encode())
        await p.flush()
    finally:
        await p.stop()
    return sent


async def read_topic(settings: Settings, logical: str, expect: int, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every record of a topic (waits for ``expect`` of them at most ``timeout`` s)."""
    topic = settings.topic(logical)
    c = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False)
    await c.start()
    out: list[dict[str, Any]] = []
    try:
        await c._client.force_metadata_update()
        parts = c.partitions_for_topic(topic) or set()
        c.assign([TopicPartition(topic, p) for p in parts])
        await c.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await c.getmany(timeout_ms=300)
            out.extend(orjson.loads(m.value) for msgs in batch.values() for m in msgs)
    finally:
        await c.stop()
    return out


def write_config(path: Path, sinks: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"sinks": sinks}))
    return path


async def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
