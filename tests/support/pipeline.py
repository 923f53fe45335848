"""A real pipeline for fault-injection tests: worker subprocesses on a broker and Redis, with
their own topic prefix, consumer group and key prefix; state and output snapshots to compare."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from stream_app.state import layout
from stream_app.settings import Settings
from stream_app.state.store import StateStore
from stream_app.read.topics import read_topic


class Pipeline:
    """Workers (``stream-app worker`` subprocesses) sharing one consumer group."""

    def __init__(self, broker_url: str, redis_url: str, tmp: Path, partitions: int = 4, **env: str) -> None:
        run = uuid.uuid4().hex[:8]
        self.tmp = tmp
        self.env = dict(os.environ)
        self.env.update(
            BROKER_URL=broker_url, REDIS_URL=redis_url, KEY_PREFIX=f"cstest:{run}:", TOPIC_PREFIX=f"f{run}.",
            APP_ID=f"faults-{run}", TOPIC_PARTITIONS=str(partitions), REBALANCE_TIMEOUT_S="4",
            SESSION_TIMEOUT_S="10", HEARTBEAT_INTERVAL_S="1", LOG_LEVEL="info", **env,
        )
        self.settings = Settings(_env_file=None, **{k.lower(): v for k, v in self.env.items()
                                                   if k.lower() in Settings.model_fields})
        self.workers: list[subprocess.Popen[bytes]] = []
        self.redis = redis.Redis.from_url(redis_url)
        self.starts = 0

    # --- processes ---------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "stream_app.tools.cli", *args], env=self.env,
                              capture_output=True, text=True, timeout=timeout, check=True)

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        self.starts += 1
        log = open(self.tmp / f"worker-{self.starts}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "worker"], env={**self.env, **env},
                                stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                p.terminate()
        for p in self.workers:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(f.read_text(errors="replace") for f in sorted(self.tmp.glob("worker-*.log")))

    # --- progress ----------------------------------------------------------------------------
    def handled(self) -> int:
        async def go() -> int:
            from stream_app.pipeline.clients import redis_client

            client = redis_client(self.settings)
            try:
                return await StateStore(client, self.settings).handled(
                    list(self.settings.input_topics), self.settings.topic_partitions)
            finally:
                await client.aclose()

        return asyncio.run(go())

    def through(self) -> int | None:
        raw = self.redis.get(f"{self.settings.key_prefix}model:through")
        return int(raw) if raw is not None else None

    def wait_done(self, total: int, timeout: float = 900) -> None:
        """Until every record is handled and the learner has caught up (stable)."""
        t0 = time.monotonic()
        stable_since, last = None, None
        while True:
            now = (self.handled(), self.through())
            if now[0] >= total and now == last:
                stable_since = stable_since or time.monotonic()
                if time.monotonic() - stable_since > 4:
                    return
            else:
                stable_since = None
            last = now
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"handled {now[0]} of {total}\n" + self.logs()[-4000:])
            if self.workers and all(p.poll() is not None for p in self.workers):
                raise RuntimeError("all workers exited\n" + self.logs()[-4000:])
            time.sleep(0.5)

    # --- snapshots ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Every key under the prefix with its full value (types kept apart)."""
        prefix = self.settings.key_prefix.encode()
        out: dict[str, Any] = {}
        for key in self.redis.scan_iter(match=f"{self.settings.key_prefix}*", count=2000):
            # progress keys name their topic: compare runs with different topic prefixes
            name = key[len(prefix):].decode(errors="replace").replace(self.settings.topic_prefix, "<topics>.")
            if name == "epoch":  # when this deployment's state began: wall clock, by design
                continue
            if name.startswith(layout.FENCE):  # fencing counts assignments: restarts add some, by design
                continue
            kind = self.redis.type(key)
            if kind == b"hash":
                value: Any = self.redis.hgetall(key)
                if name.startswith("p:"):  # partition progress: idle depends on fetch timing
                    value = {f: v for f, v in value.items() if f != b"idle"}
                value.pop(layout.OWNER.encode(), None)  # the fence generation that last wrote it
            elif kind == b"zset":
                value = self.redis.zrange(key, 0, -1, withscores=True)
            elif kind == b"string":
                value = self.redis.get(key)
                if name == layout.PARTITIONING:  # "<topic prefix>|<partitions>"
                    value = value.replace(self.settings.topic_prefix.encode(), b"<topics>.")
                elif name == "model:summary":
                    value = json.loads(value)
                elif name.startswith("model:blob:"):
                    value = model_fingerprint(value)
            else:
                value = kind
            out[name] = value
        return out

    def topic(self, logical: str) -> list[dict[str, Any]]:
        return asyncio.run(read_topic(self.settings.bootstrap_servers(), self.settings.topic(logical)))

    def alerts(self) -> tuple[dict[str, dict[str, Any]], int]:
        """Alerts by id, and how many messages repeated an id already seen."""
        msgs = self.topic("alerts")
        by_id: dict[str, dict[str, Any]] = {}
        for m in msgs:
            by_id.setdefault(m["alert_id"], m)
        return by_id, len(msgs) - len(by_id)

    def scores(self) -> tuple[Counter[str], int]:
        msgs = [json.dumps(m, sort_keys=True) for m in self.topic("scores")]
        distinct = Counter(msgs)
        return distinct, len(msgs) - len(distinct)

    def cleanup(self) -> None:
        self.stop_all()
        keys = list(self.redis.scan_iter(match=f"{self.settings.key_prefix}*", count=2000))
        for i in range(0, len(keys), 1000):
            self.redis.delete(*keys[i: i + 1000])
        self.redis.close()


def model_fingerprint(blob: bytes) -> tuple[Any, ...]:
    """What a checkpoint *is*, not how pickle laid it out: a model restored from a checkpoint and
    trained on shares fewer objects than one that never left memory, so the bytes differ
    while every weight, statistic and prediction is the same."""
    from stream_app.model.churn import ChurnModel

    m = ChurnModel.from_bytes(blob)
    probes = [{"health_score": float(h), "tenure_days": float(t), "activity_vs_baseline": a}
              for h in (15, 50, 85) for t in (10, 400) for a in (0.2, 1.0)]
    return (json.dumps(m.summary(), sort_keys=True, default=str),
            tuple((name, round(c.intercept, 12), tuple(sorted((k, round(float(v), 12)) for k, v in c.weights.items())))
                  for name, c in m.candidates.items()),
            tuple(round(m.predict_one(x)[0], 12) for x in probes),
            tuple(round(c.predict_proba_one(x)[True], 12) for c in m.candidates.values() for x in probes))


def diff(a: dict[str, Any], b: dict[str, Any], limit: int = 10) -> list[str]:
    """Keys whose values differ (for assertion messages)."""
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{k}: {str(a.get(k))[:300]} != {str(b.get(k))[:300]}")
            if len(out) >= limit:
                break
    return out
