"""A throwaway pipeline for benchmarks and evaluations: broker, Redis, one worker, replay.

Uses BROKER_URL / REDIS_URL when set, else an embedded broker and the local (or an embedded)
Redis, always with its own key prefix, topic prefix and consumer group, and removes its keys
afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from stream_app.embedded import EmbeddedBroker, EmbeddedRedis, redis_reachable
from stream_app.settings import Settings


class Stack:
    def __init__(self, partitions: int = 4, extra_env: dict[str, str] | None = None) -> None:
        self.partitions = partitions
        self.extra_env = extra_env or {}
        self.started: list[Any] = []
        self.worker: subprocess.Popen[bytes] | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="stack-"))

    def __enter__(self) -> "Stack":
        broker_url = os.environ.get("BROKER_URL")
        if not broker_url:
            broker = EmbeddedBroker().start()
            self.started.append(broker)
            broker_url = broker.url
        redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        if not redis_reachable(redis_url):
            emb = EmbeddedRedis().start()
            self.started.append(emb)
            redis_url = emb.url
        run = uuid.uuid4().hex[:8]
        self.env = dict(os.environ)
        self.env.update(
            BROKER_URL=broker_url,
            REDIS_URL=redis_url,
            KEY_PREFIX=f"bench:{run}:",
            TOPIC_PREFIX=f"bench{run}.",
            APP_ID=f"bench-{run}",
            TOPIC_PARTITIONS=str(self.partitions),
            REBALANCE_TIMEOUT_S="4",
            SESSION_TIMEOUT_S="10",
            HEARTBEAT_INTERVAL_S="1",
            LOG_LEVEL="warning",
            **self.extra_env,
        )
        self.settings = Settings(_env_file=None, **{k.lower(): v for k, v in self.env.items()
                                                   if k.lower() in Settings.model_fields})
        return self

    def start_worker(self) -> float:
        """Start the worker; returns seconds until it handled a first (probe) record."""
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115
        self.worker = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT)
        probe = self.tmp / "probe.jsonl"
        probe.write_text(json.dumps({"topic": "activity", "event_id": "probe", "customer_id": "~probe",
                                     "ts": 0, "action": "probe"}) + "\n")
        t0 = time.monotonic()
        self.replay(probe)
        while self.handled() < 1:
            if time.monotonic() - t0 > 120:
                raise TimeoutError("worker did not start: " + (self.tmp / "worker.log").read_text()[-2000:])
            time.sleep(0.2)
        return time.monotonic() - t0

    def replay(self, path: Path, rate: float | None = None) -> str:
        args = [sys.executable, "-m", "stream_app.cli", "replay", str(path)]
        if rate:
            args += ["--rate", str(rate)]
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, check=True)
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""

    def handled(self) -> int:
        return asyncio.run(self._handled())

    async def _handled(self) -> int:
        from stream_app.app import redis_client
        from stream_app.state import StateStore

        client = redis_client(self.settings)
        try:
            return await StateStore(client, self.settings).handled(list(self.settings.input_topics), self.partitions)
        finally:
            await client.aclose()

    def wait_handled(self, target: int, timeout: float = 3600) -> float:
        t0 = time.monotonic()
        while self.handled() < target:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"handled {self.handled()} of {target}")
            if self.worker is not None and self.worker.poll() is not None:
                raise RuntimeError("worker died: " + (self.tmp / "worker.log").read_text()[-3000:])
            time.sleep(0.2)
        return time.monotonic() - t0

    async def read_topic(self, logical: str) -> list[dict[str, Any]]:
        """Every message of an output topic, from the beginning."""
        from stream_app.topic_reader import read_topic

        return await read_topic(self.settings.bootstrap_servers(), self.settings.topic(logical))

    async def cleanup(self) -> None:
        from stream_app.app import redis_client

        client = redis_client(self.settings)
        try:
            batch: list[bytes] = []
            async for key in client.scan_iter(match=f"{self.settings.key_prefix}*", count=2000):
                batch.append(key)
                if len(batch) >= 1000:
                    await client.delete(*batch)
                    batch.clear()
            if batch:
                await client.delete(*batch)
        finally:
            await client.aclose()

    def __exit__(self, *exc: object) -> None:
        if self.worker is not None:
            self.worker.terminate()
            try:
                self.worker.wait(20)
            except subprocess.TimeoutExpired:
                self.worker.kill()
        if not os.environ.get("KEEP_STATE"):
            try:
                asyncio.run(self.cleanup())
            except Exception:  # noqa: BLE001 - best effort
                pass
        for thing in reversed(self.started):
            thing.stop()
