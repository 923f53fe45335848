"""The dashboard in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a
real worker serving it, fed by the simulator through the broker, with the real Redis.

The page must: fill the at-risk list, show a new alert in the live feed without reloading,
filter by band, and draw the customer page's chart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

import stream_app
from stream_app.settings import all_topics
from stream_app.tools.demo import DemoStats, produce_simulation
from stream_app.tools.embedded import ensure_topics, free_port
from stream_app.settings import Settings

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
REPO = Path(stream_app.__file__).resolve().parents[1]


@dataclass
class LiveEnv:
    settings: Settings
    url: str
    worker: subprocess.Popen[bytes]
    log: Path


@pytest.fixture
def live(broker_url: str, redis_url: str, key_prefix: str, tmp_path: Path) -> Iterator[LiveEnv]:
    """A worker serving the dashboard on a free port, with this test's topics, group and keys."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail(f"{CHROMIUM} missing: apt-get install -y chromium (.ci/run installs it)")
    run = uuid.uuid4().hex[:8]
    port = free_port()
    settings = Settings(_env_file=None, broker_url=broker_url, redis_url=redis_url, key_prefix=key_prefix,
                        topic_prefix=f"b{run}.", app_id=f"browser-{run}", topic_partitions=2, web_port=port,
                        web_enabled=True)
    env = dict(os.environ, BROKER_URL=broker_url, REDIS_URL=redis_url, KEY_PREFIX=key_prefix,
               TOPIC_PREFIX=settings.topic_prefix, APP_ID=settings.app_id, TOPIC_PARTITIONS="2",
               WEB_ENABLED="true", WEB_PORT=str(port), REBALANCE_TIMEOUT_S="4", SESSION_TIMEOUT_S="10",
               HEARTBEAT_INTERVAL_S="1", DASHBOARD_REFRESH_S="2", LOG_LEVEL="info")
    # the worker runs in its own directory (Faust writes "<app id>-data/" there) on this checkout's code
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    asyncio.run(ensure_topics(settings.bootstrap_servers(), all_topics(settings), 1, {}))
    log = tmp_path / "worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "worker"], env=env, cwd=tmp_path,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    yield LiveEnv(settings, f"http://127.0.0.1:{port}/dashboard/", proc, log)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_served(env: LiveEnv, timeout: float = 60.0) -> float:
    """Seconds until the worker's web server answers the dashboard API."""
    import aiohttp

    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() - t0 < timeout:
            assert env.worker.poll() is None, env.log.read_text()[-3000:]
            try:
                async with session.get(env.url + "api/model") as resp:
                    if resp.status == 200:
                        return time.monotonic() - t0
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.3)
    raise AssertionError(f"dashboard not served within {timeout}s:\n{env.log.read_text()[-3000:]}")


def an_alert(cid: str, aid: str) -> dict[str, Any]:
    return {"alert_id": aid, "customer_id": cid, "ts": "2026-02-20T12:00:00+00:00", "kind": "churn_risk",
            "severity": "critical", "health_score": 31.5, "health_band": "red", "churn_probability": 0.42,
            "reasons": [{"factor": "activity_vs_baseline", "value": 0.1, "impact": -12.0}], "model_version": "browser-test"}


CANVAS_INK = """(id) => {
  const c = document.getElementById(id);
  const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < px.length; i += 4) if (px[i] > 0) n++;
  return n;
}"""


