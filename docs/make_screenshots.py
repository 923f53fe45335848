"""Take the dashboard screenshots in docs/ from a real run: simulator -> broker -> worker -> Redis.

    python docs/make_screenshots.py [--customers 200 --days 100 --speed 0.45]

Starts an embedded broker (or uses BROKER_URL), uses REDIS_URL (default the local server) with
a key prefix of its own (deleted at the end), a worker serving the dashboard, and streams the
simulator paced near the worker's capacity; then drives headless Chromium (/usr/bin/chromium)
with Playwright to the overview and to the riskiest customer's page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

DOCS = Path(__file__).resolve().parent


async def shoot(url: str, out: Path, wait_rows: int = 10) -> str:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1480, "height": 1000}, device_scale_factor=1)
        await page.goto(url)
        await page.wait_for_function(f"document.querySelectorAll('#atrisk tbody tr').length >= {wait_rows}", timeout=120_000)
        await page.wait_for_function("document.querySelectorAll('#feed li').length >= 3", timeout=120_000)
        await page.wait_for_function("document.querySelectorAll('#kpis tbody tr').length >= 10", timeout=60_000)
        await page.wait_for_timeout(6000)  # a refresh or two: tiles and the live feed settle
        await page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        # the riskiest customer with a month of daily scores (a customer who went silent is not
        # re-scored, so its history is short and the chart would say little)
        cid = await page.evaluate("""async () => {
            const rows = (await (await fetch('api/at-risk?limit=100')).json()).rows;
            return (rows.find(r => r.trend.length >= 20) || rows[0]).customer_id; }""")
        if not await page.query_selector(f"#atrisk tbody tr[data-customer='{cid}']"):
            await page.goto(url + f"#/customer/{cid}")
        else:
            await page.click(f"#atrisk tbody tr[data-customer='{cid}'] td.cust a")
        await page.wait_for_function(
            "(() => { const c = Chart.getChart(document.getElementById('c-history'));"
            " return c && c.data.datasets[0].data.filter(v => v != null).length >= 2; })()", timeout=30_000)
        await page.wait_for_timeout(1000)
        await page.screenshot(path=str(out / "dashboard-customer.png"), full_page=True)
        await browser.close()
        return str(cid)


async def wait_handled(settings: object, produced: int, timeout_s: float = 1800) -> None:
    """Until the worker has handled everything produced (its partition progress in Redis)."""
    from stream_app.pipeline.clients import redis_client
    from stream_app.state.store import StateStore

    client = redis_client(settings)  # type: ignore[arg-type]
    store = StateStore(client, settings)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout_s
    try:
        while await store.handled(list(store.settings.input_topics), store.settings.topic_partitions) < produced:
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not catch up")
            await asyncio.sleep(1)
    finally:
        await client.aclose()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=200)
    ap.add_argument("--days", type=int, default=100)
    ap.add_argument("--speed", type=float, default=0.45, help="simulated days per second")
    ap.add_argument("--activity-scale", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=DOCS)
    args = ap.parse_args()

    import redis

    from stream_app.settings import all_topics
    from stream_app.tools.demo import (
        DemoStats,
        produce_simulation,
        start_worker,
        stop_process,
    )
    from stream_app.tools.embedded import EmbeddedBroker, ensure_topics, free_port
    from stream_app.settings import Settings

    broker = None
    broker_url = os.environ.get("BROKER_URL")
    if not broker_url:
        broker = EmbeddedBroker().start()
        broker_url = broker.url
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    run = uuid.uuid4().hex[:8]
    settings = Settings(_env_file=None, broker_url=broker_url, redis_url=redis_url, key_prefix=f"shots-{run}:",
                        topic_prefix=f"shots{run}.", app_id=f"shots-{run}", web_port=free_port(), web_enabled=True)
    env = dict(os.environ, BROKER_URL=broker_url, REDIS_URL=redis_url, KEY_PREFIX=settings.key_prefix,
               TOPIC_PREFIX=settings.topic_prefix, APP_ID=settings.app_id, WEB_ENABLED="true",
               WEB_PORT=str(settings.web_port), REBALANCE_TIMEOUT_S="4", SESSION_TIMEOUT_S="10",
               HEARTBEAT_INTERVAL_S="1", LOG_LEVEL="warning")
    import stream_app

    repo = Path(stream_app.__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))
    workdir = Path(tempfile.mkdtemp(prefix="shots-"))  # Faust writes "<app id>-data/" into its cwd
    log = workdir / "worker.log"
    worker = None
    try:
        await ensure_topics(settings.bootstrap_servers(), all_topics(settings), 1, {})
        worker = start_worker(env, log, cwd=workdir)
        stats, stop = DemoStats(), asyncio.Event()
        t0 = time.monotonic()
        await produce_simulation(settings, args.customers, args.days, args.speed, stats, stop,
                                 activity_scale=args.activity_scale)
        produced = sum(stats.produced.values())
        print(f"produced {produced:,} events in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        await wait_handled(settings, produced)
        print(f"worker caught up after {time.monotonic() - t0:.0f}s", file=sys.stderr)
        url = f"http://127.0.0.1:{settings.web_port}/dashboard/"
        cid = await shoot(url, args.out)
        print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'dashboard-customer.png'} (customer {cid})", file=sys.stderr)
        return 0
    finally:
        stop_process(worker)
        shutil.rmtree(workdir, ignore_errors=True)
        if broker is not None:
            broker.stop()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{settings.key_prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
