"""The Faust app, wired as the data flow:

    cs.activity ┐                                ┌─> Redis: per-customer state (atomic per customer)
    cs.tickets  ├─> ingest agents ─> Ingestor ───┼─> cs.deadletter   invalid input, with reasons
    cs.surveys  │   (take_events    ordered by   ├─> cs.alerts       at-risk alerts
    cs.subscriptions┘  batches)     event time,  ├─> cs.scores       health snapshots
                                    + Scorer     └─> Redis: label snapshots ─> learner (leader timer)
                                                          ─> model checkpoints per event-time day ─> Scorer

Each input topic has one agent; all of them hand batches of raw records to the same
``Ingestor``, which holds each record until its partition group's event-time watermark passes
it, then applies and scores in that order. The agent acknowledges only the records the
ingestor reports done; held ones get an extra reference (``incref``) so ``take_events`` does
not acknowledge them, and are acknowledged when they are done, from whichever agent or the
pump timer finished them. Offsets therefore never get committed past unapplied records.
The learner runs on the Faust leader only (one per deployment, a single model); resolved
examples are also published to ``cs.model-examples`` as an audit trail. Values stay raw
bytes (``value_serializer="raw"``) so validation, not Faust, decides what is bad input and a
bad message can never crash the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

import faust
import redis.asyncio as aioredis

from schemas import Alert, DeadLetter, ScoreSnapshot

import orjson

from stream_app.pipeline.faust_tuning import FaustTuning
from stream_app.pipeline.faust_tuning import install as install_tuning
from stream_app.pipeline.ingest import TRANSIENT_ERRORS, Ingestor, Record, StateLostError
from stream_app.pipeline.observer import PipelineObserver
from stream_app.ops.health import mount_ops
from stream_app.pipeline.scorer import Learner
from stream_app.settings import EXAMPLES_TOPIC, INPUT_TOPICS, Settings
from stream_app.state.store import StateStore

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


RecordKey = tuple[str, int, int]


class Runtime:
    """What the agents share inside the worker's event loop, created on first use."""

    def __init__(self, settings: Settings, outputs: FaustOutputs) -> None:
        self.settings = settings
        self.outputs = outputs
        self._ingestor: Ingestor | None = None
        self._learner: Learner | None = None
        self._lock = asyncio.Lock()
        #: records the ingestor holds (not done), by key: acknowledged when done
        self.held: dict[RecordKey, list[Any]] = {}
        self.observer: PipelineObserver | None = None  # set by stream_app.ops.health.mount_ops

    async def ingestor(self) -> Ingestor:
        async with self._lock:
            if self._ingestor is None:
                store = StateStore(redis_client(self.settings), self.settings)
                self._ingestor = Ingestor(store, self.settings, self.outputs, inline_learner=False,
                                          observer=self.observer)
            return self._ingestor

    async def learner(self) -> Learner:
        async with self._lock:
            if self._learner is None:
                store = StateStore(redis_client(self.settings), self.settings)
                self._learner = Learner(store, self.settings, self.outputs)
            return self._learner

    def hold(self, events: list[Any], done: list[RecordKey]) -> None:
        """Keep the not-done events of a batch un-acknowledged; acknowledge held ones now done."""
        finished = set(done)
        ingestor = self._ingestor
        for e in events:
            m = e.message
            key = (m.topic, m.partition, m.offset)
            if key not in finished:
                m.incref()  # never acknowledged here: held, or no longer ours
                if ingestor is None or ingestor.owns((m.topic, m.partition)):
                    self.held.setdefault(key, []).append(e)
        self.release(done)

    def release(self, done: list[RecordKey]) -> None:
        for key in done:
            for e in self.held.pop(key, ()):
                e.ack()

    def forget(self, tps: set[tuple[str, int]]) -> None:
        """Revoked partitions: their held records are re-fetched by the new owner; never ack them."""
        for key in [k for k in self.held if (k[0], k[1]) in tps]:
            del self.held[key]


