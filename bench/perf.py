"""Performance benchmark (issue 5): ceilings, a naive reference, the product, latency, memory, scale-out.

One run, one machine, one data set: the simulator generates the events once, they are
produced once into the broker's input topics, and every throughput stage reads them again
from offset 0 in a new consumer group (the product stages with a fresh Redis key prefix):

  ceiling raw            aiokafka ``getmany``, no processing                 (bench/ceilings.py)
  ceiling faust          a minimal Faust agent that only counts: Faust's defaults, Faust's
                         settings tuned, and tuned + stream_app.pipeline.faust_tuning  (bench/ceilings.py)
  naive reference        the job written the way a newcomer would           (bench/naive_pipeline.py)
  product 1 worker       ``stream-app worker``: real agents, Redis, model, alerts; events/s,
                         CPU s per 1k events (psutil on the worker), start-up, and a py-spy profile
  product untuned        the same with Faust's defaults (no faust_tuning)
  product 2 workers      the same replay, two workers in one consumer group (scale-out ratio)
  latency                a paced producer (fixed offered load, then the saturation rate) into a
                         worker holding the state of the 1-worker run: produce time of an event ->
                         publish time of its score on cs.scores (matched by customer_id + ts)
  memory                 Redis MEMORY USAGE per customer (its hash-tagged keys) and in total, at
                         growing customer counts, through one worker

Every stage has a time budget; a stage that does not read all the data in it is measured
over what it read (events/s from the moment 10 % of its count was reached). The machine is
shared and noisy: compare ratios measured in one run. Prints one table (rich) and writes it
as JSON (core count, load average, commit, date).

    python bench/perf.py                # full run (~20 min): >= 500k events, 20k customers
    python bench/perf.py --smoke        # CI: tiny data, every stage, well under a minute

Uses BROKER_URL / REDIS_URL when set, else an embedded broker and the local (or an embedded)
Redis. Redis keys live under ``bench:<run>:`` and are deleted at the end; nothing else in
Redis is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from meter import cpu_per_1k, read_status, sustained_rate  # noqa: E402
from stack import FAST_GROUP_ENV, Services, Stack, delete_keys, git_commit, percentile  # noqa: E402

from stream_app.settings import INPUT_TOPICS, Settings  # noqa: E402
from stream_app.state.partitions import Partitioning, forget_source_offsets, write_partitioning  # noqa: E402
from stream_app.core import DAY_MS  # noqa: E402
from stream_app.tools.simulator import SimConfig, Simulator  # noqa: E402

STAGES = ("raw", "faust_default", "faust_settings", "faust_tuned", "naive", "product_1w", "latency",
          "product_untuned", "product_2w", "memory")


@dataclass
class Config:
    """What one run generates and how long each stage may take."""

    customers: int = 20_000
    days: int = 7                  # backlog: days of history in the input topics
    live_days: int = 5             # further days, produced live (paced) for the latency phases
    activity_scale: float = 0.3
    seed: int = 7
    partitions: int = 4
    ceiling_budget_s: float = 45.0
    naive_budget_s: float = 45.0
    product_budget_s: float = 180.0
    untuned_budget_s: float = 90.0
    latency_rate: float = 2000.0
    latency_s: float = 30.0
    memory_sizes: tuple[int, ...] = (5_000, 20_000, 50_000)
    memory_days: int = 1
    memory_activity_scale: float = 0.2
    memory_history_customers: int = 200
    memory_history_days: int = 90
    profile_s: float = 30.0
    startup_timeout_s: float = 180.0
    group_env: dict[str, str] = field(default_factory=lambda: dict(FAST_GROUP_ENV))


SMOKE = Config(
    customers=300, days=3, live_days=1, ceiling_budget_s=3, naive_budget_s=3, product_budget_s=4,
    untuned_budget_s=4, latency_rate=300, latency_s=1, memory_sizes=(40, 120), memory_history_customers=5,
    memory_history_days=10, profile_s=0,
    startup_timeout_s=90, group_env={"REBALANCE_TIMEOUT_S": "1", "SESSION_TIMEOUT_S": "10", "HEARTBEAT_INTERVAL_S": "1"},
)


def log(msg: str) -> None:
    print(f"[perf {datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# --- data ------------------------------------------------------------------------------------

@dataclass
class Dataset:
    backlog: Path
    live: Path
    events: int
    live_events: int
    customers: int
    by_topic: dict[str, int]


def write_split(sim: Simulator, cutoff_ms: int, backlog: Path, live: Path) -> Dataset:
    """Write the simulator's events as JSON Lines: before ``cutoff_ms`` to ``backlog``, the rest to ``live``."""
    n = n_live = 0
    by_topic: Counter[str] = Counter()
    customers: set[str] = set()
    with open(backlog, "wb") as fb, open(live, "wb") as fl:
        for e in sim.events():
            line = orjson.dumps({**e.event, "topic": e.topic}) + b"\n"
            if e.ts_ms < cutoff_ms:
                fb.write(line)
                n += 1
                by_topic[e.topic] += 1
                customers.add(e.event["customer_id"])
            else:
                fl.write(line)
                n_live += 1
    return Dataset(backlog, live, n, n_live, len(customers), dict(by_topic))


