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

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from stream_app.core import DAY_MS
from stream_app.pipeline.clients import redis_client
from stream_app.read.queries import riskiest
from stream_app.settings import Settings, all_topics
from stream_app.state.store import StateStore
from stream_app.tools.embedded import (
    EmbeddedBroker,
    EmbeddedRedis,
    ensure_topics,
    free_port,
    port_open,
    redis_reachable,
)
from stream_app.tools.simulator import SimConfig, Simulator
from stream_app.web.dashboard import dashboard_url, start_dashboard

console = Console()

#: A few deliberately broken events per thousand, so the dead-letter path is visible.
BAD_EVERY = 400


@dataclass
class DemoStats:
    produced: dict[str, int] = field(default_factory=dict)
    bad_produced: int = 0
    alerts_seen: int = 0
    sim_time: str = ""


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
        # the worker serves the dashboard (and whatever else its web server carries)
        WEB_ENABLED="true",
        WEB_PORT=str(settings.web_port),
    )
    return env


def start_worker(env: dict[str, str], log_path: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_app.tools.cli", "worker"],
        env=env,
        cwd=cwd,  # Faust keeps "<app id>-data/" in its working directory
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
    settings: Settings, customers: int, days: int, speed: float, stats: DemoStats, stop: asyncio.Event,
    activity_scale: float = 0.5, seed: int = 7,
) -> None:
    """Stream the simulator into Kafka, pacing event time at ``speed`` days per second."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers(), linger_ms=10, **settings.kafka_client_kwargs()  # type: ignore[arg-type]
    )
    await producer.start()
    try:
        # half the default activity volume by default: ~2k events/s at 1 simulated day per second
        sim = Simulator(SimConfig(customers=customers, days=days, activity_scale=activity_scale, seed=seed))
        t0_wall = time.monotonic()
        t0_sim: int | None = None
        for n, ev in enumerate(sim.events(), start=1):
            if stop.is_set():
                break
            if t0_sim is None:
                t0_sim = ev.ts_ms
            due = (ev.ts_ms - t0_sim) / DAY_MS / speed
            ahead = due - (time.monotonic() - t0_wall)
            if ahead > 0:
                await asyncio.sleep(ahead)
            cid = ev.event["customer_id"]
            await producer.send(settings.topic(ev.topic), orjson.dumps(ev.event), key=cid.encode())
            stats.produced[ev.topic] = stats.produced.get(ev.topic, 0) + 1
            stats.sim_time = str(ev.event["ts"])[:16]
            if n % BAD_EVERY == 0:
                topic, value = _bad_event(n, cid)
                await producer.send(settings.topic(topic), value, key=cid.encode())
                stats.bad_produced += 1
        await producer.flush()
    finally:
        await producer.stop()


def _view(stats: DemoStats, handled: int, dead: int, risky: list[dict[str, object]],
          alerts: deque[dict[str, object]], note: str) -> Group:
    produced = sum(stats.produced.values()) + stats.bad_produced
    head = Table.grid(padding=(0, 3))
    head.add_row(
        f"[bold]simulated time[/bold] {stats.sim_time}",
        f"[bold]produced[/bold] {produced:,}",
        f"[bold]handled[/bold] {handled:,}",
        f"[bold]lag[/bold] {max(produced - handled, 0):,}",
        f"[bold]dead-lettered[/bold] {dead:,} (of {stats.bad_produced} bad injected)",
        f"[bold]alerts[/bold] {stats.alerts_seen:,}",
    )
    colour = {"green": "green", "yellow": "yellow", "red": "red", "critical": "bold red", "warning": "yellow",
              "info": "cyan"}
    table = Table(title="riskiest customers (live, from Redis)", expand=True)
    for col in ("customer", "churn p", "health", "band", "MRR", "why (strongest first)", "model"):
        table.add_column(col, justify="right" if col in ("churn p", "health", "MRR") else "left")
    for r in risky:
        band = str(r.get("health_band") or "-")
        table.add_row(
            str(r["customer_id"]), f"{r['churn_probability']:.2f}", str(r["health_score"] if r["health_score"] is not None else "-"),
            f"[{colour.get(band, 'white')}]{band}[/]", f"{r['mrr'] or 0:,.0f}",
            ", ".join(r["reasons"][:3]), str(r["model_version"] or ""),  # type: ignore[index]
        )
    feed = Table(title="latest alerts (cs.alerts)", expand=True)
    for col in ("event time", "customer", "kind", "severity", "health", "churn p", "reason"):
        feed.add_column(col)
    for a in alerts:
        sev = str(a["severity"])
        reasons = a.get("reasons") or []
        feed.add_row(str(a["ts"])[:16], str(a["customer_id"]), str(a["kind"]), f"[{colour.get(sev, 'white')}]{sev}[/]",
                     f"{a['health_score']:.0f}", f"{a['churn_probability']:.2f}",
                     str(reasons[0]["factor"]) if reasons else "")  # type: ignore[index]
    return Group(Panel(head, title="churn-stream demo", subtitle=note), table, feed)


async def follow_alerts(settings: Settings, sink: deque[dict[str, object]], stats: DemoStats, stop: asyncio.Event) -> None:
    """Tail cs.alerts (manually assigned partitions: no consumer group needed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False,
                                **settings.kafka_client_kwargs())  # type: ignore[arg-type]
    await consumer.start()
    try:
        topic = settings.topic("alerts")
        tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while not stop.is_set():
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    sink.appendleft(orjson.loads(m.value))
                    stats.alerts_seen += 1
    finally:
        await consumer.stop()


