"""A private three-node Redis Cluster (three primaries, no replicas) for the tests that must
run on a real cluster: Debian's ``redis-server`` in cluster mode, joined by
``redis-cli --cluster create``, on free ports, in a temporary directory, without
persistence. Stopped by the process ids this module started, never by name.

The cluster bus of a node listens on its port + 10000, so both must be free.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODES = 3


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_ports(n: int = NODES) -> list[int]:
    """``n`` ports whose cluster-bus ports (+10000) are free as well."""
    rng = random.Random()
    out: list[int] = []
    while len(out) < n:
        p = rng.randrange(20000, 45000)
        if p not in out and p + 10000 not in out and _free(p) and _free(p + 10000):
            out.append(p)
    return out


def cluster_tools() -> tuple[str, str] | None:
    """(redis-server, redis-cli) if both are installed (Debian's first: ``/usr/bin``)."""
    def find(name: str) -> str | None:
        return f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else shutil.which(name)

    server, cli = find("redis-server"), find("redis-cli")
    return (server, cli) if server and cli else None


@dataclass
class RedisClusterProcess:
    """Three cluster-mode redis-servers joined into one cluster (``start``/``stop``)."""

    workdir: Path
    ports: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        """One node's URL: the client finds the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    @property
    def node_urls(self) -> list[str]:
        return [f"redis://127.0.0.1:{p}/0" for p in self.ports]

    def _cli(self, port: int, *args: str, timeout: float = 30) -> str:
        tools = cluster_tools()
        assert tools is not None
        out = subprocess.run([tools[1], "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True,
                             timeout=timeout)
        return out.stdout + out.stderr

    def start(self, timeout_s: float = 60.0) -> "RedisClusterProcess":
        tools = cluster_tools()
        if tools is None:
            raise RuntimeError("redis-server / redis-cli not installed")
        server, cli = tools
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = cluster_ports()
        try:
            for p in self.ports:
                pidfile = self.workdir / f"redis-{p}.pid"
                subprocess.run(
                    [server, "--port", str(p), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", f"nodes-{p}.conf", "--cluster-node-timeout", "5000",
                     "--save", "", "--appendonly", "no", "--daemonize", "yes", "--dir", str(self.workdir),
                     "--pidfile", str(pidfile), "--logfile", str(self.workdir / f"redis-{p}.log")],
                    check=True, capture_output=True, timeout=30,
                )
                self.pids.append(self._wait_pid(pidfile))
            for p in self.ports:
                self._wait(lambda p=p: "PONG" in self._cli(p, "ping"), timeout_s, f"node {p} answers PING")
            subprocess.run(
                [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports), "--cluster-replicas", "0",
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=60,
            )
            for p in self.ports:
                self._wait(lambda p=p: "cluster_state:ok" in self._cli(p, "cluster", "info"), timeout_s,
                           f"node {p}: cluster_state:ok")
            # every node must know every other (a client may ask any of them for the slots)
            for p in self.ports:
                self._wait(lambda p=p: self._cli(p, "cluster", "nodes").count("master") == NODES, timeout_s,
                           f"node {p} knows {NODES} primaries")
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _wait_pid(pidfile: Path, timeout_s: float = 20.0) -> int:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text().strip():
                return int(pidfile.read_text().strip())
            time.sleep(0.05)
        raise RuntimeError(f"redis-server wrote no pid file {pidfile}")

    @staticmethod
    def _wait(ok: object, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ok():  # type: ignore[operator]
                return
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster: timed out waiting until {what}")

    def dbsize(self) -> dict[int, int]:
        """Keys per node (port -> DBSIZE)."""
        return {p: int(self._cli(p, "dbsize").strip() or 0) for p in self.ports}

    def keys_per_node(self, pattern: str) -> dict[int, int]:
        """Keys matching ``pattern`` per node (port -> count; SCAN of that node only)."""
        out: dict[int, int] = {}
        for p in self.ports:
            listed = self._cli(p, "--scan", "--pattern", pattern, timeout=60)
            out[p] = len([k for k in listed.splitlines() if k.strip()])
        return out

    def stop(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 10
        for pid in self.pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids = []
