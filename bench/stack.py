"""A throwaway pipeline for benchmarks and evaluations: broker, Redis, workers, replay.

``Services`` resolves the infrastructure: BROKER_URL / REDIS_URL when set, else an embedded
broker and the local (or an embedded) Redis; it stops only what it started. ``Stack`` is one
deployment on top of it with its own key prefix, topic prefix and consumer group: it starts
workers, replays files, counts handled records and removes its keys afterwards. Several
stacks can share one ``Services`` and one topic prefix (the same data, read again from
offset 0 by a new consumer group with a fresh key prefix).
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

from stream_app.tools.embedded import EmbeddedBroker, EmbeddedRedis, redis_reachable
from stream_app.settings import Settings

#: Consumer-group timing for throwaway workers (start-up ~6-8 s instead of a minute).
FAST_GROUP_ENV = {"REBALANCE_TIMEOUT_S": "4", "SESSION_TIMEOUT_S": "10", "HEARTBEAT_INTERVAL_S": "1"}


def percentile(values: list[int] | list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1); 0.0 for no values.

    >>> percentile([5, 1, 3], 0.5), percentile([], 0.99)
    (3.0, 0.0)
    """
    if not values:
        return 0.0
    s = sorted(values)
    return float(s[min(len(s) - 1, int(round(q * (len(s) - 1))))])


def git_commit() -> str:
    """Short commit of the checkout this file is in (``-dirty`` if it has local changes)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except Exception:  # noqa: BLE001 - not a git checkout
        return "unknown"


class Services:
    """Broker and Redis URLs for a run; embedded ones are started here and stopped on exit."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.broker_url = ""
        self.redis_url = ""
        self.embedded_broker: EmbeddedBroker | None = None

    def __enter__(self) -> "Services":
        self.broker_url = os.environ.get("BROKER_URL", "")
        if not self.broker_url:
            self.embedded_broker = EmbeddedBroker().start()
            self.started.append(self.embedded_broker)
            self.broker_url = self.embedded_broker.url
        self.redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        if not redis_reachable(self.redis_url):
            emb = EmbeddedRedis().start()
            self.started.append(emb)
            self.redis_url = emb.url
        return self

    def __exit__(self, *exc: object) -> None:
        for thing in reversed(self.started):
            thing.stop()
        self.started.clear()


