"""SIGKILL the delivery process (a real ``stream-app deliver`` subprocess) mid-stream and
restart it: every alert id still reaches the receiver; re-sent ones carry the same key."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
from support.delivery import alert, create_topics, produce, wait_for, write_config
from support.receivers import Receiver

from stream_app.delivery.signing import IDEMPOTENCY_HEADER
from stream_app.settings import Settings

pytestmark = pytest.mark.slow


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "deliver"], env=env,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


async def test_kill_mid_stream_and_restart_loses_no_alert(broker_url: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    env = dict(os.environ, BROKER_URL=broker_url, TOPIC_PREFIX=f"k{run}.", APP_ID=f"kill-{run}", TOPIC_PARTITIONS="3",
               REBALANCE_TIMEOUT_S="4", SESSION_TIMEOUT_S="6", HEARTBEAT_INTERVAL_S="1", COMMIT_INTERVAL_S="0.5",
               DELIVERY_PORT="0", LOG_LEVEL="warning", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    settings = Settings(_env_file=None, broker_url=broker_url, topic_prefix=f"k{run}.", topic_partitions=3)
    await create_topics(settings)
    # a slow receiver (50 ms a call) so that many alerts are in flight when the process dies
    receiver = Receiver(lambda n, call: (200, {}))
    original = receiver.handle

    async def slow(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.05)
        return await original(request)

    receiver.handle = slow  # type: ignore[method-assign]
    await receiver.start()
    write_config(tmp_path / "delivery.yaml", [{"name": "hook", "type": "webhook", "url": receiver.url, "secret": "k"}])
    env["DELIVERY_FILE"] = str(tmp_path / "delivery.yaml")
    alerts = [alert(i) for i in range(800)]
    ids = {a["alert_id"] for a in alerts}
    log = tmp_path / "deliver.log"
    proc = start(env, log)
    try:
        producing = asyncio.create_task(produce(settings, alerts, rate=100.0))
        await wait_for(lambda: len(receiver.accepted) >= 60, 90, "the first deliveries")
        await asyncio.sleep(1.5)  # a few commit rounds while alerts keep arriving
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        got_before = len(set(receiver.unique_keys()))
        await producing
        assert got_before < len(ids), "killed too late to prove anything"
        proc = start(env, log)
        await wait_for(lambda: set(receiver.unique_keys()) >= ids, 120, "every alert after the restart")
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
        await receiver.stop()
    keys = Counter(c.headers[IDEMPOTENCY_HEADER] for c in receiver.accepted)
    assert set(keys) == ids  # nothing lost
    resent = sum(n - 1 for n in keys.values())
    # only what was in flight at the kill (or settled after the last commit) is re-sent, not the history
    assert resent < got_before / 2, (resent, got_before)
    print(f"delivered before the kill: {got_before}; re-sent after restart: {resent}")
