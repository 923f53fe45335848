"""``stream-app demo``: the whole pipeline on one machine, with nothing installed but this package.

Starts what is missing (an embedded broker when ``BROKER_URL`` is unset, an embedded Redis
when ``REDIS_URL`` is unset or unreachable), creates the topics, runs a worker process, and
streams a simulated customer base into Kafka at ``speed`` simulated days per second while a
live view shows the state filling in Redis. Ctrl-C stops everything it started, and only that.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from .aggregates import compute_aggregates
from .embedded import EmbeddedBroker, EmbeddedRedis, ensure_topics, redis_reachable
from .settings import INPUT_TOPICS, Settings
from .simulator import SimConfig, Simulator
from .state import StateStore

console = Console()

#: A few deliberately broken events per thousand, so the dead-letter path is visible.
BAD_EVERY = 400


@dataclass
class DemoStats:
    produced: dict[str, int] = field(default_factory=dict)
    bad_produced: int = 0
    sim_time: str = ""
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=400))


def _worker_env(settings: Settings, broker_url: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BROKER_URL=broker_url,
        REDIS_URL=redis_url,
        TOPIC_PREFIX=settings.topic_prefix,
        KEY_PREFIX=settings.key_prefix,
        # one worker on a single-node broker: a short rebalance wait makes start-up ~6 s
        REBALANCE_TIMEOUT_S=env.get("REBALANCE_TIMEOUT_S", "4"),
        SESSION_TIMEOUT_S=env.get("SESSION_TIMEOUT_S", "10"),
        HEARTBEAT_INTERVAL_S=env.get("HEARTBEAT_INTERVAL_S", "1"),
    )
    return env


def start_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_app.cli", "worker"],
        env=env,
        stdout=open(log_path, "wb"),  # noqa: SIM115 - lives as long as the process
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _bad_event(i: int, cid: str) -> tuple[str, bytes]:
    """One of a few kinds of contract violations, for the dead-letter path."""
    kinds: list[bytes] = [
        b'{"event_id": "bad-%d", "customer_id": "%s", "ts": "yesterday", "action": "login"}',
        b'{"event_id": "bad-%d", "customer_id": "%s", "ts": 0, "survey": "nps", "score": 42}',
        b'{"event_id": "bad-%d", "customer_id": "%s" ',
    ]
    topics = ["activity", "surveys", "tickets"]
    k = i % len(kinds)
    return topics[k], kinds[k].replace(b"%d", str(i).encode()).replace(b"%s", cid.encode())


async def produce_simulation(
    settings: Settings, customers: int, days: int, speed: float, stats: DemoStats, stop: asyncio.Event
) -> None:
    """Stream the simulator into Kafka, pacing event time at ``speed`` days per second."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers(), linger_ms=10, **settings.kafka_client_kwargs()  # type: ignore[arg-type]
    )
    await producer.start()
    try:
        sim = Simulator(SimConfig(customers=customers, days=days))
        t0_wall = time.monotonic()
        t0_sim: int | None = None
        for n, ev in enumerate(sim.events(), start=1):
            if stop.is_set():
                break
            if t0_sim is None:
                t0_sim = ev.ts_ms
            due = (ev.ts_ms - t0_sim) / 86_400_000 / speed
            ahead = due - (time.monotonic() - t0_wall)
            if ahead > 0:
                await asyncio.sleep(ahead)
            cid = ev.event["customer_id"]
            await producer.send(settings.topic(ev.topic), orjson.dumps(ev.event), key=cid.encode())
            stats.produced[ev.topic] = stats.produced.get(ev.topic, 0) + 1
            stats.recent.append(cid)
            stats.sim_time = str(ev.event["ts"])[:16]
            if n % BAD_EVERY == 0:
                topic, value = _bad_event(n, cid)
                await producer.send(settings.topic(topic), value, key=cid.encode())
                stats.bad_produced += 1
        await producer.flush()
    finally:
        await producer.stop()


async def _handled(settings: Settings, store: StateStore) -> int:
    """Records the worker has handled (applied or dead-lettered), from its partition progress."""
    handled = 0
    for logical in INPUT_TOPICS:
        for p in range(settings.topic_partitions):
            progress = await store.get_progress(settings.topic(logical), p)
            if progress is not None:
                handled += progress[0] + 1
    return handled