class Stack:
    """One throwaway deployment: its own key prefix, topic prefix and consumer group."""

    def __init__(
        self,
        partitions: int = 4,
        extra_env: dict[str, str] | None = None,
        services: Services | None = None,
        topic_prefix: str | None = None,
        key_prefix: str | None = None,
        app_id: str | None = None,
    ) -> None:
        self.partitions = partitions
        self.extra_env = extra_env or {}
        self.services = services
        self._own_services: Services | None = None
        run = uuid.uuid4().hex[:8]
        self.topic_prefix = topic_prefix or f"bench{run}."
        self.key_prefix = key_prefix or f"bench:{run}:"
        self.app_id = app_id or f"bench-{run}"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="stack-"))

    @property
    def worker(self) -> subprocess.Popen[bytes] | None:
        """The first worker (most stacks run one)."""
        return self.workers[0] if self.workers else None

    def __enter__(self) -> "Stack":
        if self.services is None:
            self._own_services = Services().__enter__()
            self.services = self._own_services
        self.env = dict(os.environ)
        self.env.update(
            BROKER_URL=self.services.broker_url,
            REDIS_URL=self.services.redis_url,
            KEY_PREFIX=self.key_prefix,
            TOPIC_PREFIX=self.topic_prefix,
            APP_ID=self.app_id,
            TOPIC_PARTITIONS=str(self.partitions),
            LOG_LEVEL="warning",
            **FAST_GROUP_ENV,
        )
        self.env.update(self.extra_env)
        self.settings = Settings(_env_file=None, **{k.lower(): v for k, v in self.env.items()
                                                   if k.lower() in Settings.model_fields})
        return self

    def start_workers(self, n: int = 1, env: dict[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
        """Start ``n`` worker processes (``stream-app worker``) in this stack's consumer group."""
        started = []
        for _ in range(n):
            log = open(self.tmp / f"worker{len(self.workers)}.log", "ab")  # noqa: SIM115
            cmd = os.environ.get("BENCH_WORKER_CMD", f"{sys.executable} -m stream_app.tools.cli worker").split()
            proc = subprocess.Popen(cmd, env={**self.env, **(env or {})},
                                    stdout=log, stderr=subprocess.STDOUT)
            self.workers.append(proc)
            started.append(proc)
        return started

    def worker_log(self, i: int = 0, tail: int = 3000) -> str:
        p = self.tmp / f"worker{i}.log"
        return p.read_text(errors="replace")[-tail:] if p.exists() else ""

    def start_worker(self) -> float:
        """Start the worker; returns seconds until it handled a first (probe) record."""
        self.start_workers(1)
        probe = self.tmp / "probe.jsonl"
        probe.write_text(json.dumps({"topic": "activity", "event_id": "probe", "customer_id": "~probe",
                                     "ts": 0, "action": "probe"}) + "\n")
        t0 = time.monotonic()
        self.replay(probe)
        while self.handled() < 1:
            if time.monotonic() - t0 > 120:
                raise TimeoutError("worker did not start: " + self.worker_log())
            time.sleep(0.2)
        return time.monotonic() - t0

    def replay(self, path: Path, rate: float | None = None) -> str:
        """``stream-app replay`` in a subprocess; returns its last line of output."""
        args = [sys.executable, "-m", "stream_app.tools.cli", "replay", str(path)]
        if rate:
            args += ["--rate", str(rate)]
        out = subprocess.run(args, env=self.env, capture_output=True, text=True, check=True)
        return out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""

    def replay_async(self, path: Path, rate: float | None = None) -> subprocess.Popen[str]:
        """Like ``replay`` but returns the running process (a paced producer next to a worker)."""
        args = [sys.executable, "-m", "stream_app.tools.cli", "replay", str(path)]
        if rate:
            args += ["--rate", str(rate)]
        return subprocess.Popen(args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def handled(self) -> int:
        return asyncio.run(self._handled())

    async def _handled(self) -> int:
        from stream_app.pipeline.clients import redis_client
        from stream_app.state.store import StateStore

        client = redis_client(self.settings)
        try:
            return await StateStore(client, self.settings).handled(list(self.settings.input_topics), self.partitions)
        finally:
            await client.aclose()

    def check_workers(self) -> None:
        """Raise if a worker process has exited."""
        for i, w in enumerate(self.workers):
            if w.poll() is not None:
                raise RuntimeError(f"worker {i} died (exit {w.returncode}): " + self.worker_log(i))

    def wait_handled(self, target: int, timeout: float = 3600) -> float:
        t0 = time.monotonic()
        while self.handled() < target:
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"handled {self.handled()} of {target}")
            self.check_workers()
            time.sleep(0.2)
        return time.monotonic() - t0

    async def read_topic(self, logical: str) -> list[dict[str, Any]]:
        """Every message of an output topic, from the beginning."""
        from stream_app.read.topics import read_topic

        return await read_topic(self.settings.bootstrap_servers(), self.settings.topic(logical))

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.poll() is None:
                w.terminate()
        for w in self.workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
                w.wait(5)
        self.workers.clear()

    async def cleanup(self) -> None:
        """Delete every Redis key under this stack's key prefix."""
        await delete_keys(self.settings, self.key_prefix)

    def __exit__(self, *exc: object) -> None:
        self.stop_workers()
        if not os.environ.get("KEEP_STATE"):
            try:
                asyncio.run(self.cleanup())
            except Exception:  # noqa: BLE001 - best effort
                pass
        if self._own_services is not None:
            self._own_services.__exit__(*exc)


async def delete_keys(settings: Settings, prefix: str) -> int:
    """Delete every key starting with ``prefix`` (SCAN + DEL in chunks); returns how many."""
    from stream_app.pipeline.clients import redis_client

    if not prefix or "*" in prefix:
        raise ValueError(f"refusing to delete keys for prefix {prefix!r}")
    client = redis_client(settings)
    n = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=2000):
            batch.append(key)
            if len(batch) >= 1000:
                n += await client.delete(*batch)
                batch.clear()
        if batch:
            n += await client.delete(*batch)
    finally:
        await client.aclose()
    return n
