"""End-to-end ingestion benchmark: simulator file -> replay -> Kafka -> Faust worker -> Redis.

Prints one table and writes JSON (``--json-out``): events/s end to end (first record
produced -> last record handled), the replay (produce) rate, and Redis ``MEMORY USAGE`` per
customer (mean, p50, p99, max) over every customer's keys.

    python bench/ingest_bench.py --customers 1000 --days 10          # ~100k+ events
    python bench/ingest_bench.py --smoke                            # a few seconds, for CI

Uses BROKER_URL / REDIS_URL when set, else an embedded broker and the local (or an
embedded) Redis, with its own key prefix, topic prefix and consumer group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from stream_app.embedded import EmbeddedBroker, EmbeddedRedis, redis_reachable
from stream_app.settings import INPUT_TOPICS, Settings
from stream_app.simulator import SimConfig, Simulator, write_jsonl


def percentile(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return float(s[min(len(s) - 1, int(round(q * (len(s) - 1))))])


async def handled_records(settings: Settings) -> int:
    from stream_app.app import redis_client
    from stream_app.state import StateStore

    client = redis_client(settings)
    try:
        store = StateStore(client, settings)
        total = 0
        for logical in INPUT_TOPICS:
            for p in range(settings.topic_partitions):
                prog = await store.get_progress(settings.topic(logical), p)
                if prog:
                    total += prog[0] + 1
        return total
    finally:
        await client.aclose()


async def memory_per_customer(settings: Settings, ids: list[str]) -> list[int]:
    from stream_app.app import redis_client
    from stream_app.state import StateStore

    client = redis_client(settings)
    try:
        store = StateStore(client, settings)
        return [await store.memory_usage(cid) for cid in ids]
    finally:
        await client.aclose()


async def cleanup(settings: Settings) -> None:
    from stream_app.app import redis_client

    client = redis_client(settings)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{settings.key_prefix}*", count=2000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.delete(*batch)
                batch.clear()
        if batch:
            await client.delete(*batch)
    finally:
        await client.aclose()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="tiny run (CI): 60 customers x 5 days")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--timeout", type=float, default=900)
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.days = 60, 5

    started: list[object] = []
    broker_url = os.environ.get("BROKER_URL")
    if not broker_url:
        broker = EmbeddedBroker().start()
        started.append(broker)
        broker_url = broker.url
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if not redis_reachable(redis_url):
        emb = EmbeddedRedis().start()
        started.append(emb)
        redis_url = emb.url
    run = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update(
        BROKER_URL=broker_url,
        REDIS_URL=redis_url,
        KEY_PREFIX=f"bench:{run}:",
        TOPIC_PREFIX=f"bench{run}.",
        APP_ID=f"bench-{run}",
        TOPIC_PARTITIONS=str(args.partitions),
        REBALANCE_TIMEOUT_S="4",
        SESSION_TIMEOUT_S="10",
        HEARTBEAT_INTERVAL_S="1",
        LOG_LEVEL="warning",
    )
    settings = Settings(
        _env_file=None,
        broker_url=broker_url,
        redis_url=redis_url,
        key_prefix=env["KEY_PREFIX"],
        topic_prefix=env["TOPIC_PREFIX"],
        topic_partitions=args.partitions,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    data = tmp / "events.jsonl"
    worker = None
    try:
        sim = Simulator(SimConfig(customers=args.customers, days=args.days))
        n_events = write_jsonl(data, sim.events())
        customer_ids = sorted({t.customer_id for t in sim.truth()})
        log = open(tmp / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=env, stdout=log, stderr=subprocess.STDOUT)
        # wait for the worker to join its group: a single probe record must be handled
        probe = tmp / "probe.jsonl"
        probe.write_text(json.dumps({"topic": "activity", "event_id": "probe", "customer_id": "probe", "ts": 0, "action": "probe"}) + "\n")
        subprocess.run([sys.executable, "-m", "stream_app.cli", "replay", str(probe)], env=env, check=True, capture_output=True)
        t_wait = time.monotonic()
        while asyncio.run(handled_records(settings)) < 1:
            if time.monotonic() - t_wait > 120:
                raise TimeoutError("worker did not start: " + (tmp / "worker.log").read_text()[-2000:])
            time.sleep(0.2)
        startup_s = time.monotonic() - t_wait

        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "stream_app.cli", "replay", str(data)], env=env, capture_output=True, text=True, check=True)
        t_produced = time.monotonic() - t0
        target = n_events + 1
        while True:
            done = asyncio.run(handled_records(settings))
            if done >= target:
                break
            if time.monotonic() - t0 > args.timeout:
                raise TimeoutError(f"handled {done} of {target}")
            time.sleep(0.1)
        t_total = time.monotonic() - t0
        mem = asyncio.run(memory_per_customer(settings, customer_ids))
        result = {
            "commit": git_commit(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "customers": args.customers,
            "days": args.days,
            "partitions": args.partitions,
            "events": n_events,
            "worker_startup_s": round(startup_s, 1),
            "replay_produce_s": round(t_produced, 2),
            "end_to_end_s": round(t_total, 2),
            "end_to_end_events_per_s": round(n_events / t_total),
            "redis_bytes_per_customer_mean": round(statistics.mean(mem)) if mem else 0,
            "redis_bytes_per_customer_p50": percentile(mem, 0.5),
            "redis_bytes_per_customer_p99": percentile(mem, 0.99),
            "redis_bytes_per_customer_max": max(mem) if mem else 0,
            "replay_output": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "",
        }
        width = max(len(k) for k in result)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
        return 0
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        try:
            asyncio.run(cleanup(settings))
        except Exception:  # noqa: BLE001 - best effort
            pass
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