def head_lines(src: Path, dst: Path, skip: int, count: int) -> int:
    """Copy lines ``skip .. skip+count`` of ``src`` to ``dst``; returns how many were copied."""
    n = 0
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        for i, line in enumerate(fi):
            if i < skip:
                continue
            if n >= count:
                break
            fo.write(line)
            n += 1
    return n


async def produce(path: Path, settings: Settings) -> tuple[int, float]:
    from stream_app.tools.replay import replay

    report = await replay(path, settings)
    if report.unroutable:
        raise RuntimeError(f"{len(report.unroutable)} unroutable lines in {path}")
    return report.produced, report.seconds


# --- Kafka and Redis helpers -------------------------------------------------------------------

async def end_offsets(bootstrap: list[str], topics: list[str]) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
        ends = await consumer.end_offsets(tps) if tps else {}
        return {(tp.topic, tp.partition): off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def read_records(bootstrap: list[str], start: dict[tuple[str, int], int],
                       end: dict[tuple[str, int], int]) -> list[tuple[int, bytes]]:
    """(Kafka timestamp in ms, value) of every record in [start, end) per partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    out: list[tuple[int, bytes]] = []
    try:
        want = {TopicPartition(t, p): (start.get((t, p), 0), e) for (t, p), e in end.items() if e > start.get((t, p), 0)}
        if not want:
            return out
        consumer.assign(list(want))
        for tp, (s, _) in want.items():
            consumer.seek(tp, s)
        remaining = set(want)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=2000, max_records=20000)
            if not batch:
                raise TimeoutError(f"could not read {sorted(str(tp) for tp in remaining)} to the end")
            for tp, msgs in batch.items():
                stop = want[tp][1]
                for m in msgs:
                    if m.offset < stop:
                        out.append((m.timestamp, m.value))
                if msgs and msgs[-1].offset >= stop - 1:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


async def memory_profile(redis_url: str, prefix: str, select: str = "") -> dict[str, Any]:
    """MEMORY USAGE of every key under ``prefix``, per customer and for the rest (global
    indexes, partition progress, the model). A customer's keys are ``<prefix>c:{<tag>}...``
    (the README's state layout: one hash tag per customer); ``select`` keeps only customers
    whose tag starts with it (the rest then count as neither)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    per: dict[str, int] = defaultdict(int)
    global_bytes = 0
    keys = 0
    cust = f"{prefix}c:{{"
    try:
        batch: list[bytes] = []

        async def flush() -> None:
            nonlocal global_bytes
            pipe = client.pipeline(transaction=False)
            for k in batch:
                pipe.memory_usage(k, samples=0)
            for k, n in zip(batch, await pipe.execute()):
                ks = k.decode(errors="replace")
                j = ks.find("}", len(cust))
                if ks.startswith(cust) and j > 0:
                    tag = ks[len(cust):j]
                    if tag.startswith(select):
                        per[tag] += int(n or 0)
                elif not select:
                    global_bytes += int(n or 0)
            batch.clear()

        async for key in client.scan_iter(match=f"{prefix}*", count=5000):
            batch.append(key)
            keys += 1
            if len(batch) >= 2000:
                await flush()
        if batch:
            await flush()
    finally:
        await client.aclose()
    sizes = list(per.values())
    total = sum(sizes) + global_bytes
    return {
        "customers": len(sizes),
        "keys": keys,
        "per_customer_mean": round(statistics.mean(sizes)) if sizes else 0,
        "per_customer_p50": percentile(sizes, 0.5),
        "per_customer_p99": percentile(sizes, 0.99),
        "per_customer_max": max(sizes) if sizes else 0,
        "global_bytes": global_bytes,
        "total_bytes": total,
        "total_per_customer": round(total / len(sizes)) if sizes else 0,
    }


def ts_to_ms(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


# --- measured subprocesses -------------------------------------------------------------------

def run_metered(name: str, args: list[str], status: Path, budget_s: float, startup_timeout_s: float,
                env: dict[str, str], logdir: Path) -> dict[str, Any]:
    """Run a process that reports through ``meter.Meter``; stop it when it is done or its
    budget (counted from its first event) is spent."""
    log(f"{name}: starting")
    status.unlink(missing_ok=True)
    logfile = open(logdir / f"{name}.log", "wb")  # noqa: SIM115
    t0 = time.time()
    proc = subprocess.Popen(args, env=env, stdout=logfile, stderr=subprocess.STDOUT)
    st: dict[str, Any] | None = None
    try:
        while True:
            time.sleep(0.25)
            st = read_status(status)  # type: ignore[assignment]
            if st and st["done"]:
                break
            marks = st["marks"] if st else []
            if marks and time.time() - marks[0][0] > budget_s:
                break
            if not marks and time.time() - t0 > startup_timeout_s:
                raise TimeoutError(f"{name}: no event within {startup_timeout_s}s: {tail(logdir / f'{name}.log')}")
            if proc.poll() is not None:
                st = read_status(status)  # type: ignore[assignment]
                if st and (st["done"] or st["marks"]):
                    break
                raise RuntimeError(f"{name}: exited with {proc.returncode}: {tail(logdir / f'{name}.log')}")
    finally:
        stop_process(proc)
        logfile.close()
    time.sleep(0.3)
    st = read_status(status) or st  # type: ignore[assignment]
    assert st is not None
    marks = st["marks"]
    res = {
        "events": st["count"],
        "complete": bool(st["done"]),
        "events_per_s": round(sustained_rate(marks, st["done"])),
        "cpu_s_per_1k": round(cpu_per_1k(marks, st["done"]), 4),
        "startup_s": round(marks[0][0] - t0, 1) if marks else None,
        "seconds": round(marks[-1][0] - marks[0][0], 1) if marks else None,
    }
    log(f"{name}: {res}")
    return res


def stop_process(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


# --- the product -----------------------------------------------------------------------------

@dataclass
class ProductRun:
    result: dict[str, Any]
    stack: Stack


def run_product(name: str, services: Services, cfg: Config, topic_prefix: str, key_prefix: str, expect: int,
                workers: int, budget_s: float, env: dict[str, str] | None = None,
                profile_to: Path | None = None) -> ProductRun:
    """Start ``workers`` product workers on the shared topics and watch them (handled records
    from the partitions' progress in Redis, CPU from psutil) until all ``expect`` records are
    handled or the budget, counted from the first handled record, is spent."""
    stack = Stack(cfg.partitions, services=services, topic_prefix=topic_prefix, key_prefix=key_prefix,
                  app_id=f"{key_prefix.replace(':', '-').strip('-')}", extra_env={**cfg.group_env, **(env or {})})
    stack.__enter__()
    log(f"{name}: starting {workers} worker(s)")
    t0 = time.time()
    procs = [psutil.Process(p.pid) for p in stack.start_workers(workers)]

    def cpu() -> float:
        total = 0.0
        for p in procs:
            try:
                c = p.cpu_times()
                total += c.user + c.system
            except psutil.NoSuchProcess:
                pass
        return total

    marks: list[tuple[float, int, float]] = []
    first: float | None = None
    spy: subprocess.Popen[bytes] | None = None
    spy_out = None
    while True:
        time.sleep(0.5)
        stack.check_workers()
        h = stack.handled()
        now = time.time()
        marks.append((now, h, cpu()))
        if h > 0 and first is None:
            first = now
            log(f"{name}: first record handled after {now - t0:.1f}s")
        if first is None and now - t0 > cfg.startup_timeout_s:
            raise TimeoutError(f"{name}: nothing handled in {cfg.startup_timeout_s}s: {stack.worker_log()}")
        if profile_to is not None and spy is None and h >= 0.1 * expect and cfg.profile_s > 0 and shutil.which("py-spy"):
            spy_out = profile_to
            spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "-f", "raw", "-o", str(spy_out), "-d", str(int(cfg.profile_s)),
                                    "-p", str(procs[0].pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log(f"{name}: py-spy recording {cfg.profile_s:.0f}s")
        if h >= expect or (first is not None and now - first > budget_s):
            break
    if spy is not None:
        try:
            spy.wait(cfg.profile_s + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
    # drop the marks before the first handled record: start-up is reported on its own
    live = [m for m in marks if m[1] > 0]
    complete = marks[-1][1] >= expect
    res = {
        "workers": workers,
        "events": marks[-1][1],
        "complete": complete,
        "events_per_s": round(sustained_rate(live, complete)),
        "cpu_s_per_1k": round(cpu_per_1k(live, complete), 4),
        "startup_s": round(first - t0, 1) if first else None,
        "seconds": round(marks[-1][0] - first, 1) if first else None,
    }
    if spy_out is not None and spy_out.exists():
        res["profile"] = summarize_profile(spy_out)
    log(f"{name}: { {k: v for k, v in res.items() if k != 'profile'} }")
    return ProductRun(res, stack)


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top functions of a py-spy ``raw`` (collapsed stacks) profile: own time and inclusive time."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        stack, _, n = line.rpartition(" ")
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count

    def rows(c: Counter[str]) -> list[list[Any]]:
        return [[round(100 * n / total, 1), f] for f, n in c.most_common(top)] if total else []

    return {"samples": total, "self_pct": rows(own), "inclusive_pct": rows(incl), "file": raw.name}


def latency_phases(services: Services, cfg: Config, run: str, key_prefix: str, data: Dataset, sat_rate: float,
                   tmp: Path) -> dict[str, Any]:
    """Paced producer -> worker (holding ``key_prefix``'s state) -> cs.scores: event -> score latency."""
    topic_prefix = f"bench{run}live."
    stack = Stack(cfg.partitions, services=services, topic_prefix=topic_prefix, key_prefix=key_prefix,
                  app_id=f"bench-{run}-live", extra_env=cfg.group_env)
    out: dict[str, Any] = {}
    # the 1-worker run's state goes on with new topics: a new topic generation, as
    # `stream-app partitions migrate --new-topic-prefix` makes one (the old offsets forgotten)
    asyncio.run(switch_topics(services.redis_url, key_prefix, topic_prefix, cfg.partitions))
    with stack:
        asyncio.run(ensure_all_topics(stack.settings))
        stack.start_workers(1)
        # a first live event starts the worker (joins the group) before the clock runs
        warm = tmp / "live-warm.jsonl"
        skip = head_lines(data.live, warm, 0, 1)
        stack.replay(warm)
        t0 = time.time()
        while stack.handled() < 1:
            stack.check_workers()
            if time.time() - t0 > cfg.startup_timeout_s:
                raise TimeoutError("latency worker did not start: " + stack.worker_log())
            time.sleep(0.2)
        produced = 1
        # the issue's fixed offered load, then fractions of the capacity the 1-worker stage measured
        phases = [("offered", cfg.latency_rate)] + [
            (f"capacity_{int(f * 100)}pct", max(1.0, f * sat_rate)) for f in (0.25, 0.5, 0.8)
        ] + [("saturation", max(1.0, sat_rate))]
        bootstrap = stack.settings.bootstrap_servers()
        inputs = [stack.settings.topic(t) for t in INPUT_TOPICS]
        scores = stack.settings.topic("scores")
        for label, rate in phases:
            n = int(rate * cfg.latency_s)
            path = tmp / f"live-{label}.jsonl"
            n = head_lines(data.live, path, skip, n)
            skip += n
            if n == 0:
                out[label] = {"error": "no live events left"}
                continue
            in_start = asyncio.run(end_offsets(bootstrap, inputs))
            sc_start = asyncio.run(end_offsets(bootstrap, [scores]))
            log(f"latency {label}: {n} events at {rate:.0f}/s")
            proc = stack.replay_async(path, rate)
            while proc.poll() is None:
                stack.check_workers()
                time.sleep(0.2)
            if proc.returncode != 0:
                raise RuntimeError(f"replay failed: {proc.stderr.read() if proc.stderr else ''}")
            produced += n
            lag_s = stack.wait_handled(produced, timeout=600)
            in_end = asyncio.run(end_offsets(bootstrap, inputs))
            sc_end = asyncio.run(end_offsets(bootstrap, [scores]))
            events = asyncio.run(read_records(bootstrap, in_start, in_end))
            published = asyncio.run(read_records(bootstrap, sc_start, sc_end))
            stamps = [t for t, _ in events]
            span_s = (max(stamps) - min(stamps)) / 1000 if len(stamps) > 1 else 0.0
            out[label] = match_latencies(events, published) | {
                "offered_per_s": round(rate), "events": n,
                "achieved_offered_per_s": round(len(stamps) / span_s) if span_s else None,
                "drain_after_produce_s": round(lag_s, 1),
            }
            log(f"latency {label}: {out[label]}")
    return out


async def switch_topics(redis_url: str, key_prefix: str, topic_prefix: str, partitions: int) -> None:
    client = aioredis.from_url(redis_url)
    try:
        await forget_source_offsets(client, key_prefix)
        await write_partitioning(client, key_prefix, Partitioning(topic_prefix, partitions))
    finally:
        await client.aclose()


async def ensure_all_topics(settings: Settings) -> None:
    from stream_app.settings import all_topics
    from stream_app.tools.embedded import ensure_topics

    await ensure_topics(settings.bootstrap_servers(), all_topics(settings), settings.topic_replication,
                        settings.kafka_client_kwargs())


def match_latencies(events: list[tuple[int, bytes]], published: list[tuple[int, bytes]]) -> dict[str, Any]:
    """Latency of each score whose (customer_id, ts) is an input event's: score publish time
    minus the event's produce time (both Kafka record timestamps, same clock).

    >>> ev = [(1000, b'{"customer_id":"a","ts":"2026-01-01T00:00:00+00:00"}')]
    >>> sc = [(1040, b'{"customer_id":"a","ts":"2026-01-01T00:00:00+00:00"}'), (1100, b'{"customer_id":"b","ts":0}')]
    >>> r = match_latencies(ev, sc); (r["matched"], r["scores"], r["p50_ms"])
    (1, 2, 40.0)
    """
    produced: dict[tuple[str, int], int] = {}
    for t, v in events:
        try:
            e = orjson.loads(v)
            key = (e["customer_id"], ts_to_ms(e["ts"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        produced[key] = min(t, produced.get(key, t))
    lat: list[int] = []
    for t, v in published:
        s = orjson.loads(v)
        t_in = produced.get((s["customer_id"], ts_to_ms(s["ts"])))
        if t_in is not None:
            lat.append(t - t_in)
    return {
        "scores": len(published),
        "matched": len(lat),
        "p50_ms": percentile(lat, 0.5),
        "p95_ms": percentile(lat, 0.95),
        "p99_ms": percentile(lat, 0.99),
        "max_ms": float(max(lat)) if lat else 0.0,
    }


def sim_lines(sim: Simulator, id_prefix: str = "") -> Any:
    """(customer index, JSON line) of every simulated event; ``id_prefix`` renames customers
    and events (so two simulated bases can share topics and Redis)."""
    for e in sim.events():
        ev = e.event
        if id_prefix:
            ev = {**ev, "customer_id": id_prefix + ev["customer_id"], "event_id": id_prefix + ev["event_id"]}
        yield int(e.event["customer_id"][1:]), orjson.dumps({**ev, "topic": e.topic}) + b"\n"


def memory_curve(services: Services, cfg: Config, run: str, tmp: Path) -> dict[str, Any]:
    """One worker. Customers are added in steps (the first N of one simulated base, the same
    short history each): Redis memory per customer and in total after each step. Then a
    small base with a long history (``memory_history_*``), for the per-customer figure once
    the windows are full."""
    sizes = sorted(cfg.memory_sizes)
    sim = Simulator(SimConfig(customers=sizes[-1], days=cfg.memory_days, activity_scale=cfg.memory_activity_scale,
                              seed=cfg.seed + 1))
    files = [tmp / f"mem-{s}.jsonl" for s in sizes]
    handles = [open(f, "wb") for f in files]  # noqa: SIM115
    counts = [0] * len(sizes)
    try:
        for idx, line in sim_lines(sim):
            step = next(i for i, s in enumerate(sizes) if idx < s)
            handles[step].write(line)
            counts[step] += 1
    finally:
        for h in handles:
            h.close()
    hist = tmp / "mem-history.jsonl"
    n_hist = 0
    with open(hist, "wb") as fh:
        hsim = Simulator(SimConfig(customers=cfg.memory_history_customers, days=cfg.memory_history_days,
                                   activity_scale=cfg.activity_scale, seed=cfg.seed + 2))
        for _, line in sim_lines(hsim, "h-"):
            fh.write(line)
            n_hist += 1
    key_prefix = f"bench:{run}:mem:"
    stack = Stack(cfg.partitions, services=services, topic_prefix=f"bench{run}mem.", key_prefix=key_prefix,
                  app_id=f"bench-{run}-mem", extra_env=cfg.group_env)
    curve: list[dict[str, Any]] = []
    with stack:
        asyncio.run(ensure_all_topics(stack.settings))
        stack.start_workers(1)
        total = 0
        for size, path, n in zip(sizes, files, counts):
            log(f"memory: customers up to {size} (+{n} events)")
            asyncio.run(produce(path, stack.settings))
            total += n
            stack.wait_handled(total, timeout=1800)
            prof = asyncio.run(memory_profile(services.redis_url, key_prefix))
            curve.append({"customers": size, "events": total} | prof)
            log(f"memory {size}: {curve[-1]}")
        log(f"memory: {cfg.memory_history_customers} customers x {cfg.memory_history_days} days ({n_hist} events)")
        asyncio.run(produce(hist, stack.settings))
        stack.wait_handled(total + n_hist, timeout=1800)
        history = asyncio.run(memory_profile(services.redis_url, key_prefix, select="h-"))
        history = {"customers": cfg.memory_history_customers, "days": cfg.memory_history_days, "events": n_hist} | {
            k: v for k, v in history.items() if k.startswith("per_customer")}
        log(f"memory history: {history}")
    return {"curve": curve, "history": history}


# --- the run ---------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny data and budgets (CI)")
    ap.add_argument("--customers", type=int)
    ap.add_argument("--days", type=int)
    ap.add_argument("--activity-scale", type=float)
    ap.add_argument("--product-budget", type=float)
    ap.add_argument("--latency-rate", type=float, help="offered events/s of the latency stage (default 2000)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"subset of {','.join(STAGES)}")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/perf-<date>.json; smoke: none)")
    args = ap.parse_args()
    cfg = replace(SMOKE) if args.smoke else Config()
    for name, attr in (("customers", "customers"), ("days", "days"), ("activity_scale", "activity_scale"),
                       ("product_budget", "product_budget_s"), ("latency_rate", "latency_rate")):
        if getattr(args, name) is not None:
            setattr(cfg, attr, getattr(args, name))
    if args.no_profile:
        cfg.profile_s = 0
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stages {sorted(unknown)}")
    out_path = Path(args.out) if args.out else (
        None if args.smoke else HERE / "results" / f"perf-{datetime.now():%Y%m%d-%H%M}.json")

    result = run(cfg, stages, out_path, concurrent=args.smoke)
    print_table(result)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(result, indent=2) + "\n")
        log(f"wrote {out_path}")
    return 0


@dataclass
class Run:
    """What the stages share: configuration, services, data, and the result being filled in."""

    cfg: Config
    run_id: str
    services: Services
    data: Dataset
    topic_prefix: str
    tmp: Path
    env: dict[str, str]
    out_path: Path | None
    result: dict[str, Any]

    @property
    def stages(self) -> dict[str, Any]:
        return self.result["stages"]  # type: ignore[no-any-return]

    def topics_arg(self) -> str:
        return ",".join(f"{self.topic_prefix}{t}" for t in INPUT_TOPICS)

    def rebalance(self) -> str:
        return self.cfg.group_env.get("REBALANCE_TIMEOUT_S", "4")

    def note_load(self, name: str) -> None:
        self.result.setdefault("load_avg_at_stage", {})[name] = round(os.getloadavg()[0], 2)


def stage_raw(r: Run) -> None:
    bootstrap = r.services.broker_url.split("://", 1)[-1]
    status = r.tmp / "raw.json"
    r.stages["ceiling_raw_aiokafka"] = run_metered(
        "raw", [sys.executable, str(HERE / "ceilings.py"), "raw", "--bootstrap", bootstrap, "--topics", r.topics_arg(),
                "--expect", str(r.data.events), "--status", str(status),
                "--max-records", "10000" if r.data.events > 100_000 else "100"],
        status, r.cfg.ceiling_budget_s, r.cfg.startup_timeout_s, r.env, r.tmp)


def _faust_stage(r: Run, key: str, label: str, extra: list[str]) -> None:
    status = r.tmp / f"{key}.json"
    r.stages[label] = run_metered(
        key, [sys.executable, str(HERE / "ceilings.py"), "faust", "--broker", r.services.broker_url, "--topics",
              r.topics_arg(), "--expect", str(r.data.events), "--status", str(status), "--rebalance-timeout",
              r.rebalance(), *extra],
        status, r.cfg.ceiling_budget_s, r.cfg.startup_timeout_s, r.env, r.tmp)


def stage_faust_default(r: Run) -> None:
    _faust_stage(r, "faust_default", "ceiling_faust_defaults", [])


def stage_faust_settings(r: Run) -> None:
    # the ordinary Faust settings of the tuned variant alone; the consumer as Faust builds it
    _faust_stage(r, "faust_settings", "ceiling_faust_settings",
                 ["--tuning", json.dumps({"fast_drain": False, "fetch_max_wait_ms": 1500})])


def stage_faust_tuned(r: Run) -> None:
    _faust_stage(r, "faust_tuned", "ceiling_faust_tuned", ["--tuned"])


def stage_naive(r: Run) -> None:
    status = r.tmp / "naive.json"
    r.stages["naive_reference"] = run_metered(
        "naive", [sys.executable, str(HERE / "naive_pipeline.py"), "--broker", r.services.broker_url,
                  "--redis", r.services.redis_url, "--topic-prefix", r.topic_prefix,
                  "--key-prefix", f"bench:{r.run_id}:naive:", "--expect", str(r.data.events), "--status", str(status),
                  "--rebalance-timeout", r.rebalance()],
        status, r.cfg.naive_budget_s, r.cfg.startup_timeout_s, r.env, r.tmp)


def p1_prefix(r: Run) -> str:
    return f"bench:{r.run_id}:p1:"


def stage_product_1w(r: Run) -> None:
    profile_to = r.tmp / "profile.txt"
    pr = run_product("product_1w", r.services, r.cfg, r.topic_prefix, p1_prefix(r), r.data.events, 1,
                     r.cfg.product_budget_s, profile_to=profile_to)
    pr.stack.stop_workers()
    r.stages["product_1_worker"] = pr.result
    if r.out_path is not None and profile_to.exists():
        # py-spy's collapsed stacks (open with speedscope.app or flamegraph.pl)
        kept = r.out_path.with_suffix(".profile.txt.gz")
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_bytes(gzip.compress(profile_to.read_bytes()))
        pr.result["profile"]["file"] = kept.name
    mem = asyncio.run(memory_profile(r.services.redis_url, p1_prefix(r)))
    r.result["memory_after_product_1w"] = mem | {"events_applied": pr.result["events"]}
    log(f"memory after product_1w: {mem}")


def stage_latency(r: Run) -> None:
    sat = r.stages.get("product_1_worker", {}).get("events_per_s") or r.cfg.latency_rate
    r.result["latency"] = latency_phases(r.services, r.cfg, r.run_id, p1_prefix(r), r.data, sat, r.tmp)


def stage_product_untuned(r: Run) -> None:
    pr = run_product("product_untuned", r.services, r.cfg, r.topic_prefix, f"bench:{r.run_id}:pu:", r.data.events, 1,
                     r.cfg.untuned_budget_s, env={"FAUST_FAST_DRAIN": "false", "CONSUMER_FETCH_MAX_WAIT_MS": "1500"})
    pr.stack.stop_workers()
    r.stages["product_untuned"] = pr.result


def stage_product_2w(r: Run) -> None:
    pr = run_product("product_2w", r.services, r.cfg, r.topic_prefix, f"bench:{r.run_id}:p2:", r.data.events, 2,
                     r.cfg.product_budget_s)
    pr.stack.stop_workers()
    r.stages["product_2_workers"] = pr.result


def stage_memory(r: Run) -> None:
    r.result["memory"] = memory_curve(r.services, r.cfg, r.run_id, r.tmp)


STAGE_FUNCS = {
    "raw": stage_raw, "faust_default": stage_faust_default, "faust_settings": stage_faust_settings,
    "faust_tuned": stage_faust_tuned, "naive": stage_naive, "product_1w": stage_product_1w, "latency": stage_latency,
    "product_untuned": stage_product_untuned, "product_2w": stage_product_2w, "memory": stage_memory,
}


def run(cfg: Config, stages: list[str], out_path: Path | None, concurrent: bool = False) -> dict[str, Any]:
    """Generate and produce the data, run ``stages`` (in STAGES order, or all at once when
    ``concurrent``: the smoke run, whose figures mean nothing), delete the run's keys."""
    run_id = uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="perf-"))
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": git_commit(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg_start": [round(x, 2) for x in os.getloadavg()],
        "config": asdict(cfg),
        "concurrent_stages": concurrent,
        "stages": {},
    }
    topic_prefix = f"bench{run_id}."
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    with Services() as services:
        try:
            settings = Settings(_env_file=None, broker_url=services.broker_url, topic_prefix=topic_prefix,
                                topic_partitions=cfg.partitions)
            log(f"run {run_id}: generating {cfg.customers} customers x {cfg.days}+{cfg.live_days} days")
            t = time.time()
            sim = Simulator(SimConfig(customers=cfg.customers, days=cfg.days + cfg.live_days,
                                      activity_scale=cfg.activity_scale, seed=cfg.seed))
            cutoff = int(SimConfig().start.timestamp() * 1000) + cfg.days * DAY_MS
            data = write_split(sim, cutoff, tmp / "backlog.jsonl", tmp / "live.jsonl")
            gen_s = time.time() - t
            produced, produce_s = asyncio.run(produce(data.backlog, settings))
            result["data"] = {"events": data.events, "customers": data.customers, "by_topic": data.by_topic,
                              "live_events_available": data.live_events, "generate_s": round(gen_s, 1),
                              "produce_events_per_s": round(produced / produce_s) if produce_s else None}
            log(f"data: {result['data']}")
            r = Run(cfg, run_id, services, data, topic_prefix, tmp, env, out_path, result)

            def go(names: list[str]) -> None:
                for name in names:
                    r.note_load(name)
                    STAGE_FUNCS[name](r)

            ordered = [s for s in STAGES if s in stages]
            if concurrent:
                from concurrent.futures import ThreadPoolExecutor

                chains = [[s] for s in ordered if s not in ("product_1w", "latency")]
                chains.append([s for s in ("product_1w", "latency") if s in ordered])
                with ThreadPoolExecutor(len(chains)) as pool:
                    for f in [pool.submit(go, c) for c in chains if c]:
                        f.result()
            else:
                go(ordered)
        finally:
            deleted = asyncio.run(delete_keys(Settings(_env_file=None, redis_url=services.redis_url), f"bench:{run_id}:"))
            log(f"cleanup: deleted {deleted} keys under bench:{run_id}:")
            shutil.rmtree(tmp, ignore_errors=True)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = targets(result)
    return result


# --- verdicts and the table ------------------------------------------------------------------

def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    """Issues 5 and 16's targets, each with the measured value and whether it is met."""
    st = r["stages"]
    rate = {k: v.get("events_per_s") for k, v in st.items()}
    out: list[dict[str, Any]] = []

    def add(name: str, value: Any, met: bool | None) -> None:
        out.append({"target": name, "value": value, "met": met})

    prod, tuned, dflt, naive = (rate.get("product_1_worker"), rate.get("ceiling_faust_tuned"),
                                rate.get("ceiling_faust_defaults"), rate.get("naive_reference"))
    if prod and tuned:
        add("product >= 60% of the minimal Faust agent (tuned)", f"{prod / tuned:.0%}", prod >= 0.6 * tuned)
    if prod and dflt:
        add("product >= 60% of the minimal Faust agent (Faust defaults)", f"{prod / dflt:.0%}", prod >= 0.6 * dflt)
    if prod and naive:
        add("product >= 5x the naive reference", f"{prod / naive:.1f}x", prod >= 5 * naive)
    if tuned and dflt:
        add("minimal Faust agent pushed above its defaults", f"{tuned / dflt:.2f}x", tuned > dflt)
    lat = r.get("latency", {}).get("offered", {})
    if lat.get("matched"):
        add(f"p99 event->score <= 100 ms at {lat['offered_per_s']}/s offered", f"{lat['p99_ms']:.0f} ms",
            lat["p99_ms"] <= 100)
    mem = r.get("memory_after_product_1w")
    if mem and mem.get("customers"):
        add("Redis <= 2 KiB per active customer: mean after the product run", f"{mem['per_customer_mean']} B",
            mem["per_customer_mean"] <= 2048)
    hist = (r.get("memory") or {}).get("history")
    if hist and hist.get("per_customer_mean"):
        add(f"Redis <= 2 KiB per active customer: mean after {hist['days']} days of history",
            f"{hist['per_customer_mean']} B", hist["per_customer_mean"] <= 2048)
    curve = (r.get("memory") or {}).get("curve") or []
    if len(curve) >= 2:
        per = [c["total_per_customer"] for c in curve]
        spread = max(per) / min(per) if min(per) else float("inf")
        add("Redis growth linear in customers (total/customer within 15% across sizes)", f"{spread:.2f} max/min",
            spread <= 1.15)
    start = st.get("product_1_worker", {}).get("startup_s")
    if start is not None:
        add("worker processing <= 10 s after its start", f"{start} s", start <= 10)
    p2 = rate.get("product_2_workers")
    if prod and p2:
        add("2 workers >= 1.6x one worker", f"{p2 / prod:.2f}x", p2 >= 1.6 * prod)
    return out


def print_table(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    st = r["stages"]
    t = Table(title=f"churn-stream perf  {r['date']}  commit {r['commit']}  {r['cores']} cores  "
                    f"load {r['load_avg_start'][0]} -> {r.get('load_avg_end', ['?'])[0]}")
    t.add_column("stage")
    t.add_column("events/s", justify="right")
    t.add_column("CPU s / 1k events", justify="right")
    t.add_column("events read", justify="right")
    t.add_column("notes")
    labels = {
        "ceiling_raw_aiokafka": "ceiling: raw aiokafka, no processing",
        "ceiling_faust_defaults": "ceiling: minimal Faust agent, Faust defaults",
        "ceiling_faust_settings": "ceiling: minimal Faust agent, Faust settings tuned",
        "ceiling_faust_tuned": "ceiling: minimal Faust agent, tuned + faust_tuning",
        "naive_reference": "naive reference pipeline",
        "product_1_worker": "product, 1 worker",
        "product_untuned": "product, 1 worker, Faust untuned",
        "product_2_workers": "product, 2 workers (one group)",
    }
    for key, label in labels.items():
        if key not in st:
            continue
        s = st[key]
        notes = [] if s.get("complete") else ["time budget"]
        if s.get("startup_s") is not None and key.startswith("product"):
            notes.append(f"start-up {s['startup_s']} s")
        t.add_row(label, f"{s['events_per_s']:,}", f"{s['cpu_s_per_1k']:.3f}", f"{s['events']:,}", ", ".join(notes))
    for label, lat in (r.get("latency") or {}).items():
        if "p99_ms" in lat:
            t.add_row(f"latency event->score ({label}, {lat['offered_per_s']:,}/s offered)", "", "", f"{lat['events']:,}",
                      f"p50 {lat['p50_ms']:.0f} / p95 {lat['p95_ms']:.0f} / p99 {lat['p99_ms']:.0f} ms "
                      f"({lat['matched']:,} scores)")
    mem = r.get("memory_after_product_1w")
    if mem:
        t.add_row("Redis per customer after product 1 worker", "", "", f"{mem['events_applied']:,}",
                  f"mean {mem['per_customer_mean']:,} B, p99 {mem['per_customer_p99']:,.0f} B, "
                  f"total {mem['total_bytes'] / 2**20:.1f} MiB for {mem['customers']:,} customers")
    for c in (r.get("memory") or {}).get("curve") or []:
        t.add_row(f"Redis at {c['customers']:,} customers", "", "", f"{c['events']:,}",
                  f"mean {c['per_customer_mean']:,} B, p99 {c['per_customer_p99']:,.0f} B, "
                  f"total {c['total_bytes'] / 2**20:.1f} MiB ({c['total_per_customer']:,} B/customer)")
    hist = (r.get("memory") or {}).get("history")
    if hist:
        t.add_row(f"Redis per customer, {hist['customers']} customers x {hist['days']} days", "", "",
                  f"{hist['events']:,}", f"mean {hist['per_customer_mean']:,} B, p99 {hist['per_customer_p99']:,.0f} B")
    console.print(t)
    v = Table(title="issue 5 and 16 targets (ratios from this run)")
    v.add_column("target")
    v.add_column("measured", justify="right")
    v.add_column("met")
    for row in r.get("targets", []):
        v.add_row(row["target"], str(row["value"]), "yes" if row["met"] else "NO")
    console.print(v)


if __name__ == "__main__":
    sys.exit(main())