def _ingest_agent(runtime: Runtime) -> Callable[[faust.StreamT], Any]:
    settings = runtime.settings

    async def ingest(stream: faust.StreamT) -> None:
        ingestor = await runtime.ingestor()
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            consumer = stream.app.consumer
            records = [
                Record(e.message.topic, e.message.partition, e.message.offset, e.message.value,
                       consumer.highwater(e.message.tp),
                       timestamp_ms=int(e.message.timestamp * 1000) if e.message.timestamp else None)
                for e in events
            ]
            try:
                done = await ingestor.handle(records)
            except StateLostError as exc:
                _fatal(exc)
            except BaseException:
                # take_events acknowledges the batch in a ``finally`` (so its offsets would
                # be committed); hold one extra reference so a batch that was not fully
                # applied is never acknowledged. It is redelivered after the restart.
                for e in events:
                    e.message.incref()
                raise
            runtime.hold(list(events), done)

    return ingest


def _fatal(exc: Exception) -> None:
    """Stop at once, acknowledging nothing: continuing would build on a wrong state, and a
    supervisor restarting the worker gets the same clear message until someone acts."""
    log.critical("%s", exc)
    logging.shutdown()
    os._exit(3)


def _wire_lifecycle(app: faust.App, runtime: Runtime) -> None:
    """Assignment, revocation, the pump and the learner."""
    settings = runtime.settings
    inputs = {settings.topic(t) for t in INPUT_TOPICS}

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        tps = [tp for tp in assigned if tp.topic in inputs]
        if not tps:
            return
        ends = await app.consumer.highwaters(*tps)
        starts = await app.consumer.earliest_offsets(*tps)
        ingestor = await runtime.ingestor()
        try:
            await ingestor.assign({(tp.topic, tp.partition): int(end) for tp, end in ends.items()},
                                  {(tp.topic, tp.partition): int(v) for tp, v in starts.items()})
        except StateLostError as exc:
            _fatal(exc)

    @app.on_partitions_revoked.connect  # type: ignore[misc]
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        tps = {(tp.topic, tp.partition) for tp in revoked if tp.topic in inputs}
        if tps and runtime._ingestor is not None:
            await runtime._ingestor.revoke(tps)
            runtime.forget(tps)

    @app.timer(0.25, name="stream_app.pump")
    async def pump() -> None:
        # releases what became releasable without new input (the learner completed a day,
        # another worker's progress moved the watermark); with nothing held too: the
        # segmentation learns the days the learner completed after the last batch
        if runtime._ingestor is not None:
            try:
                runtime.release(await runtime._ingestor.pump())
            except StateLostError as exc:
                _fatal(exc)

    @app.timer(5.0, name="stream_app.state_check")
    async def state_check() -> None:
        if runtime._ingestor is not None:
            try:
                await runtime._ingestor.check_state()
            except StateLostError as exc:
                _fatal(exc)
            except TRANSIENT_ERRORS:
                pass  # Redis away: the ingest path retries and logs it

    @app.timer(max(settings.label_resolve_interval_s, 0.1), on_leader=True, name="stream_app.learner")
    async def learn() -> None:
        learner = await runtime.learner()
        try:
            await learner.advance()
        except TRANSIENT_ERRORS as exc:  # Redis away: the next tick tries again
            log.error("learner: dependency unavailable (%s: %s)", type(exc).__name__, exc)


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
    install_tuning(app, FaustTuning(fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                                    fast_drain=settings.faust_fast_drain))
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
    _wire_lifecycle(app, runtime)
    mount_ops(app, settings, runtime)  # /metrics, /health, watchdog, WEB_TOKEN (stream_app/ops.py)
    app.runtime = runtime  # type: ignore[attr-defined]  # for tools and tests
    from stream_app.web.dashboard import mount_dashboard  # the live dashboard, on the worker's web server (WEB_ENABLED)

    mount_dashboard(app, settings)
    return app
