"""The watchdog against a real worker process: freeze one agent (or crash it) with test-only
fault injection, see /health turn 503 with the details, the ERROR log line, and the process
exit non-zero; after a crash, a restarted worker applies the failed batch (nothing lost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.e2e import HOUR, T0_MS, customer_json, line, run_cli, wait_handled
from test_ops_e2e import http, wait_http

from stream_app.tools.embedded import free_port

pytestmark = pytest.mark.slow

STALL_S = 4
GRACE_S = 6


@pytest.fixture
def wd_env(broker_url: str, redis_url: str, key_prefix: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = dict(os.environ)
    env.update(
        BROKER_URL=broker_url, REDIS_URL=redis_url, KEY_PREFIX=key_prefix, TOPIC_PREFIX=f"w{run}.",
        APP_ID=f"wd-{run}", REBALANCE_TIMEOUT_S="4", SESSION_TIMEOUT_S="10", HEARTBEAT_INTERVAL_S="1",
        TOPIC_PARTITIONS="2", LOG_LEVEL="info", WEB_ENABLED="true", WEB_PORT=str(free_port()),
        STALL_AFTER_S=str(STALL_S), WATCHDOG_GRACE_S=str(GRACE_S), WATCHDOG_INTERVAL_S="0.5",
    )
    return env


class Worker:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc = subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "worker"], env=env,
                                     stdout=open(log, "wb"), stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{env['WEB_PORT']}"

    def health(self) -> tuple[int, dict[str, Any]]:
        code, body, _ = http(f"{self.base}/health")
        return code, json.loads(body)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def replay(env: dict[str, str], path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")
    run_cli(env, "replay", str(path))


def wait_health(w: Worker, code: int, timeout: float) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got, body = w.health()
        if got == code:
            return time.monotonic() - t0, body
        time.sleep(0.25)
    raise AssertionError(f"/health did not answer {code} within {timeout}s (last {got} {body})")


def acts(cid: str, start: int, n: int, action: str = "login") -> list[str]:
    return [line("activity", f"{cid}-{start + i}", cid, T0_MS + (start + i) * HOUR, action=action) for i in range(n)]


def test_frozen_agent_fires_the_watchdog(wd_env: dict[str, str], workers: list[Worker], tmp_path: Path) -> None:
    marker = "FREEZE" + uuid.uuid4().hex[:8]
    env = dict(wd_env, FAULT_FREEZE_MARKER=marker)
    w = Worker(env, tmp_path / "worker.log")
    workers.append(w)
    wait_http(f"{w.base}/health", w.proc)
    replay(env, tmp_path / "a.jsonl", acts("acme", 0, 3))
    wait_handled(env, 3)
    code, body = w.health()
    assert code == 200 and body["status"] == "ok"  # no WEB_TOKEN here: details for everyone

    # freeze the activity agent on a marked event; more activity queues behind it
    replay(env, tmp_path / "b.jsonl", acts("acme", 3, 1, action=marker) + acts("acme", 4, 5))
    waited, _ = wait_health(w, 503, timeout=STALL_S + 10)
    assert waited >= STALL_S - 2  # not before the stall threshold (the replay itself takes ~1-2 s)
    _, details = w.health()
    assert details["status"] == "stalled", details
    stalled = [p for p in details["partitions"] if p["stalled"]]
    assert stalled and all(p["topic"] == env["TOPIC_PREFIX"] + "activity" for p in stalled)
    assert all(p["lag"] >= 1 and p["stalled_for_s"] >= STALL_S for p in stalled)

    # only that agent is frozen: the rest of the process still answers and counts
    code, body, _ = http(f"{w.base}/metrics")
    assert code == 200 and b"churnstream_watchdog_stalled_partitions 1.0" in body

    rc = w.proc.wait(timeout=GRACE_S + 15)
    assert rc == 70
    log = w.log.read_text(errors="replace")
    assert "watchdog: worker STALLED" in log and "record(s) waiting, no progress for" in log
    assert f"{env['TOPIC_PREFIX']}activity[" in log
    assert "exiting with status 70" in log
    print(f"\nwatchdog: /health 503 after {waited:.1f} s of stall; stalled partitions {stalled}; exit status {rc}")
    print("\n".join(ln for ln in log.splitlines() if "watchdog" in ln))


def test_crashed_agent_holds_ingestion_exits_and_nothing_is_lost(
    wd_env: dict[str, str], workers: list[Worker], tmp_path: Path
) -> None:
    marker = "CRASH" + uuid.uuid4().hex[:8]
    env = dict(wd_env, FAULT_CRASH_MARKER=marker)
    w = Worker(env, tmp_path / "worker1.log")
    workers.append(w)
    wait_http(f"{w.base}/health", w.proc)
    replay(env, tmp_path / "a.jsonl", acts("acme", 0, 3))
    wait_handled(env, 3)
    assert customer_json(env, "acme")["events_applied"] == 3

    replay(env, tmp_path / "b.jsonl", acts("acme", 3, 1, action=marker))
    _, body = wait_health(w, 503, timeout=15)
    assert body["status"] == "crashed"
    assert body["crashes"][0]["agent"].endswith("ingest_activity") and "injected crash" in body["crashes"][0]["reason"]
    # Faust restarted the agent, but the watchdog holds ingestion: later events are not applied
    replay(env, tmp_path / "c.jsonl", acts("acme", 4, 2))
    rc = w.proc.wait(timeout=GRACE_S + 15)
    assert rc == 70
    assert customer_json(env, "acme")["events_applied"] == 3
    log = w.log.read_text(errors="replace")
    assert "watchdog: agent stream_app.ingest_activity crashed" in log and "exiting with status 70" in log

    # the supervisor's restart (here: a new worker, the fault gone) applies everything exactly once
    env2 = dict(wd_env)
    w2 = Worker(env2, tmp_path / "worker2.log")
    workers.append(w2)
    wait_handled(env2, 6)
    acme = customer_json(env2, "acme")
    assert acme["events_applied"] == 6 and acme["windows"]["7d"]["actions"].get(marker) == 1
    assert w2.health()[0] == 200
