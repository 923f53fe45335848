"""Operations end to end: a real worker serves /metrics and /health on Faust's web server,
behind WEB_TOKEN; the metrics follow Prometheus conventions and move when events are replayed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.e2e import build_file, run_cli, wait_handled

from stream_app.tools.embedded import free_port


TOKEN = "tok-" + uuid.uuid4().hex  # unique, so a leak into the log is unambiguous


def http(url: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@pytest.fixture
def ops_env(broker_url: str, e2e_redis: tuple[str, bool], key_prefix: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update(
        BROKER_URL=broker_url, REDIS_URL=e2e_redis[0], REDIS_CLUSTER=str(e2e_redis[1]).lower(), KEY_PREFIX=key_prefix, TOPIC_PREFIX=f"o{run}.",
        APP_ID=f"ops-{run}", REBALANCE_TIMEOUT_S="4", SESSION_TIMEOUT_S="10", HEARTBEAT_INTERVAL_S="1",
        TOPIC_PARTITIONS="3", LOG_LEVEL="info", DEDUPE_DAYS="120",
        WEB_ENABLED="true", WEB_PORT=str(free_port()), WEB_TOKEN=TOKEN, WATCHDOG_INTERVAL_S="0.5",
    )
    return env


@pytest.fixture
def ops_worker(ops_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "worker.log"
    proc = subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "worker"], env=ops_env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    yield proc, log
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "worker exited"
        try:
            http(url)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} not served within {timeout}s")


def scrape(base: str) -> dict[str, Any]:
    status, body, headers = http(f"{base}/metrics", TOKEN)
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def total(families: dict[str, Any], name: str, **labels: str) -> float:
    fam = families.get(name)
    if fam is None:
        return 0.0
    return sum(s.value for s in fam.samples
               if s.name == f"{name}_total" and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_health_and_token(ops_env: dict[str, str], ops_worker: tuple[subprocess.Popen[bytes], Path],
                                  tmp_path: Path) -> None:
    proc, log = ops_worker
    base = f"http://127.0.0.1:{ops_env['WEB_PORT']}"
    wait_http(f"{base}/health", proc)

    # the token: required everywhere, by header or query; /health stays open but says only its status
    assert http(f"{base}/metrics")[0] == 401
    assert http(f"{base}/metrics", "wrong-" + TOKEN)[0] == 401
    assert http(f"{base}/metrics?token={TOKEN}")[0] == 200
    assert http(f"{base}/")[0] == 401  # Faust's own pages are behind it too
    code, body, _ = http(f"{base}/health")
    assert code in (200, 503) and set(json.loads(body)) == {"status"}

    before = scrape(base)
    path = tmp_path / "events.jsonl"
    n_lines, invalid = build_file(path)
    run_cli(ops_env, "replay", str(path))
    wait_handled(ops_env, n_lines)

    deadline = time.monotonic() + 30
    while True:  # the watchdog ticks every 0.5 s; lag settles once the end offsets are read
        fams = scrape(base)
        lags = [s.value for s in fams["churnstream_consumer_lag_records"].samples]
        if len(lags) == 3 * 4 and not any(lags) or time.monotonic() > deadline:
            break
        time.sleep(0.5)

    # Prometheus conventions: prefix, counters end in _total, base units in the name
    for name, fam in fams.items():
        assert name.startswith("churnstream_"), name
        if fam.type == "counter":
            assert all(s.name == f"{name}_total" for s in fam.samples), name
        if fam.type == "histogram":
            assert name.endswith("_seconds"), name
        if "seconds" in fam.documentation.lower():  # a time-valued metric carries its base unit
            assert name.endswith("_seconds"), name
        assert not name.endswith("_created"), name

    # the values moved, and every consumed record is accounted for exactly once
    consumed = total(fams, "churnstream_events_consumed")
    assert total(before, "churnstream_events_consumed") == 0 and consumed == n_lines
    applied = total(fams, "churnstream_events_applied")
    dupes = total(fams, "churnstream_events_duplicates")
    dead = total(fams, "churnstream_events_dead_lettered")
    redelivered = total(fams, "churnstream_events_redelivered")
    assert dead == len(invalid) and applied > 0
    assert applied + dupes + dead + redelivered == consumed
    assert total(fams, "churnstream_events_dead_lettered", topic=ops_env["TOPIC_PREFIX"] + "activity") == 4
    assert total(fams, "churnstream_alerts", kind="detractor") == 1
    assert {s.labels["severity"] for s in fams["churnstream_alerts"].samples} <= {"info", "warning", "critical"}
    assert total(fams, "churnstream_scores_published") > 0 and total(fams, "churnstream_customers_scored") > 0
    lat = {s.labels["stage"]: s.value for s in fams["churnstream_event_latency_seconds"].samples
           if s.name == "churnstream_event_latency_seconds_count"}
    assert lat == {"received": consumed, "processed": consumed}
    assert [s.value for s in fams["churnstream_worker_healthy"].samples] == [1.0]
    assert len(lags) == 12 and not any(lags), lags  # 4 input topics x 3 partitions, all caught up
    assert fams["churnstream_last_processed_event_timestamp_seconds"].samples

    code, body, _ = http(f"{base}/health", TOKEN)
    health = json.loads(body)
    assert code == 200 and health["status"] == "ok" and len(health["partitions"]) == 12

    # the dashboard's API reads the same state (on a Redis Cluster too)
    code, body, _ = http(f"{base}/dashboard/api/at-risk?limit=5", TOKEN)
    rows = json.loads(body)["rows"]
    assert code == 200 and {r["customer_id"] for r in rows} == {"acme", "globex"}
    code, body, _ = http(f"{base}/dashboard/api/customer?id=acme", TOKEN)
    assert code == 200 and json.loads(body)["view"]["customer_id"] == "acme"
    code, body, _ = http(f"{base}/dashboard/api/portfolio", TOKEN)
    assert code == 200 and json.loads(body)["customers"] == 2, body
    assert http(f"{base}/dashboard/api/kpis", TOKEN)[0] == 200
    assert http(f"{base}/dashboard/api/model", TOKEN)[0] == 200

    # the CLI's alert feed reads the same topic
    out = run_cli(ops_env, "alerts", "--from-beginning", "--json")
    alerts = [json.loads(x) for x in out.stdout.splitlines()]
    assert [a["kind"] for a in alerts].count("detractor") == 1

    assert proc.poll() is None
    assert TOKEN not in log.read_text(errors="replace"), "the token leaked into the worker's log"
