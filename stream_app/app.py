"""The Faust app, wired as the data flow:

    cs.activity ┐                               ┌─> Redis: per-customer state (atomic per customer)
    cs.tickets  ├─> ingest agents ─> Ingestor ──┼─> cs.deadletter   invalid input, with reasons
    cs.surveys  │   (take_events      + Scorer  ├─> cs.alerts       at-risk alerts
    cs.subscriptions┘  batches)                 ├─> cs.scores       health snapshots
                                                └─> cs.model-examples (1 partition) ─> learn agent
                                                                     └─> Redis: model checkpoint ─> scorers

Each input topic has one agent; all of them hand batches of raw records to the same
``Ingestor`` (decode -> validate -> apply -> dead-letter -> score/alert -> progress).
Resolved training examples go through one single-partition topic, so however many workers
run there is exactly one learner (the owner of that partition) and one model. Values stay raw
bytes (``value_serializer="raw"``) so validation, not Faust, decides what is bad input and
a bad message can never crash the worker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import faust
import redis.asyncio as aioredis

from schemas import Alert, DeadLetter, ScoreSnapshot

import orjson

from .ingest import Ingestor, Record
from .scorer import Learner
from .settings import EXAMPLES_TOPIC, INPUT_TOPICS, Settings
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


class FaustOutputs:
    """Publishes to the output topics and waits for the broker's acknowledgements."""

    def __init__(self, topics: dict[str, faust.TopicT]) -> None:
        self.topics = topics

    async def _send(self, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
        t = self.topics[topic]
        futures = [await t.send(key=k, value=v) for k, v in items]
        await asyncio.gather(*futures)

    async def dead_letters(self, letters: list[DeadLetter]) -> None:
        await self._send("deadletter", [(d.dead_letter_id.encode(), d.model_dump_json().encode()) for d in letters])

    async def alerts(self, alerts: list[Alert]) -> None:
        await self._send("alerts", [(a.customer_id.encode(), a.model_dump_json().encode()) for a in alerts])

    async def scores(self, scores: list[ScoreSnapshot]) -> None:
        await self._send("scores", [(s.customer_id.encode(), s.model_dump_json().encode()) for s in scores])

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        await self._send("examples", [(None, orjson.dumps(e)) for e in examples])


class Runtime:
    """What the agents share inside the worker's event loop, created on first use."""

    def __init__(self, settings: Settings, outputs: FaustOutputs) -> None:
        self.settings = settings
        self.outputs = outputs
        self._ingestor: Ingestor | None = None
        self._learner: Learner | None = None
        self._lock = asyncio.Lock()

    async def ingestor(self) -> Ingestor:
        async with self._lock:
            if self._ingestor is None:
                store = StateStore(redis_client(self.settings), self.settings)
                self._ingestor = Ingestor(store, self.settings, self.outputs)
            return self._ingestor

    async def learner(self) -> Learner:
        async with self._lock:
            if self._learner is None:
                self._learner = Learner(redis_client(self.settings), self.settings)
            return self._learner


def _ingest_agent(runtime: Runtime) -> Callable[[faust.StreamT], Any]:
    settings = runtime.settings

    async def ingest(stream: faust.StreamT) -> None:
        ingestor = await runtime.ingestor()
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            consumer = stream.app.consumer
            records = [
                Record(e.message.topic, e.message.partition, e.message.offset, e.message.value,
                       consumer.highwater(e.message.tp))
                for e in events
            ]
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


def _learn_agent(runtime: Runtime) -> Callable[[faust.StreamT], Any]:
    async def learn(stream: faust.StreamT) -> None:
        learner = await runtime.learner()
        async for events in stream.take_events(1000, within=0.5):
            examples = [orjson.loads(e.message.value) for e in events]
            try:
                await learner.learn(examples)
            except BaseException:
                for e in events:  # same rule as ingestion: nothing acknowledged unless learnt
                    e.message.incref()
                raise

    return learn


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
    def out_topic(logical: str, partitions: int) -> faust.TopicT:
        return app.topic(settings.topic(logical), key_serializer="raw", value_serializer="raw", partitions=partitions)

    outputs = FaustOutputs({
        "deadletter": out_topic("deadletter", 1),
        "alerts": out_topic("alerts", settings.topic_partitions),
        "scores": out_topic("scores", settings.topic_partitions),
        "examples": out_topic(EXAMPLES_TOPIC, 1),
    })
    runtime = Runtime(settings, outputs)
    for logical, topic in topics.items():
        app.agent(topic, name=f"stream_app.ingest_{logical}")(_ingest_agent(runtime))
    app.agent(outputs.topics["examples"], name="stream_app.learn")(_learn_agent(runtime))
    app.runtime = runtime  # type: ignore[attr-defined]  # for tools and tests
    return app
