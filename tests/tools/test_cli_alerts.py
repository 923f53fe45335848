"""`stream-app alerts`: last N / from the beginning / follow, JSON lines or coloured lines,
against the test broker (alerts produced directly, no worker needed)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from schemas import Alert, Reason
from stream_app.tools.embedded import ensure_topics

T0_MS = 1_772_442_000_000


def alert(i: int, severity: str = "warning") -> Alert:
    return Alert(alert_id=f"c{i}/churn_risk/{T0_MS + i}", customer_id=f"cust-{i}", ts=T0_MS + i * 3_600_000,
                 kind="churn_risk", severity=severity, health_score=30 + i, health_band="red",  # type: ignore[arg-type]
                 churn_probability=0.3, reasons=[Reason(factor="engagement", value=0.1, impact=-12.5)],
                 model_version="prior-health-v1")


async def produce(bootstrap: str, topic: str, alerts: list[Alert]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        base = int(time.time() * 1000)
        for i, a in enumerate(alerts):  # distinct timestamps: publish order is the order of the list
            await producer.send_and_wait(topic, a.model_dump_json().encode(), key=a.customer_id.encode(),
                                         timestamp_ms=base + 10 * i)
    finally:
        await producer.stop()


@pytest.fixture
def alerts_env(broker_url: str) -> Iterator[dict[str, str]]:
    prefix = f"a{uuid.uuid4().hex[:8]}."
    bootstrap = broker_url.split("://")[1]
    asyncio.run(ensure_topics([bootstrap], {prefix + "alerts": 3}))
    env = dict(os.environ, BROKER_URL=broker_url, TOPIC_PREFIX=prefix)
    yield env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream_app.tools.cli", "alerts", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=True)


def test_last_n_from_beginning_and_pretty(alerts_env: dict[str, str]) -> None:
    bootstrap = alerts_env["BROKER_URL"].split("://")[1]
    topic = alerts_env["TOPIC_PREFIX"] + "alerts"
    sent = [alert(i, severity="critical" if i % 3 == 0 else "warning") for i in range(8)]
    asyncio.run(produce(bootstrap, topic, sent))

    last3 = [json.loads(x) for x in cli(alerts_env, "--json", "--last", "3").stdout.splitlines()]
    assert [a["alert_id"] for a in last3] == [a.alert_id for a in sent[-3:]]  # newest last, across partitions
    assert all(Alert.model_validate(a) for a in last3)
    everything = [json.loads(x) for x in cli(alerts_env, "--json", "--from-beginning").stdout.splitlines()]
    assert [a["alert_id"] for a in everything] == [a.alert_id for a in sent]
    assert cli(alerts_env, "--json", "--last", "0").stdout == ""

    pretty = cli(alerts_env, "--last", "2").stdout.splitlines()
    assert len(pretty) == 2 and "cust-7" in pretty[1] and "WARNING" in pretty[1] and "churn_risk" in pretty[1]
    assert "cust-6" in pretty[0] and "CRITICAL" in pretty[0] and "engagement -12.5" in pretty[0]


def test_follow_prints_new_alerts_as_json_lines(alerts_env: dict[str, str]) -> None:
    bootstrap = alerts_env["BROKER_URL"].split("://")[1]
    topic = alerts_env["TOPIC_PREFIX"] + "alerts"
    asyncio.run(produce(bootstrap, topic, [alert(0)]))
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "alerts", "--follow", "--json"],
                            env=alerts_env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]

        def next_line(timeout: float) -> str:
            try:
                return lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no line from `alerts --follow` in time") from None

        assert json.loads(next_line(30))["customer_id"] == "cust-0"  # the backlog first
        time.sleep(1)
        asyncio.run(produce(bootstrap, topic, [alert(1, "critical"), alert(2)]))
        got = [json.loads(next_line(15)) for _ in range(2)]
        assert [a["customer_id"] for a in got] == ["cust-1", "cust-2"] and got[0]["severity"] == "critical"
        assert proc.poll() is None  # still following
    finally:
        proc.terminate()
        proc.wait(10)
