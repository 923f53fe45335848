"""End-to-end helpers: a worker process on the test broker and Redis (fixtures ``e2e_env`` and
``worker``, registered by ``tests/conftest.py``), the CLI, a small history file, waiting for the
worker's progress."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.cluster

from stream_app.settings import Settings

T0_MS = 1_772_442_000_000  # 2026-03-02T09:00:00Z
HOUR = 3_600_000


def run_cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_app.tools.cli", *args], env=env, capture_output=True, text=True, timeout=120, check=check
    )


@pytest.fixture
def e2e_redis(redis_url: str) -> tuple[str, bool]:
    """(REDIS_URL, REDIS_CLUSTER) of the worker: the test Redis. ``tests/e2e/conftest.py``
    parametrizes it: each test there runs on the plain Redis and on a Redis Cluster."""
    return redis_url, False


@pytest.fixture
def e2e_env(broker_url: str, e2e_redis: tuple[str, bool], key_prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update(
        BROKER_URL=broker_url,
        REDIS_URL=e2e_redis[0],
        REDIS_CLUSTER=str(e2e_redis[1]).lower(),
        KEY_PREFIX=key_prefix,
        TOPIC_PREFIX=f"t{run}.",
        APP_ID=f"e2e-{run}",
        REBALANCE_TIMEOUT_S="4",
        SESSION_TIMEOUT_S="10",
        HEARTBEAT_INTERVAL_S="1",
        TOPIC_PARTITIONS="3",
        LOG_LEVEL="info",
        # the file spans 100 days: a horizon beyond that makes any re-send exactly idempotent
        DEDUPE_DAYS="120",
    )
    yield env


@pytest.fixture
def worker(e2e_env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.tools.cli", "worker"],
        env=e2e_env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if os.environ.get("E2E_SHOW_LOG"):
        print(log.read_text()[-5000:])


def line(topic: str, eid: str, cid: str, ts: int, **fields: Any) -> str:
    return json.dumps({"topic": topic, "event_id": eid, "customer_id": cid, "ts": ts, **fields})


def build_file(path: Path) -> tuple[int, list[tuple[str, str]]]:
    """Valid events for two customers, re-sent duplicates, and invalid events.

    Returns (number of lines, [(topic, expected rule) for each invalid line]).
    """
    lines: list[str] = []
    for i in range(10):  # acme: 10 logins over 10 hours, 2 users
        lines.append(line("activity", f"a{i}", "acme", T0_MS + i * HOUR, action="login", user_id=f"u{i % 2}", duration_s=30))
    lines.append(line("activity", "a-late", "acme", T0_MS - 20 * 24 * HOUR, action="export", count=4))
    lines.append(line("tickets", "t1", "acme", T0_MS, ticket_id="T-1", status="opened", priority="urgent"))
    lines.append(line("tickets", "t2", "acme", T0_MS + 3 * HOUR, ticket_id="T-1", status="resolved"))
    lines.append(line("surveys", "s1", "acme", T0_MS, survey="nps", score=3, comment="too slow"))
    lines.append(line("subscriptions", "b1", "acme", T0_MS - 100 * 24 * HOUR, status="started", mrr=400, plan="growth"))
    lines.append(line("subscriptions", "b2", "globex", T0_MS, status="started", mrr=90))
    # duplicates: the same event_ids again (a producer retry)
    lines.append(line("activity", "a3", "acme", T0_MS + 3 * HOUR, action="login", user_id="u1", duration_s=30))
    lines.append(line("tickets", "t1", "acme", T0_MS, ticket_id="T-1", status="opened", priority="urgent"))
    invalid = [
        (line("activity", "x1", "acme", T0_MS, action=""), "string_too_short"),
        (json.dumps({"topic": "surveys", "event_id": "x2", "customer_id": "acme", "ts": T0_MS, "survey": "nps", "score": 11}), "value_error"),
        (json.dumps({"topic": "tickets", "event_id": "x3", "ts": T0_MS, "ticket_id": "T", "status": "opened"}), "missing"),
        (line("subscriptions", "x4", "acme", T0_MS, status="paused", mrr=1), "literal_error"),
        (line("activity", "x5", "acme", 4_102_444_800_000, action="login"), "ts_in_future"),
        (line("activity", "x6", "acme", T0_MS, action="login", count=True), "int_type"),
        (line("activity", "x7", "acme", T0_MS, action="login", pad="z" * 70_000), "too_large"),
    ]
    lines.extend(text for text, _ in invalid)
    path.write_text("\n".join(lines) + "\n")
    topics = [json.loads(text)["topic"] for text, _ in invalid]
    return len(lines), [(t, rule) for t, (_, rule) in zip(topics, invalid)]


def customer_json(env: dict[str, str], cid: str) -> dict[str, Any]:
    out = run_cli(env, "customer", cid, "--json")
    return json.loads(out.stdout)


def env_settings(env: dict[str, str]) -> Settings:
    """The Redis side of a worker's environment (URL, cluster or not, key and topic prefixes)."""
    return Settings(_env_file=None, **{k.lower(): v for k, v in env.items()
                                       if k in ("KEY_PREFIX", "TOPIC_PREFIX", "TOPIC_PARTITIONS", "REDIS_URL",
                                                "REDIS_CLUSTER")})


def keys_per_node(env: dict[str, str]) -> dict[str, int]:
    """On a Redis Cluster: this run's keys (``KEY_PREFIX*``) on each primary, by SCAN of that
    node alone (where the slots put them, not where a client says)."""
    cluster = redis.cluster.RedisCluster.from_url(env["REDIS_URL"])
    try:
        out = {}
        for node in cluster.get_primaries():
            client = redis.Redis(host=node.host, port=node.port)
            try:
                out[node.name] = sum(1 for _ in client.scan_iter(match=env["KEY_PREFIX"] + "*", count=1000))
            finally:
                client.close()
        return out
    finally:
        cluster.close()


def wait_handled(env: dict[str, str], expected: int, timeout: float = 120.0) -> None:
    """Wait until the worker's partition progress covers ``expected`` records."""
    from stream_app.pipeline.clients import redis_client
    from stream_app.state.store import StateStore

    settings = env_settings(env)

    async def handled() -> int:
        client = redis_client(settings)
        try:
            return await StateStore(client, settings).handled(list(settings.input_topics), settings.topic_partitions)
        finally:
            await client.aclose()

    deadline = time.monotonic() + timeout
    done = -1
    while time.monotonic() < deadline:
        done = asyncio.run(handled())
        if done >= expected:
            return
        time.sleep(0.5)
    raise AssertionError(f"worker handled {done} of {expected} records within {timeout}s")
