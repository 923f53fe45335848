"""Redis and Kafka clients from the settings (TLS, ACL users, SASL)."""

from __future__ import annotations

from typing import Any

import faust
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from stream_app.settings import Settings


def redis_client(settings: Settings) -> Any:
    """A redis-py asyncio client from the settings (``rediss://`` for TLS, ACL user/password):
    a ``RedisCluster`` with ``REDIS_CLUSTER=true`` (``REDIS_URL`` names one node, the client
    discovers the others), else a plain ``Redis``. Both take the same commands; what differs
    on a cluster (multi-key commands split by slot, SCAN of every primary, scripts loaded on
    every primary) is handled where it is used (``state/cluster.py``)."""
    if not settings.redis_url:
        raise ValueError("redis_url: not set (REDIS_URL)")
    kwargs: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 10, "health_check_interval": 15}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://") and settings.redis_ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_certs
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **kwargs)
    return aioredis.Redis.from_url(settings.redis_url, **kwargs)


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials for SASL (PLAIN/SCRAM) and/or TLS, or None for PLAINTEXT."""
    proto = settings.broker_security_protocol
    ssl_context = None
    if proto in ("SSL", "SASL_SSL"):
        ssl_context = settings.kafka_client_kwargs()["ssl_context"]
    if proto.startswith("SASL"):
        assert settings.broker_sasl_password is not None  # guaranteed by Settings validation
        return faust.SASLCredentials(
            username=settings.broker_sasl_username,
            password=settings.broker_sasl_password.get_secret_value(),
            ssl_context=ssl_context,
            mechanism=settings.broker_sasl_mechanism,
        )
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None
