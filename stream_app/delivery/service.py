"""The delivery service: a consumer group of its own on ``cs.alerts`` (and ``cs.scores`` when a
CRM sink syncs from snapshots), sending each record to the sinks that should receive it.

The loop, per fetched batch and in offset order: parse, look up the customers' context when a
route needs it, plan every sink (routing, quiet period, CRM trigger), then start one task per
record that delivers to its sinks concurrently. A sink's deliveries of one customer run one at a
time, in order. A record is settled when every planned sink accepted it or, its retry budget
spent, it was parked on ``cs.alerts.undelivered``; offsets are committed up to the first
unsettled record of each partition (``offsets``), every ``COMMIT_INTERVAL_S`` and on a
rebalance. So a crash re-sends at most the records in flight, each with the same
``Idempotency-Key``. At ``DELIVERY_MAX_IN_FLIGHT`` unsettled records the partitions are paused
(the loop keeps polling, so the group does not evict it): nothing is dropped, the backlog waits
in Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator, Collection
from datetime import datetime, timezone
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from schemas import Undelivered
from stream_app.delivery.config import DeliveryConfig, SlackSink
from stream_app.delivery.metrics import DeliveryMetrics, metrics_app
from stream_app.delivery.offsets import OffsetTracker
from stream_app.delivery.routing import Context
from stream_app.delivery.sinks import ALERTS, SCORES, AnySink, Plan, Planner
from stream_app.delivery.transport import HttpSender, Outcome, RateLimiter
from stream_app.pipeline.clients import redis_client
from stream_app.settings import UNDELIVERED_TOPIC, Settings
from stream_app.state import layout

log = logging.getLogger(__name__)


def group_id(settings: Settings) -> str:
    return settings.delivery_group or f"{settings.app_id}-delivery"


def parse(raw: bytes | None) -> dict[str, Any] | None:
    """A record's JSON object (None: not JSON, or not an object)."""
    try:
        msg = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return msg if isinstance(msg, dict) else None


