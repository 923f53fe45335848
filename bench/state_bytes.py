"""Redis bytes per customer after a history: replay it through the pipeline code on the local
Redis (``REDIS_URL``, else 127.0.0.1:6379; a private key prefix, deleted afterwards), then ``MEMORY USAGE`` over each customer's
keys (``StateStore.memory_usage``) and over its pending label snapshots alone.

    python bench/state_bytes.py history.jsonl.gz
"""

from __future__ import annotations

import asyncio
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream_app.pipeline.clients import redis_client  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.state.store import StateStore  # noqa: E402
from stream_app.tools.backtest.history import scan_history  # noqa: E402
from stream_app.state.store import delete_prefix  # noqa: E402
from stream_app.tools.backtest.run import backtest_settings, run_pipeline  # noqa: E402


async def main(path: str) -> None:
    settings = backtest_settings(Settings())
    settings = settings.model_copy(update={"redis_url": settings.redis_url or "redis://127.0.0.1:6379/0"})
    redis = redis_client(settings)
    history = scan_history(path, settings)
    try:
        run = await run_pipeline(path, settings, redis, history)
        store = StateStore(redis, settings)
        per = [await store.memory_usage(cid) for cid in history.first_seen]
        snaps = [await redis.memory_usage(store.keys(cid).snapshots, samples=0) or 0 for cid in history.first_seen]
        per.sort()
        print(f"{path}: {run.events:,} events, {len(per):,} customers; bytes per customer: mean {statistics.mean(per):,.0f}, "
              f"p99 {per[int(0.99 * (len(per) - 1))]:,}; of which pending label snapshots: mean {statistics.mean(snaps):,.0f}")
    finally:
        await delete_prefix(redis, settings.key_prefix)
        await redis.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
