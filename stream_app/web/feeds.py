"""Live Kafka tails for the dashboard: the alert feed (``cs.alerts``) and churn-probability
history (``cs.scores``).

Each tail is an aiokafka consumer on manually assigned partitions (no consumer group: nothing
to join or rebalance, no committed offsets, and it works on any broker, the embedded one
included). On start it reads back the last ``backlog`` records of each partition, then follows.
Everything kept in memory is bounded.

>>> feed = AlertFeed(max_alerts=2)
>>> for i in range(3):
...     _ = feed.add({"alert_id": f"a{i}", "customer_id": "acme", "ts": "2026-01-01T00:00:00+00:00"})
>>> [a["alert_id"] for a in feed.latest(10)], [(s, a["alert_id"]) for s, a in feed.items_since(2)]
(['a2', 'a1'], [(3, 'a2')])
>>> hist = ChurnHistory(max_customers=1)
>>> hist.add("acme", 1, 0.1); hist.add("acme", 1, 0.2); hist.add("acme", 2, 0.3)
>>> hist.get("acme")
[(1, 0.2), (2, 0.3)]
>>> hist.add("globex", 5, 0.5); hist.get("acme")
[]
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app.scoring.aggregates import DAY_MS
from stream_app.settings import Settings

log = logging.getLogger(__name__)


class AlertFeed:
    """The latest alerts (newest last internally), each with a sequence number for SSE
    resumption, an index by customer, and subscribers woken on every new alert."""

    def __init__(self, max_alerts: int = 5000, per_customer: int = 50) -> None:
        self.buffer: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max_alerts)
        self.by_customer: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self.per_customer = per_customer
        self.max_customers = max_alerts
        self.seq = 0
        self.seen_ids: OrderedDict[str, None] = OrderedDict()  # alerts are at-least-once: de-duplicate by id
        self.subscribers: set[asyncio.Queue[tuple[int, dict[str, Any]] | None]] = set()

    def add(self, alert: dict[str, Any]) -> bool:
        """Record one alert; False if its id was already seen."""
        aid = str(alert.get("alert_id", ""))
        if aid in self.seen_ids:
            return False
        self.seen_ids[aid] = None
        if len(self.seen_ids) > 4 * (self.buffer.maxlen or 1):
            self.seen_ids.popitem(last=False)
        self.seq += 1
        item = (self.seq, alert)
        self.buffer.append(item)
        cid = str(alert.get("customer_id", ""))
        q = self.by_customer.get(cid)
        if q is None:
            q = self.by_customer[cid] = deque(maxlen=self.per_customer)
            if len(self.by_customer) > self.max_customers:
                self.by_customer.popitem(last=False)
        else:
            self.by_customer.move_to_end(cid)
        q.append(alert)
        for sub in list(self.subscribers):
            if sub.qsize() < 1000:  # a stalled client loses alerts rather than memory
                sub.put_nowait(item)
        return True

    def latest(self, n: int, customer_id: str | None = None) -> list[dict[str, Any]]:
        """Up to ``n`` alerts, newest first (by arrival; the page orders by event time)."""
        if customer_id is not None:
            return list(reversed(self.by_customer.get(customer_id, ())))[:n]
        return [a for _, a in reversed(self.buffer)][:n]

    def items_since(self, seq: int) -> list[tuple[int, dict[str, Any]]]:
        """(sequence number, alert) after ``seq``, in arrival order (an SSE client resuming)."""
        return [(s, a) for s, a in self.buffer if s > seq]

    def subscribe(self) -> asyncio.Queue[tuple[int, dict[str, Any]] | None]:
        q: asyncio.Queue[tuple[int, dict[str, Any]] | None] = asyncio.Queue()
        self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[tuple[int, dict[str, Any]] | None]) -> None:
        self.subscribers.discard(q)

    def close(self) -> None:
        """Wake every subscriber with the end-of-stream marker (server shutting down)."""
        for q in list(self.subscribers):
            q.put_nowait(None)


class ChurnHistory:
    """Per customer, the last churn probability of each event-time day (``keep_days`` days),
    in compact arrays; at most ``max_customers`` customers (least recently updated dropped)."""

    def __init__(self, max_customers: int = 50_000, keep_days: int = 35) -> None:
        self.max_customers = max_customers
        self.keep_days = keep_days
        self._data: OrderedDict[str, tuple[array[int], array[float]]] = OrderedDict()

    def add(self, customer_id: str, day: int, p: float) -> None:
        got = self._data.get(customer_id)
        if got is None:
            got = self._data[customer_id] = (array("i"), array("f"))
            if len(self._data) > self.max_customers:
                self._data.popitem(last=False)
        else:
            self._data.move_to_end(customer_id)
        days, ps = got
        if days and day == days[-1]:
            ps[-1] = p
        elif not days or day > days[-1]:
            days.append(day)
            ps.append(p)
        else:  # an older day (rare: snapshots arrive in event-time order per customer)
            for i, d in enumerate(days):
                if d == day:
                    ps[i] = p
                    break
                if d > day:
                    days.insert(i, day)
                    ps.insert(i, p)
                    break
        while days and days[0] < days[-1] - self.keep_days:
            days.pop(0)
            ps.pop(0)

    def get(self, customer_id: str) -> list[tuple[int, float]]:
        got = self._data.get(customer_id)
        if got is None:
            return []
        return [(d, round(p, 4)) for d, p in zip(*got)]

    def __len__(self) -> int:
        return len(self._data)


def _day_of_iso(ts: str) -> int:
    return int(datetime.fromisoformat(ts).timestamp() * 1000) // DAY_MS


async def tail_topic(
    settings: Settings, logical: str, backlog: int, handle: Callable[[dict[str, Any]], object],
    ready: asyncio.Event | None = None,
) -> None:
    """Follow a topic forever: the last ``backlog`` records per partition, then new ones.
    Waits for the topic to exist; reconnects after broker errors."""
    topic = settings.topic(logical)
    while True:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False,
            **settings.kafka_client_kwargs(),  # type: ignore[arg-type]
        )
        try:
            await consumer.start()
            parts: set[int] = set()
            while not parts:
                await consumer._client.force_metadata_update()  # the topic may be new to this client
                parts = consumer.partitions_for_topic(topic) or set()
                if not parts:
                    await asyncio.sleep(1.0)
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            for tp in tps:
                consumer.seek(tp, max(starts[tp], ends[tp] - backlog))
            caught_up = False
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=500, max_records=5000)
                for msgs in batch.values():
                    for m in msgs:
                        try:
                            handle(orjson.loads(m.value))
                        except Exception:  # noqa: BLE001 - one odd record must not stop the feed
                            log.debug("skipped a record on %s", topic, exc_info=True)
                if not caught_up and ready is not None:
                    positions = {tp: await consumer.position(tp) for tp in tps}
                    if all(positions[tp] >= ends[tp] for tp in tps):
                        caught_up = True
                        ready.set()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - broker away: try again shortly
            log.warning("tail of %s failed; retrying", topic, exc_info=True)
            await asyncio.sleep(2.0)
        finally:
            with contextlib.suppress(Exception):  # the broker may be gone already
                await consumer.stop()


class LiveFeeds:
    """The dashboard's Kafka side: alert feed and churn history, with their tail tasks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.alerts = AlertFeed()
        self.churn = ChurnHistory()
        self.alerts_ready = asyncio.Event()
        self.scores_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def _on_score(self, snap: dict[str, Any]) -> None:
        self.churn.add(str(snap["customer_id"]), _day_of_iso(str(snap["ts"])), float(snap["churn_probability"]))

    def start(self) -> None:
        if self._tasks or not self.settings.broker_url:
            return
        s = self.settings
        self._tasks = [
            asyncio.create_task(tail_topic(s, "alerts", s.dashboard_alert_backlog, self.alerts.add, self.alerts_ready)),
            asyncio.create_task(tail_topic(s, "scores", s.dashboard_score_backlog, self._on_score, self.scores_ready)),
        ]

    async def stop(self) -> None:
        self.alerts.close()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):  # shutting down
                await t
        self._tasks = []
