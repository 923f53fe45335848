"""Every test here runs a real worker process (``stream-app worker``) against the test broker and
Redis: marked ``e2e``. The tests taking ``e2e_env`` run twice: on the test Redis and on a private
three-node Redis Cluster (``REDIS_CLUSTER=true``; marked ``slow``, a step of its own in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.redis_cluster import RedisClusterProcess

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(params=["redis", pytest.param("cluster", marks=pytest.mark.slow)])
def e2e_redis(request: pytest.FixtureRequest, redis_url: str) -> tuple[str, bool]:
    """(REDIS_URL, REDIS_CLUSTER): the test Redis, or one node of the session's Redis Cluster."""
    if request.param == "cluster":
        cluster: RedisClusterProcess = request.getfixturevalue("redis_cluster")
        return cluster.url, True
    return redis_url, False