def _view(settings: Settings, stats: DemoStats, handled: int, dead: int, rows: list[list[str]], note: str) -> Group:
    produced = sum(stats.produced.values()) + stats.bad_produced
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[bold]simulated time[/bold] {stats.sim_time}",
        f"[bold]produced[/bold] {produced:,}",
        f"[bold]handled by worker[/bold] {handled:,}",
        f"[bold]lag[/bold] {max(produced - handled, 0):,}",
        f"[bold]dead-lettered[/bold] {dead:,} (of {stats.bad_produced} bad injected)",
    )
    table = Table(title="recently active customers (state read back from Redis)", expand=True)
    for col in ("customer", "status", "MRR", "MRR Δ90d", "events 7d", "active days 30d", "users 30d",
                "features 30d", "open tickets", "NPS 90d", "CSAT 90d", "days idle"):
        table.add_column(col, justify="right" if col != "customer" else "left")
    for r in rows:
        table.add_row(*r)
    return Group(Panel(head, title="churn-stream demo", subtitle=note), table)


async def _customer_rows(store: StateStore, settings: Settings, ids: list[str], now_ms: int) -> list[list[str]]:
    rows = []
    for cid in ids:
        raw = await store.read(cid)
        if not raw.exists:
            continue
        a = compute_aggregates(raw, now_ms, settings.windows_days)
        w7, w30, w90 = (a.windows.get(f"{d}d") for d in (7, 30, 90))
        fmt = lambda v, spec="": "-" if v is None else format(v, spec)  # noqa: E731
        rows.append([
            cid, a.subscription_status or "-", fmt(a.mrr, ",.0f"), fmt(a.mrr_change, "+,.0f"),
            fmt(w7.activity_events if w7 else None), fmt(w30.active_days if w30 else None),
            fmt(w30.active_users if w30 else None), fmt(w30.features_used if w30 else None),
            str(a.open_tickets), fmt(w90.nps if w90 else None, ".0f"),
            fmt(w90.csat if w90 else None, ".0%"), fmt(a.days_since_last_activity, ".1f"),
        ])
    return rows


async def _count_dead_letters(settings: Settings) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs())  # type: ignore[arg-type]
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic("deadletter"), 0)
        ends = await consumer.end_offsets([tp])
        return int(ends[tp])
    finally:
        await consumer.stop()


async def _live(settings: Settings, customers: int, days: int, speed: float, duration: float | None,
                worker: subprocess.Popen[bytes], worker_log: Path) -> int:
    from .app import redis_client

    stats = DemoStats()
    stop = asyncio.Event()
    producer_task = asyncio.create_task(produce_simulation(settings, customers, days, speed, stats, stop))
    client = redis_client(settings)
    store = StateStore(client, settings)
    started = time.monotonic()
    try:
        with Live(console=console, refresh_per_second=2, screen=False) as live:
            while True:
                if worker.poll() is not None:
                    live.stop()
                    console.print(f"[red]worker exited ({worker.returncode}); log:[/red]\n{worker_log.read_text()[-3000:]}")
                    return 1
                handled = await _handled(settings, store)
                dead = await _count_dead_letters(settings)
                now_ms = await store.watermark() or 0
                ids = list(dict.fromkeys(reversed(stats.recent)))[:12]
                rows = await _customer_rows(store, settings, ids, now_ms) if now_ms else []
                note = "waiting for the worker to join its group (~6 s)" if handled == 0 else "Ctrl-C to stop"
                if producer_task.done() and handled >= sum(stats.produced.values()) + stats.bad_produced:
                    note = "simulation finished; all events handled. Ctrl-C to stop"
                live.update(_view(settings, stats, handled, dead, rows, note))
                if duration is not None and time.monotonic() - started > duration:
                    return 0
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        producer_task.cancel()
        try:
            await producer_task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
            pass
        await client.aclose()


def run_demo(customers: int, days: int, speed: float, duration: float | None) -> int:
    settings = Settings()
    started: list[object] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        broker_url = settings.broker_url
        if not broker_url:
            broker = EmbeddedBroker().start()
            started.append(broker)
            broker_url = broker.url
            console.print(f"[green]started embedded Kafka-protocol broker[/green] {broker.bootstrap}")
        redis_url = settings.redis_url
        if not redis_url or not redis_reachable(redis_url):
            embedded = EmbeddedRedis().start()
            started.append(embedded)
            redis_url = embedded.url
            console.print(f"[green]started embedded Redis[/green] {redis_url}")
        settings = settings.model_copy(update={"broker_url": broker_url, "redis_url": redis_url})
        from .cli import all_topics

        asyncio.run(ensure_topics(settings.bootstrap_servers(), all_topics(settings), settings.topic_replication,
                                  settings.kafka_client_kwargs()))
        worker_log = Path(tempfile.mkstemp(prefix="churn-stream-worker-", suffix=".log")[1])
        worker = start_worker(_worker_env(settings, broker_url, redis_url), worker_log)
        console.print(f"started worker (pid {worker.pid}, log {worker_log})")
        return asyncio.run(_live(settings, customers, days, speed, duration, worker, worker_log))
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process(worker)
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]
        console.print("stopped everything the demo started")
