"""Does ``stream-app demo`` keep up with its simulator? (issue 16: lag under 2 s of events for 10 minutes)

Runs what the demo runs, without the screen: an embedded broker (or BROKER_URL), the local
Redis (or an embedded one), one ``stream-app worker`` with the demo's settings, and the
demo's paced simulator (``produce_simulation``: one simulated day per second by default).
Every second it samples the events produced and the events the worker has handled (Redis
progress, as the demo's "lag" counter does) and prints the lag in events and in seconds of
events (lag / production rate over the last 10 s). The clock starts once the worker handles
its first event (joining the group is start-up, not lag).

    python bench/demo_lag.py                   # 10 minutes, the demo's defaults
    python bench/demo_lag.py --duration 60     # a shorter look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import git_commit  # noqa: E402

from stream_app.pipeline.clients import redis_client  # noqa: E402
from stream_app.settings import Settings, all_topics  # noqa: E402
from stream_app.state.store import StateStore, delete_prefix  # noqa: E402
from stream_app.tools.demo import (  # noqa: E402
    DemoStats,
    _worker_env,
    produce_simulation,
    start_services,
    start_worker,
    stop_process,
)
from stream_app.tools.embedded import ensure_topics, free_port  # noqa: E402


async def sample(settings: Settings, customers: int, days: int, speed: float, duration: float,
                 worker_alive: Callable[[], bool]) -> dict[str, object]:
    stats = DemoStats()
    stop = asyncio.Event()
    producer = asyncio.create_task(produce_simulation(settings, customers, days, speed, stats, stop))
    client = redis_client(settings)
    store = StateStore(client, settings)
    samples: list[tuple[float, int, int]] = []  # (time, produced, handled)
    started: float | None = None
    try:
        while True:
            await asyncio.sleep(1.0)
            if not worker_alive():
                raise RuntimeError("the worker exited")
            handled = await store.handled(list(settings.input_topics), settings.topic_partitions)
            produced = sum(stats.produced.values()) + stats.bad_produced
            now = time.monotonic()
            if started is None and handled > 0:
                started = now
            if started is not None:
                samples.append((now, produced, handled))
                if now - started >= duration or producer.done():
                    break
    finally:
        stop.set()
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        await delete_prefix(client, settings.key_prefix)
        await client.aclose()
    lag_events = [max(p - h, 0) for _, p, h in samples]
    lag_s = []
    for i, (t, p, h) in enumerate(samples):
        j = max(0, i - 10)
        rate = (p - samples[j][1]) / (t - samples[j][0]) if t > samples[j][0] else 0.0
        lag_s.append(max(p - h, 0) / rate if rate > 0 else 0.0)
    span = samples[-1][0] - samples[0][0] if len(samples) > 1 else 0.0
    return {
        "seconds": round(span, 1),
        "produced": samples[-1][1] if samples else 0,
        "handled": samples[-1][2] if samples else 0,
        "events_per_s": round((samples[-1][1] - samples[0][1]) / span) if span else None,
        "lag_events_max": max(lag_events, default=0),
        "lag_events_median": statistics.median(lag_events) if lag_events else 0,
        "lag_s_max": round(max(lag_s, default=0.0), 2),
        "lag_s_p95": round(sorted(lag_s)[int(0.95 * (len(lag_s) - 1))], 2) if lag_s else 0.0,
        "lag_s_last": round(lag_s[-1], 2) if lag_s else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=300)
    ap.add_argument("--days", type=int, default=120, help="simulated days (the demo's default; the simulator starts on 2026-01-01, and days past the wall clock are rejected as future events)")
    ap.add_argument("--speed", type=float, default=1.0, help="simulated days per second (the demo's default)")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds measured after the first handled event")
    args = ap.parse_args()
    base = Settings()
    started: list[object] = []
    worker = None
    try:
        broker_url, redis_url = start_services(base, started)
        run = uuid.uuid4().hex[:8]
        settings = base.model_copy(update={"broker_url": broker_url, "redis_url": redis_url, "web_port": free_port(),
                                           "topic_prefix": f"lag{run}.", "key_prefix": f"bench:lag{run}:"})
        asyncio.run(ensure_topics(settings.bootstrap_servers(), all_topics(settings), settings.topic_replication,
                                  settings.kafka_client_kwargs()))
        log = Path(tempfile.mkstemp(prefix="demo-lag-worker-", suffix=".log")[1])
        worker = start_worker(_worker_env(settings, broker_url, redis_url), log)
        w = worker
        result = asyncio.run(sample(settings, args.customers, args.days, args.speed, args.duration,
                                    lambda: w.poll() is None))
        result |= {"commit": git_commit(), "customers": args.customers, "speed_days_per_s": args.speed,
                   "partitions": settings.topic_partitions}
        print(json.dumps(result, indent=2))
        return 0
    finally:
        stop_process(worker)
        for thing in reversed(started):
            thing.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    sys.exit(main())
