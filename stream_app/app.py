"""The Faust app, wired as the data flow:

    cs.activity ┐
    cs.tickets  ├─> ingest agents ──> Ingestor ──> Redis (per-customer state, atomic per customer)
    cs.surveys  │     (take_events          └────> cs.deadletter (invalid input, with reasons)
    cs.subscriptions┘  batches)

Each input topic has one agent; all of them hand batches of raw records to the same
``Ingestor`` (decode -> validate -> apply -> dead-letter -> progress). Values stay raw
bytes (``value_serializer="raw"``) so validation, not Faust, decides what is bad input and
a bad message can never crash the worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import faust
import redis.asyncio as aioredis

from schemas import DeadLetter

from .ingest import Ingestor, Record
from .settings import INPUT_TOPICS, Settings
from .state import StateStore

log = logging.getLogger(__name__)


def redis_client(settings: Settings) -> aioredis.Redis:
    """A redis-py asyncio client from the settings (``rediss://`` for TLS, ACL user/password)."""
    if not settings.redis_url:
        raise ValueError("redis_url: not set (REDIS_URL)")
    kwargs: dict[str, Any] = {"socket_connect_timeout": 5, "socket_timeout": 10, "health_check_interval": 15}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password:
        kwargs["password"] = settings.redis_password.get_secret_value()
    if settings.redis_url.startswith("rediss://") and settings.redis_ssl_ca_certs:
        kwargs["ssl_ca_certs"] = settings.redis_ssl_ca_certs
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


class Runtime:
    """What the agents share inside the worker's event loop, created on first use."""

    def __init__(self, settings: Settings, deadletter_topic: faust.TopicT) -> None:
        self.settings = settings
        self.deadletter_topic = deadletter_topic
        self._ingestor: Ingestor | None = None
        self._lock = asyncio.Lock()

    async def ingestor(self) -> Ingestor:
        async with self._lock:
            if self._ingestor is None:
                store = StateStore(redis_client(self.settings), self.settings)
                self._ingestor = Ingestor(store, self.settings, self.publish_dead_letters)
            return self._ingestor

    async def publish_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Send and wait for the broker's acknowledgement of every dead letter."""
        futures = [
            await self.deadletter_topic.send(key=d.dead_letter_id.encode(), value=d.model_dump_json().encode())
            for d in letters
        ]
        await asyncio.gather(*futures)


def _ingest_agent(runtime: Runtime) -> Callable[[faust.StreamT], Any]:
    settings = runtime.settings

    async def ingest(stream: faust.StreamT) -> None:
        ingestor = await runtime.ingestor()
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            records = [Record(e.message.topic, e.message.partition, e.message.offset, e.message.value) for e in events]
            try:
                await ingestor.handle(records)
            except BaseException:
                # take_events acknowledges the batch in a ``finally`` (so its offsets would
                # be committed); hold one extra reference so a batch that was not fully
                # applied is never acknowledged. It is redelivered after the restart.
                for e in events:
                    e.message.incref()
                raise

    return ingest


def create_app(settings: Settings | None = None) -> faust.App:
    """Build the Faust app for these settings (topics, agents, producer, consumer group)."""
    settings = settings or Settings()
    if not settings.broker_url:
        raise ValueError("broker_url: not set (BROKER_URL); `stream-app demo` starts an embedded broker")
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=broker_credentials(settings),
        store="memory://",
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        stream_wait_empty=False,
        logging_config=None,
    )
    topics = {
        logical: app.topic(
            settings.topic(logical),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )
        for logical in INPUT_TOPICS
    }
    deadletter = app.topic(settings.topic("deadletter"), key_serializer="raw", value_serializer="raw", partitions=1)
    runtime = Runtime(settings, deadletter)
    for logical, topic in topics.items():
        app.agent(topic, name=f"stream_app.ingest_{logical}")(_ingest_agent(runtime))
    app.runtime = runtime  # type: ignore[attr-defined]  # for tools and tests
    return app