class KeyedOrder:
    """One at a time per key, in the order the turns were asked for."""

    def __init__(self) -> None:
        self._tails: dict[Any, asyncio.Future[None]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, key: Any) -> AsyncIterator[None]:
        prev = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        try:
            if prev is not None and not prev.done():
                await asyncio.wait([prev])  # (not ``await prev``: a cancelled waiter must not cancel it)
            yield
        finally:
            mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: DeliveryService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self.service.release(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        log.info("delivery: assigned %s", sorted(f"{tp.topic}:{tp.partition}" for tp in assigned))


class DeliveryService:
    """Reads, plans, delivers, parks and commits; ``await run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: Settings, config: DeliveryConfig, revoke_wait_s: float = 5.0) -> None:
        self.settings, self.config = settings, config
        self.planner = Planner(config, settings.dashboard_url)
        self.limiters = {s.name: RateLimiter(s.rate_per_s) for s in config.sinks if isinstance(s, SlackSink)}
        self.offsets = OffsetTracker()
        self.depth: Tally[str] = Tally({s.name: 0 for s in config.sinks})
        self.metrics = DeliveryMetrics(lambda: self.depth, lambda: self.offsets.in_flight, self.offsets.oldest_ms)
        self.order = KeyedOrder()
        self.tasks: dict[tuple[TopicPartition, int], asyncio.Task[None]] = {}
        self.stages: dict[str, str] = {}  # customer -> lifecycle stage of its latest cs.scores snapshot
        self.revoke_wait_s = revoke_wait_s
        self.alerts_topic = settings.topic(ALERTS)
        self.undelivered_topic = settings.topic(UNDELIVERED_TOPIC)
        self.topics = [self.alerts_topic] + ([settings.topic(SCORES)] if config.reads_scores else [])
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.sender: HttpSender | None = None
        self.redis: Any = None
        self.running = False

    # --- lifecycle ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        s = self.settings
        kw = s.kafka_client_kwargs()
        runner = None
        async with aiohttp.ClientSession() as session:
            self.sender = HttpSender(session)
            self.producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers(), acks="all", **kw)  # type: ignore[arg-type]
            self.consumer = AIOKafkaConsumer(
                bootstrap_servers=s.bootstrap_servers(), group_id=group_id(s), enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=s.consumer_fetch_max_wait_ms,
                session_timeout_ms=int(s.session_timeout_s * 1000), heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
                rebalance_timeout_ms=int(s.rebalance_timeout_s * 1000), max_poll_interval_ms=300_000,
                **kw,  # type: ignore[arg-type]
            )
            if self.planner.needs_context() and s.redis_url:
                self.redis = redis_client(s)
            await self.producer.start()
            try:
                self.consumer.subscribe(self.topics, listener=_Rebalance(self))
                await self.consumer.start()
                if s.delivery_port:
                    runner = web.AppRunner(metrics_app(s, self.metrics, self.health), access_log=None)
                    await runner.setup()
                    await web.TCPSite(runner, "0.0.0.0", s.delivery_port).start()
                self.running = True
                committer = asyncio.create_task(self._commit_loop(stop))
                if ready is not None:
                    ready.set()
                try:
                    await self._consume(stop)
                finally:
                    committer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await committer
                    await self.release(list(self.consumer.assignment()))
            finally:
                self.running = False
                if runner is not None:
                    await runner.cleanup()
                with contextlib.suppress(Exception):
                    await self.consumer.stop()
                await self.producer.stop()
                if self.redis is not None:
                    await self.redis.aclose()

    async def _consume(self, stop: asyncio.Event) -> None:
        assert self.consumer is not None
        limit = self.settings.delivery_max_in_flight
        paused = False
        while not stop.is_set():
            room = limit - self.offsets.in_flight
            if room <= 0 and not paused:
                self.consumer.pause(*self.consumer.assignment())
                paused = True
            elif room > 0 and paused:
                self.consumer.resume(*self.consumer.assignment())
                paused = False
            batch = await self.consumer.getmany(timeout_ms=200, max_records=max(1, min(500, room)))
            if batch:
                await self.dispatch([(tp, m) for tp, msgs in batch.items() for m in msgs])

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self.settings.commit_interval_s)
            await self.commit()

    async def commit(self, only: Collection[TopicPartition] | None = None) -> None:
        assert self.consumer is not None
        offsets = self.offsets.committable()
        assigned = self.consumer.assignment()
        todo = {tp: o for tp, o in offsets.items() if tp in assigned and (only is None or tp in only)}
        if not todo:
            return
        try:
            await self.consumer.commit(todo)  # type: ignore[arg-type]
        except KafkaError as exc:  # a rebalance under way: the records are re-read, same keys
            log.warning("delivery: commit failed (%s); records since the last commit may be re-sent", type(exc).__name__)

    async def release(self, tps: Collection[TopicPartition]) -> None:
        """Before partitions go (rebalance, stop): let their deliveries finish for a while, commit
        what settled, cancel the rest (the next owner re-sends them with the same keys)."""
        tps = set(tps)
        mine = [t for (tp, _), t in self.tasks.items() if tp in tps]
        if mine:
            await asyncio.wait(mine, timeout=self.revoke_wait_s)
        await self.commit(tps)
        for (tp, off), task in list(self.tasks.items()):
            if tp in tps:
                task.cancel()
        self.offsets.forget(tps)

    def health(self) -> dict[str, object]:
        assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in self.consumer.assignment()) if self.consumer else []
        oldest = self.offsets.oldest_ms()
        return {"status": "ok" if self.running else "starting", "group": group_id(self.settings),
                "assigned": assigned, "in_flight": self.offsets.in_flight, "queue_depth": dict(self.depth),
                "oldest_in_flight_age_s": None if oldest is None else round(time.time() - oldest / 1000, 3)}

    # --- per batch ------------------------------------------------------------------------------
    async def contexts(self, customers: set[str]) -> dict[str, Context]:
        """The customers' routing context: the lifecycle stage of their latest snapshot, else
        the one in Redis. (Segments are not known per customer outside the portfolio's period
        records: a route listing segments matches no customer yet.)"""
        out = {c: Context(lifecycle_stage=self.stages.get(c)) for c in customers}
        need = sorted(c for c, ctx in out.items() if ctx.lifecycle_stage is None)
        if self.redis is not None and need:
            keys = layout.Keys(self.settings.key_prefix)
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for c in need:
                        pipe.hget(keys.customer(c).main, layout.STAGE)
                    stages = await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - Redis away: route on what the alert says
                log.warning("delivery: no customer context from Redis (%s)", type(exc).__name__)
                stages = [None] * len(need)
            for c, st in zip(need, stages):
                out[c] = Context(lifecycle_stage=st.decode() if isinstance(st, bytes) else st)
        return out

    async def dispatch(self, records: list[tuple[TopicPartition, ConsumerRecord[Any, Any]]]) -> None:
        parsed = [(tp, m, parse(m.value)) for tp, m in records]
        for tp, m, msg in parsed:
            if msg is not None and tp.topic != self.alerts_topic and msg.get("lifecycle_stage"):
                self.stages[str(msg.get("customer_id"))] = str(msg["lifecycle_stage"])
        ctx: dict[str, Context] = {}
        if self.planner.needs_context():
            ctx = await self.contexts({str(msg.get("customer_id")) for _, _, msg in parsed if msg is not None})
        for tp, m, msg in parsed:
            self.offsets.begin(tp, m.offset, m.timestamp)
            if msg is None or (tp.topic == self.alerts_topic and not msg.get("alert_id")):
                plans: list[Plan] = []
                coro = self._park_invalid(tp, m, msg)
            else:
                source = ALERTS if tp.topic == self.alerts_topic else SCORES
                cid = str(msg.get("customer_id"))
                plans = self.planner.plan(msg, m.value, source, ctx.get(cid) or Context(lifecycle_stage=self.stages.get(cid)))
                coro = self._deliver_all(tp, m, msg, plans)
            for p in plans:
                if p.request is None:
                    self.metrics.outcome(p.sink.name, "skipped")
            self._spawn(tp, m.offset, coro)

    def _spawn(self, tp: TopicPartition, offset: int, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks[(tp, offset)] = task

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.pop((tp, offset), None)
            if t.cancelled():
                return  # revoked or stopping: not settled, re-read later
            if t.exception() is not None:
                log.error("delivery: record %s:%s not settled", tp, offset, exc_info=t.exception())
                return
            self.offsets.finish(tp, offset)

        task.add_done_callback(done)

    async def _deliver_all(self, tp: TopicPartition, m: ConsumerRecord[Any, Any], msg: dict[str, Any],
                           plans: list[Plan]) -> None:
        await asyncio.gather(*(self._deliver_one(tp, m, msg, p) for p in plans if p.request is not None))

    async def _deliver_one(self, tp: TopicPartition, m: ConsumerRecord[Any, Any], msg: dict[str, Any], plan: Plan) -> None:
        assert plan.request is not None and self.sender is not None
        sink = plan.sink
        self.depth[sink.name] += 1
        try:
            async with self.order.turn((sink.name, msg.get("customer_id"))):
                outcome = await self.sender.deliver(
                    plan.request, sink.timeout_s, sink.retry, self.limiters.get(sink.name),
                    on_retry=lambda status: self.metrics.outcome(sink.name, "retried"))
        finally:
            self.depth[sink.name] -= 1
        if outcome.accepted:
            self.metrics.outcome(sink.name, "delivered")
            if m.timestamp:
                self.metrics.latency.labels(sink.name).observe(max(0.0, time.time() - m.timestamp / 1000))
            return
        log.warning("delivery: %s did not take %s: %s", sink.name, msg.get("alert_id") or msg.get("customer_id"),
                    outcome.last_error)
        await self.park(tp, m, msg, sink, outcome)
        self.metrics.outcome(sink.name, "parked")

    async def park(self, tp: TopicPartition, m: ConsumerRecord[Any, Any], msg: dict[str, Any] | None,
                   sink: AnySink | None, outcome: Outcome) -> None:
        """Publish the record on the undelivered topic; retried until the broker takes it."""
        assert self.producer is not None
        now = datetime.now(timezone.utc)
        alert_id = (msg or {}).get("alert_id") or (
            f"{msg.get('customer_id')}:score:{msg.get('ts')}" if msg else f"{tp.topic}:{tp.partition}:{m.offset}")
        record = Undelivered(
            alert_id=str(alert_id), customer_id=str(msg["customer_id"]) if msg and msg.get("customer_id") else None,
            sink=sink.name if sink else "-", sink_type=sink.type if sink else None, attempts=outcome.attempts,
            last_status=outcome.last_status, last_error=outcome.last_error or "unknown",
            first_attempt_at=datetime.fromtimestamp(outcome.first_attempt_at, timezone.utc) if outcome.first_attempt_at else None,
            parked_at=now, topic=tp.topic, partition=tp.partition, offset=m.offset, alert=msg,
            payload_text=None if msg is not None else bytes(m.value or b"").decode("utf-8", "replace")[:65536],
        )
        value = record.model_dump_json().encode()
        delay = 0.5
        while True:
            try:
                await self.producer.send_and_wait(self.undelivered_topic, value, key=m.key)
                return
            except KafkaError as exc:
                log.warning("delivery: cannot park on %s (%s); retrying", self.undelivered_topic, type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _park_invalid(self, tp: TopicPartition, m: ConsumerRecord[Any, Any], msg: dict[str, Any] | None) -> None:
        self.metrics.outcome("-", "invalid")
        await self.park(tp, m, msg, None, Outcome(False, 0, None, "not an alert (no JSON object with an alert_id)", None, 0.0))
