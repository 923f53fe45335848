"""End-to-end ingestion benchmark: simulator file -> replay -> Kafka -> Faust worker -> Redis.

Prints one table and writes JSON (``--json-out``): events/s end to end (first record
produced -> last record handled, scoring and alerts included), the worker's start-up, and
Redis ``MEMORY USAGE`` per customer (mean, p50, p99, max) over every customer's keys.

    python bench/ingest_bench.py --customers 1000 --days 10          # ~100k events
    python bench/ingest_bench.py --smoke                            # a few seconds, for CI

Uses BROKER_URL / REDIS_URL when set, else an embedded broker and the local (or an
embedded) Redis, with its own key prefix, topic prefix and consumer group (``stack.Stack``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import Stack, git_commit, percentile  # noqa: E402

from stream_app.tools.simulator import SimConfig, Simulator, write_jsonl  # noqa: E402


async def memory_per_customer(stack: Stack, ids: list[str]) -> list[int]:
    from stream_app.pipeline.clients import redis_client
    from stream_app.state.store import StateStore

    client = redis_client(stack.settings)
    try:
        store = StateStore(client, stack.settings)
        return [await store.memory_usage(cid) for cid in ids]
    finally:
        await client.aclose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=1000)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--smoke", action="store_true", help="tiny run (CI): 60 customers x 5 days")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.days = 60, 5

    with Stack(partitions=args.partitions) as stack:
        sim = Simulator(SimConfig(customers=args.customers, days=args.days))
        data = stack.tmp / "events.jsonl"
        n_events = write_jsonl(data, sim.events())
        customer_ids = sorted({t.customer_id for t in sim.truth()})
        startup_s = stack.start_worker()
        t0 = time.monotonic()
        replay_line = stack.replay(data)
        t_produced = time.monotonic() - t0
        stack.wait_handled(n_events + 1, timeout=args.timeout)
        t_total = time.monotonic() - t0
        mem = asyncio.run(memory_per_customer(stack, customer_ids))
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
            "replay_output": replay_line,
        }
        width = max(len(k) for k in result)
        for k, v in result.items():
            print(f"{k:<{width}}  {v}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
