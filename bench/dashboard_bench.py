"""Dashboard read side at scale: request latency and the portfolio pass with N customers.

    python bench/dashboard_bench.py --customers 100000

Seeds N synthetic customers (main hash as the scorer leaves it: score, band, probability, MRR,
reasons, 30 daily scores, last NPS, CSAT day buckets; and the ``risk`` sorted set) into its own
``redis-server`` on a free port (or REDIS_URL with a key prefix of its own, deleted after), then
times the dashboard's API through its aiohttp app (in-process HTTP, so JSON encoding is counted):
at-risk pages (top, deep offset, band-filtered), a customer, and the background portfolio pass.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_app.tools.embedded import free_port  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.state.layout import CustomerKeys  # noqa: E402

DAY = 20_500  # an event-time day (2026-02-16)


async def seed(redis_url: str, prefix: str, n: int) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    rng = random.Random(7)
    await client.set(f"{prefix}wm", (DAY * 86_400_000) + 43_200_000)
    for start in range(0, n, 2000):
        pipe = client.pipeline(transaction=False)
        risk: dict[str, float] = {}
        for i in range(start, min(n, start + 2000)):
            cid = f"c{i:06d}"
            hs = rng.betavariate(5, 2) * 100
            band = "green" if hs >= 70 else "yellow" if hs >= 45 else "red"
            p = min(0.95, max(0.001, (100 - hs) / 100 * rng.random() * 0.6))
            fields: dict[str, str | int] = {
                "hs": int(hs * 10), "hb": band, "cp": f"{p:.4f}", "mrr": rng.choice([3000, 9000, 45000, 120000]),
                "st": "cancelled" if rng.random() < 0.02 else "renewed", "cts": (DAY - rng.randint(0, 60)) * 86_400_000,
                "r1": "activity_vs_baseline:-8.1", "r2": "csat_90d:-4", "r3": "tenure_days:-2.5", "mv": "online-logreg",
                "npsl": rng.randint(0, 10), "npst": (DAY - rng.randint(0, 120)) * 86_400_000, "lts": DAY * 86_400_000,
            }
            for d in range(DAY - 34, DAY + 1):
                fields[f"h{d}"] = int(min(1000, max(0, hs * 10 + rng.gauss(0, 20))))
            for d in rng.sample(range(DAY - 89, DAY + 1), 4):
                fields[f"s{d}"] = f"0,0,0,0,0,1,{rng.randint(1, 5) * 1000},{int(rng.random() < 0.8)}"
            pipe.hset(CustomerKeys.for_customer(prefix, cid).main, mapping=fields)
            if fields["st"] != "cancelled":
                risk[cid] = p
        pipe.zadd(f"{prefix}risk", risk)
        await pipe.execute()
    await client.aclose()


async def timed(client: object, path: str, repeat: int) -> tuple[float, float]:
    """Median and max milliseconds of ``repeat`` GETs."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        resp = await client.get(path)  # type: ignore[attr-defined]
        await resp.read()
        assert resp.status == 200, (path, resp.status, await resp.text())
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), max(times)


async def bench(redis_url: str, prefix: str, n: int, repeat: int) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from stream_app.read.tiles import scan_portfolio
    from stream_app.web.dashboard import PORTFOLIO, PREFIX, standalone_app

    # no background refresh during the timings: the bench runs the pass itself
    settings = Settings(_env_file=None, redis_url=redis_url, key_prefix=prefix, broker_url=None, dashboard_refresh_s=3600)
    t0 = time.perf_counter()
    await seed(redis_url, prefix, n)
    print(f"seeded {n:,} customers in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    app = standalone_app(settings)
    async with TestClient(TestServer(app)) as client:
        api = f"{PREFIX}/api"
        rows = []
        rows.append(("at-risk, top 25", *await timed(client, f"{api}/at-risk?limit=25", repeat)))
        rows.append(("at-risk, offset 50,000", *await timed(client, f"{api}/at-risk?limit=25&offset=50000", repeat)))
        t0 = time.perf_counter()
        resp = await client.get(f"{api}/portfolio")  # the first request waits for the first pass
        tiles = await resp.json()
        first = (time.perf_counter() - t0) * 1000
        rows.append(("portfolio, first request (runs the pass)", first, first))
        rows.append(("portfolio, cached", *await timed(client, f"{api}/portfolio", repeat)))
        rows.append(("at-risk, band=red (cached ranking)", *await timed(client, f"{api}/at-risk?band=red&limit=25", repeat)))
        rows.append(("at-risk, band=green offset 10,000", *await timed(client, f"{api}/at-risk?band=green&limit=25&offset=10000", repeat)))
        rows.append(("customer page", *await timed(client, f"{api}/customer?id=c000042", repeat)))
        cache = client.server.app._subapps[0][PORTFOLIO]
        passes = []
        for _ in range(3):
            t0 = time.perf_counter()
            await cache.refresh()
            passes.append((time.perf_counter() - t0) * 1000)
        rows.append(("portfolio pass (background, median of 3)", statistics.median(passes), max(passes)))
        lean = []
        for _ in range(3):
            t0 = time.perf_counter()
            await scan_portfolio(cache.store, settings, with_csat=False)
            lean.append((time.perf_counter() - t0) * 1000)
        rows.append(("  the same without CSAT buckets", statistics.median(lean), max(lean)))
    print(f"\ncustomers: {n:,} (active {tiles['active']:,}); requests: median / max of {repeat}")
    print(f"{'what':<46} {'median ms':>10} {'max ms':>10}")
    for name, med, mx in rows:
        print(f"{name:<46} {med:>10.1f} {mx:>10.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    prefix = f"dbench-{uuid.uuid4().hex[:8]}:"
    url = os.environ.get("REDIS_URL")
    server = None
    tmp = None
    if not url:  # a server of our own: the bench neither loads nor fills a shared one
        binary = shutil.which("redis-server")
        if binary is None:
            print("redis-server not found; set REDIS_URL", file=sys.stderr)
            return 2
        port = free_port()
        tmp = tempfile.mkdtemp(prefix="dbench-redis-")
        server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                   "--dir", tmp], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    try:
        asyncio.run(bench(url, prefix, args.customers, args.repeat))
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
            shutil.rmtree(tmp or "", ignore_errors=True)
        else:
            import redis

            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"{prefix}*", count=5000))
            for i in range(0, len(keys), 5000):
                client.delete(*keys[i : i + 5000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
