"""Take the dashboard screenshots in docs/ from a real run: simulator -> broker -> worker -> Redis.

    python docs/make_screenshots.py [--customers 400 --days 150 --speed 0.8]

Starts an embedded broker (or uses BROKER_URL), uses REDIS_URL (default the local server) with
a key prefix of its own (deleted at the end), a worker serving the dashboard, and streams the
simulator paced near the worker's capacity; then drives headless Chromium (/usr/bin/chromium)
with Playwright to the overview and to the riskiest customer's page.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
        await page.wait_for_timeout(6000)  # a refresh or two: tiles and the live feed settle
        await page.screenshot(path=str(out / "dashboard.png"), full_page=True)
        cid = await page.eval_on_selector("#atrisk tbody tr", "tr => tr.dataset.customer")
        await page.click(f"#atrisk tbody tr[data-customer='{cid}'] td.cust a")
        await page.wait_for_function(
            "(() => { const c = Chart.getChart(document.getElementById('c-history'));"
            " return c && c.data.datasets[0].data.filter(v => v != null).length > 5; })()", timeout=30_000)
        await page.wait_for_timeout(1000)
        await page.screenshot(path=str(out / "dashboard-customer.png"), full_page=True)
        await browser.close()
        return str(cid)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=400)
    ap.add_argument("--days", type=int, default=150)
    ap.add_argument("--speed", type=float, default=0.8, help="simulated days per second")
    ap.add_argument("--activity-scale", type=float, default=0.3)
    ap.add_argument("--out", type=Path, default=DOCS)
    args = ap.parse_args()

    import redis

    from stream_app.cli import all_topics
    from stream_app.demo import DemoStats, produce_simulation, start_worker, stop_process
    from stream_app.embedded import EmbeddedBroker, ensure_topics, free_port
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
    log = Path(tempfile.mkstemp(prefix="shots-worker-", suffix=".log")[1])
    worker = None
    try:
        await ensure_topics(settings.bootstrap_servers(), all_topics(settings), 1, {})
        worker = start_worker(env, log)
        stats, stop = DemoStats(), asyncio.Event()
        t0 = time.monotonic()
        await produce_simulation(settings, args.customers, args.days, args.speed, stats, stop,
                                 activity_scale=args.activity_scale)
        print(f"produced {sum(stats.produced.values()):,} events in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        url = f"http://127.0.0.1:{settings.web_port}/dashboard/"
        cid = await shoot(url, args.out)
        print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'dashboard-customer.png'} (customer {cid})", file=sys.stderr)
        return 0
    finally:
        stop_process(worker)
        if broker is not None:
            broker.stop()
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{settings.key_prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        client.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
