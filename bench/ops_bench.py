"""Cost of the operations observer per record (metrics + watchdog bookkeeping), and of a scrape.

    python bench/ops_bench.py [--batch 500] [--rounds 400]

Runs in process (no broker, no Redis): the observer's three calls per batch, as the ingestor
makes them, on synthetic records over 4 partitions.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from stream_app.core import Record
from stream_app.ops.health import Ops
from stream_app.settings import Settings


async def main(batch: int, rounds: int) -> None:
    ops = Ops(Settings(_env_file=None))
    now = time.time()
    recs = [Record("cs.activity", i % 4, i, b"x", 10**9, timestamp_ms=int((now - 0.05) * 1000)) for i in range(batch)]
    for _ in range(20):  # warm-up
        await ops.received(recs, now)
        ops.applied(recs, now)
        ops.published(recs, now)
    t = time.perf_counter()
    for _ in range(rounds):
        await ops.received(recs, now)
        ops.applied(recs, now)
        ops.published(recs, now)
    per_batch = (time.perf_counter() - t) / rounds
    t = time.perf_counter()
    for _ in range(200):
        ops.metrics.render()
    scrape = (time.perf_counter() - t) / 200
    print(f"observer: {per_batch * 1e3:.2f} ms per {batch}-record batch = {per_batch / batch * 1e6:.2f} us/record")
    print(f"/metrics render: {scrape * 1e3:.2f} ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=400)
    args = ap.parse_args()
    asyncio.run(main(args.batch, args.rounds))