async def test_dashboard_in_chromium(live: LiveEnv, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer
    from playwright.async_api import async_playwright

    served_after = await wait_served(live)
    print(f"dashboard served {served_after:.1f}s after the worker started")
    stats, stop = DemoStats(), asyncio.Event()
    producing = asyncio.create_task(produce_simulation(live.settings, 40, 45, 5.0, stats, stop, activity_scale=0.3))
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(live.url)
            await page.evaluate("window.__sameDocument = 'yes'")

            # 1. the at-risk list fills, riskiest first
            await page.wait_for_function("document.querySelectorAll('#atrisk tbody tr').length >= 10", timeout=90_000)
            probs = await page.eval_on_selector_all(
                "#atrisk tbody td .prob", "els => els.map(e => parseFloat(e.textContent))")
            assert len(probs) >= 10 and probs == sorted(probs, reverse=True), probs
            first = await page.eval_on_selector("#atrisk tbody tr", "tr => tr.dataset.customer")

            # 2. a new alert appears in the feed, on top, without a reload
            await page.wait_for_selector("#live.on", timeout=30_000)
            before = await page.eval_on_selector_all("#feed li", "lis => lis.map(li => li.dataset.alertId)")
            aid = f"{first}/churn_risk/browser-{uuid.uuid4().hex[:6]}"
            producer = AIOKafkaProducer(bootstrap_servers=live.settings.bootstrap_servers())
            await producer.start()
            try:
                await producer.send_and_wait(live.settings.topic("alerts"), orjson.dumps(an_alert(first, aid)),
                                             key=first.encode())
            finally:
                await producer.stop()
            await page.wait_for_selector(f"#feed li[data-alert-id='{aid}']", timeout=30_000)
            # newest first: above every alert that was there before it (real ones may arrive after it)
            order = await page.eval_on_selector_all("#feed li", "lis => lis.map(li => li.dataset.alertId)")
            assert all(order.index(aid) < order.index(b) for b in before if b in order), (aid, order[:10])
            assert await page.evaluate("window.__sameDocument") == "yes"  # same document: no reload

            # the band filter shows only that band (the band most of the listed customers are in;
            # a row drawn before its customer's band was saved shows '–', which has no filter)
            bands = [b for b in await page.eval_on_selector_all("#atrisk tbody td .pill",
                                                                "ps => ps.map(p => p.textContent)")
                     if b in ("red", "yellow", "green")]
            assert bands, "no listed customer has a band"
            band = max(sorted(set(bands)), key=bands.count)
            await page.click(f"#band-filter button[data-band='{band}']")
            await page.wait_for_function(
                "band => { const ps = [...document.querySelectorAll('#atrisk tbody td .pill')];"
                " return ps.length > 0 && ps.every(p => p.textContent === band); }",
                arg=band, timeout=30_000)
            # the health distribution is drawn and counts the active customers
            dist_sum = "Chart.getChart(document.getElementById('dist')).data.datasets[0].data.reduce((a, b) => a + b, 0)"
            await page.wait_for_function(f"{dist_sum} > 0", timeout=30_000)  # tiles refresh every 5 s
            dist_total, band_note = await page.evaluate(
                f"[{dist_sum}, document.querySelector('#tile-customers .note').textContent]")
            banded = sum(int(n.replace(",", "")) for n in re.findall(r"([\d,]+) (?:red|yellow|green)", band_note))
            assert dist_total == banded  # every scored active customer counted once, as the band tile counts them
            assert await page.evaluate(CANVAS_INK, "dist") > 500
            # the live portfolio KPIs: a column per recent month and the current quarter, a row per KPI
            # (the KPI rows are drawn even before the first period has data: wait for the columns,
            # which the 5 s refresh adds once the portfolio has sums)
            await page.wait_for_function(
                "document.querySelectorAll('#kpis tbody tr').length >= 10"
                " && [...document.querySelectorAll('#kpis thead th')].some(h => h.textContent.includes('Q'))",
                timeout=30_000)
            heads = await page.eval_on_selector_all("#kpis thead th", "hs => hs.map(h => h.textContent)")
            assert heads[0] == "KPI" and any("Q" in h for h in heads[1:]) and any("(so far)" in h for h in heads)
            mrr_row = await page.eval_on_selector_all("#kpis tbody tr:nth-child(4) td", "ds => ds.map(d => d.textContent)")
            assert mrr_row[0] == "MRR (end)" and mrr_row[-1].startswith("$")

            # 3. the customer page draws its chart (health and churn probability per day)
            # (the customer's link, followed in-page; the live list may have moved it off this page)
            href = await page.evaluate("id => '#/customer/' + encodeURIComponent(id)", first)
            await page.evaluate("h => { location.hash = h; }", href)
            await page.wait_for_function(
                "(() => { const c = Chart.getChart(document.getElementById('c-history'));"
                " return c && c.data.datasets[0].data.filter(v => v != null).length >= 2; })()", timeout=30_000)
            assert await page.evaluate(CANVAS_INK, "c-history") > 2000
            assert await page.text_content("#c-id") == first
            assert await page.evaluate(
                "Chart.getChart(document.getElementById('c-components')).data.datasets[0].data.length") == 6
            await page.wait_for_selector(f"#c-alerts li[data-alert-id='{aid}']", timeout=15_000)
            await page.screenshot(path=str(tmp_path / "customer.png"))
            assert errors == [], errors
            await browser.close()
    finally:
        stop.set()
        producing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producing
    assert served_after < 60, served_after


def test_demo_shows_the_dashboard_within_a_minute(redis_url: str, key_prefix: str, tmp_path: Path) -> None:
    """The README's demo command: the URL it prints shows a filled at-risk list within 60 s."""
    import signal

    from playwright.sync_api import sync_playwright

    port = free_port()
    env = dict(os.environ, REDIS_URL=redis_url, KEY_PREFIX=key_prefix, WEB_PORT=str(port),
               APP_ID=f"demo-{uuid.uuid4().hex[:8]}", LOG_LEVEL="warning")
    env.pop("BROKER_URL", None)  # the demo starts its own broker
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    out = tmp_path / "demo.out"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream_app.tools.cli", "demo", "--customers", "60", "--days", "60", "--speed", "2",
         "--duration", "150"],
        env=env, cwd=tmp_path, stdout=open(out, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    try:
        url = None
        while url is None and time.monotonic() - t0 < 30:
            assert proc.poll() is None, out.read_text()[-3000:]
            m = re.search(r"dashboard: (http://\S+/dashboard/)", out.read_text(errors="replace"))
            url = m.group(1) if m else None
            time.sleep(0.2)
        assert url == f"http://localhost:{port}/dashboard/", out.read_text()[-3000:]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            while True:
                try:
                    page.goto(url, timeout=5000)
                    break
                except Exception:  # noqa: BLE001 - not served yet
                    assert time.monotonic() - t0 < 60, out.read_text()[-3000:]
                    time.sleep(0.5)
            page.wait_for_function("document.querySelectorAll('#atrisk tbody tr').length >= 5",
                                   timeout=max(1, 60 - (time.monotonic() - t0)) * 1000)
            shown_after = time.monotonic() - t0
            page.wait_for_function("document.querySelectorAll('#feed li').length >= 1", timeout=60_000)
            browser.close()
        print(f"demo: at-risk list shown {shown_after:.1f}s after `stream-app demo` started")
        assert shown_after < 60
    finally:
        proc.send_signal(signal.SIGINT)  # the demo stops what it started
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