async def _count_dead_letters(settings: Settings) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs())  # type: ignore[arg-type]
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic("deadletter"), 0)
        ends = await consumer.end_offsets([tp])
        return int(ends[tp])
    finally:
        await consumer.stop()


@dataclass
class DashboardStatus:
    url: str
    served_by: str = "starting"  # "starting" | "the worker" | "the demo (standalone)"
    runner: object | None = None


async def _answers(url: str) -> bool:
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            async with session.get(url + "api/model") as resp:
                return resp.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


async def ensure_dashboard(settings: Settings, status: DashboardStatus, worker_grace_s: float = 30.0) -> None:
    """Wait for the worker's web server to serve the dashboard; if it does not within
    ``worker_grace_s``, serve it from this process (standalone) so it is up within a minute."""
    deadline = time.monotonic() + worker_grace_s
    while time.monotonic() < deadline:
        if await _answers(status.url):
            status.served_by = "the worker"
            return
        await asyncio.sleep(0.5)
    # a port of its own: the worker may still bind WEB_PORT later, and must not fail when it does
    own = settings.model_copy(update={"web_port": free_port()})
    status.runner = await start_dashboard(own, host="0.0.0.0")
    status.url = dashboard_url(own)
    status.served_by = "the demo (standalone)"


async def _live(settings: Settings, customers: int, days: int, speed: float, duration: float | None,
                worker: subprocess.Popen[bytes], worker_log: Path) -> int:
    stats = DemoStats()
    stop = asyncio.Event()
    producer_task = asyncio.create_task(produce_simulation(settings, customers, days, speed, stats, stop))
    alerts: deque[dict[str, object]] = deque(maxlen=12)
    alerts_task = asyncio.create_task(follow_alerts(settings, alerts, stats, stop))
    dash = DashboardStatus(url=dashboard_url(settings))
    dash_task = asyncio.create_task(ensure_dashboard(settings, dash))
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
                handled = await store.handled(list(settings.input_topics), settings.topic_partitions)
                dead = await _count_dead_letters(settings)
                risky = await riskiest(store, settings, 10)
                note = "waiting for the worker to join its group (~6 s)" if handled == 0 else "Ctrl-C to stop"
                if producer_task.done() and handled >= sum(stats.produced.values()) + stats.bad_produced:
                    note = "simulation finished; all events handled. Ctrl-C to stop"
                dash_note = (f"dashboard {dash.url} (served by {dash.served_by})" if dash.served_by != "starting"
                             else f"dashboard {dash.url} (starting)")
                live.update(_view(stats, handled, dead, risky, alerts, f"{note} | {dash_note}"))
                if duration is not None and time.monotonic() - started > duration:
                    return 0
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        for task in (producer_task, alerts_task, dash_task):
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        await client.aclose()
        if dash.runner is not None:
            await dash.runner.cleanup()  # type: ignore[attr-defined]


def start_services(settings: Settings, started: list[object]) -> tuple[str, str]:
    """(broker URL, Redis URL): ``BROKER_URL`` / ``REDIS_URL`` when set (and Redis answers),
    else embedded ones, started here and appended to ``started`` (stop them in reverse order)."""
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
    return broker_url, redis_url


def run_demo(customers: int, days: int, speed: float, duration: float | None) -> int:
    settings = Settings()
    started: list[object] = []
    worker: subprocess.Popen[bytes] | None = None
    try:
        broker_url, redis_url = start_services(settings, started)
        # WEB_PORT (default 6066) if free, else any free port
        web_port = settings.web_port if not port_open("127.0.0.1", settings.web_port) else free_port()
        settings = settings.model_copy(update={"broker_url": broker_url, "redis_url": redis_url, "web_port": web_port})
        asyncio.run(ensure_topics(settings.bootstrap_servers(), all_topics(settings), settings.topic_replication,
                                  settings.kafka_client_kwargs()))
        worker_log = Path(tempfile.mkstemp(prefix="churn-stream-worker-", suffix=".log")[1])
        worker = start_worker(_worker_env(settings, broker_url, redis_url), worker_log)
        console.print(f"started worker (pid {worker.pid}, log {worker_log})")
        console.print(f"[bold]dashboard:[/bold] {dashboard_url(settings)}  (open it in a browser; up within a minute)")
        return asyncio.run(_live(settings, customers, days, speed, duration, worker, worker_log))
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process(worker)
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]
        console.print("stopped everything the demo started")
