"""Security: Redis password / ACL user / TLS, secrets kept out of logs and errors, survey
comments never stored, and customer ids of any content safe (and cluster-safe) as keys.

The Redis tests start their own redis-server on a free port (``tests/own_services.py``);
the shared server on 6379 is only used, under this test's key prefix, where no
authentication is involved.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from support.harness import DAY, T0, Harness, ev
from support.own_services import Certs, OwnRedis, make_certs, redis_binary
from stream_app.pipeline.clients import redis_client
from stream_app.settings import Settings
from stream_app.state.layout import CustomerKeys, hash_tag
from stream_app.state.store import StateStore

ADMIN_PW = "adm-" + uuid.uuid4().hex  # the default user's password (requirepass)
APP_PW = "app-" + uuid.uuid4().hex  # the ACL user the app runs as
APP_USER = "churnapp"
PREFIX = "cs:sec:"  # the ACL user may only touch keys under this prefix


def app_rule() -> str:
    # least privilege: only the app's keys, no admin/dangerous commands
    return f"{APP_USER} on >{APP_PW} ~{PREFIX}* +@all -@dangerous"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path_factory.mktemp("redis-acl"), ADMIN_PW, [app_rule()])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def own_tls_redis(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[OwnRedis]:
    if redis_binary(tls=True) is None:
        pytest.skip("no redis-server built with TLS on this machine (Debian's redis-server has it)")
    server = OwnRedis(tmp_path_factory.mktemp("redis-tls"), ADMIN_PW, [app_rule()], certs)
    yield server
    server.stop()


def app_settings(url: str, **kw: Any) -> Settings:
    return Settings(_env_file=None, redis_url=url, key_prefix=f"{PREFIX}{uuid.uuid4().hex[:6]}:", **kw)


async def ingest_and_read(settings: Settings) -> int:
    """Ingest a few events through the real ingestor and read them back; returns events applied."""
    client = redis_client(settings)
    try:
        h = Harness(settings, client)
        await h.feed([ev("activity", f"a{i}", T0, action="login") for i in range(3)])
        await h.feed([ev("surveys", "s1", T0, survey="nps", score=9)])
        return (await h.agg()).events_applied
    finally:
        await client.aclose()


# --- Redis password, ACL user, TLS ---------------------------------------------------------
async def test_redis_acl_user_works_and_missing_or_wrong_credentials_fail_clearly(own_redis: OwnRedis) -> None:
    url = f"redis://127.0.0.1:{own_redis.port}/0"
    # the ACL user, from settings (REDIS_USERNAME / REDIS_PASSWORD) ...
    assert await ingest_and_read(app_settings(url, redis_username=APP_USER, redis_password=APP_PW)) == 4
    # ... or in the URL
    assert await ingest_and_read(app_settings(f"redis://{APP_USER}:{APP_PW}@127.0.0.1:{own_redis.port}/0")) == 4
    # requirepass: the default user with the password
    assert await ingest_and_read(app_settings(url, redis_password=ADMIN_PW)) == 4

    for kw, expect in [({}, "authenticat"), ({"redis_username": APP_USER, "redis_password": "wrong-" + APP_PW}, "invalid username-password")]:
        client = redis_client(app_settings(url, **kw))
        with pytest.raises(AuthenticationError) as exc:
            await client.ping()
        await client.aclose()
        assert expect in str(exc.value).lower()
        assert APP_PW not in str(exc.value) and ADMIN_PW not in str(exc.value)


async def test_redis_acl_user_is_confined_to_its_key_prefix(own_redis: OwnRedis) -> None:
    """Least privilege: the app's ACL user cannot touch keys outside its prefix, nor run
    dangerous commands; a misconfigured key prefix fails loudly instead of writing elsewhere."""
    s = Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{own_redis.port}/0", redis_username=APP_USER,
                 redis_password=APP_PW, key_prefix="other:")
    client = redis_client(s)
    try:
        with pytest.raises(NoPermissionError):
            await StateStore(client, s).get_progress("cs.activity", 0)
        with pytest.raises(NoPermissionError):
            await client.flushall()
    finally:
        await client.aclose()


async def test_rediss_tls_with_ca(own_tls_redis: OwnRedis, certs: Certs) -> None:
    tls_url = f"rediss://127.0.0.1:{own_tls_redis.port}/0"
    ok = app_settings(tls_url, redis_username=APP_USER, redis_password=APP_PW, redis_ssl_ca_certs=str(certs.ca))
    assert await ingest_and_read(ok) == 4
    # without our CA the server's certificate is not trusted: a clear TLS error
    client = redis_client(app_settings(tls_url, redis_username=APP_USER, redis_password=APP_PW))
    with pytest.raises(RedisConnectionError) as exc:
        await client.ping()
    await client.aclose()
    assert "CERTIFICATE_VERIFY_FAILED" in str(exc.value)
    # plain TCP to the TLS port gets nowhere either
    plain = redis_client(app_settings(f"redis://127.0.0.1:{own_tls_redis.port}/0", redis_username=APP_USER,
                                      redis_password=APP_PW))
    with pytest.raises((RedisConnectionError, asyncio.TimeoutError, OSError)):
        await plain.ping()
    await plain.aclose()


# --- secrets never in logs or error messages ------------------------------------------------
SECRETS = {
    "kafka": "kafka-" + uuid.uuid4().hex,
    "redis": "redis-" + uuid.uuid4().hex,
    "url": "url-" + uuid.uuid4().hex,
}


def assert_no_secret(text: str) -> None:
    # also with line breaks removed: a terminal-width wrap must not hide a leak from the grep
    for variant in (text, text.replace("\n", ""), "".join(text.split())):
        for name, secret in [*SECRETS.items(), ("admin", ADMIN_PW), ("app", APP_PW)]:
            assert secret not in variant, f"the {name} secret leaked: ...{variant[max(0, variant.find(secret) - 200):][:400]}"


def test_settings_dumps_and_validation_errors_hide_secrets() -> None:
    s = Settings(
        _env_file=None,
        broker_url=f"kafka://svc:{SECRETS['url']}@k1:9093,kafka://svc:{SECRETS['url']}@k2:9093",
        broker_security_protocol="SASL_SSL",
        broker_sasl_username="svc",
        broker_sasl_password=SECRETS["kafka"],
        redis_url=f"rediss://app:{SECRETS['url']}@r:6380/0",
        redis_password=SECRETS["redis"],
    )
    assert_no_secret(repr(s) + str(s) + str(s.redacted()) + f"{s!r} {s}")
    assert "svc" in repr(s) and "k2:9093" in str(s.redacted())
    # a configuration error echoes the input: secrets must not be part of it
    with pytest.raises(Exception) as exc:
        Settings(_env_file=None, broker_security_protocol="SASL_SSL", broker_sasl_password=SECRETS["kafka"],
                 redis_password=SECRETS["redis"], redis_url=f"redis://a:{SECRETS['url']}@r/0")
    from stream_app.settings import describe_settings_error

    text = describe_settings_error(exc.value)
    assert "broker_sasl_username" in text
    assert_no_secret(text)


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stream_app.tools.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_cli_errors_name_the_problem_not_the_secret(own_redis: OwnRedis) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "REDIS_"))}
    # a configuration error: SASL without a username
    out = cli({**base, "BROKER_SECURITY_PROTOCOL": "SASL_SSL", "BROKER_SASL_PASSWORD": SECRETS["kafka"],
               "REDIS_PASSWORD": SECRETS["redis"], "REDIS_URL": f"redis://a:{SECRETS['url']}@127.0.0.1:1/0"},
              "customer", "acme")
    assert out.returncode == 2 and "broker_sasl_username" in out.stderr
    assert_no_secret(out.stdout + out.stderr)
    # wrong Redis password (in the variable and in the URL)
    for env in ({"REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0", "REDIS_USERNAME": APP_USER,
                 "REDIS_PASSWORD": SECRETS["redis"]},
                {"REDIS_URL": f"redis://{APP_USER}:{SECRETS['url']}@127.0.0.1:{own_redis.port}/0"}):
        out = cli({**base, "KEY_PREFIX": PREFIX, **env}, "customer", "acme")
        assert out.returncode == 1, out.stderr
        assert "Redis" in out.stderr and "invalid username-password" in out.stderr, out.stderr
        assert_no_secret(out.stdout + out.stderr)


async def test_ingestor_logs_while_redis_rejects_credentials_hold_no_secret(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose Redis credentials are wrong keeps retrying (nothing is acknowledged)
    and says why in its log, without the password."""
    s = app_settings(f"redis://{APP_USER}:{SECRETS['url']}@127.0.0.1:{own_redis.port}/0",
                     redis_password=SECRETS["redis"])
    client = redis_client(s)
    h = Harness(s, client)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(h.feed([ev("activity", "a", T0, action="login")]), timeout=2.0)
    await client.aclose()
    assert h.ingestor.stats.redis_retries >= 1
    assert "AuthenticationError" in caplog.text and "acknowledged" in caplog.text
    assert_no_secret(caplog.text)


# --- survey comments are not stored ----------------------------------------------------------
async def dump_prefix(client: aioredis.Redis, prefix: str) -> bytes:
    """Every key under ``prefix`` with its whole value, as one blob to search."""
    out = []
    async for key in client.scan_iter(match=f"{prefix}*", count=1000):
        out.append(key)
        kind = (await client.type(key)).decode()
        if kind == "string":
            out.append(await client.get(key) or b"")
        elif kind == "hash":
            for f, v in (await client.hgetall(key)).items():
                out += [f, v]
        elif kind == "zset":
            out += [m for m, _ in await client.zrange(key, 0, -1, withscores=True)]
        elif kind == "set":
            out += list(await client.smembers(key))
        elif kind == "list":
            out += await client.lrange(key, 0, -1)
        out.append(await client.dump(key) or b"")
    return b"\n".join(out)


async def test_survey_comments_are_not_stored_anywhere(h: Harness, redis_client: aioredis.Redis) -> None:
    marker = "COMMENT-" + uuid.uuid4().hex
    items = [
        ev("surveys", f"s{i}", T0 + i * DAY / 24, cid=cid, survey=kind, score=score, comment=f"{marker} {i} ünï")
        for i, (cid, kind, score) in enumerate(
            [("acme", "nps", 2), ("acme", "csat", 5), ("globex", "ces", 6), ("globex", "nps", 10), ("{x}", "nps", 0)]
        )
    ]
    items.append(ev("activity", "a1", T0, action="login"))
    await h.feed(items)
    a = await h.agg("acme")
    assert a.windows["7d"].nps_responses == 1 and a.windows["7d"].csat_responses == 1  # the signal is kept
    blob = await dump_prefix(redis_client, h.settings.key_prefix)
    assert b"nps" in blob or b"s" in blob  # something was stored
    assert marker.encode() not in blob
    # nor is it published with scores, alerts or training examples
    published = repr(h.out.score_list) + repr(h.out.alert_list) + repr(h.out.example_list)
    assert h.out.score_list and marker not in published


# --- customer ids of any content -------------------------------------------------------------
def crc16_xmodem(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum of the Redis Cluster key-slot spec."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def key_slot(key: bytes) -> int:
    """HASH_SLOT of a key per the Redis Cluster spec: only the part inside the first
    ``{...}`` is hashed, if that part is not empty."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end != -1 and end != start + 1:
            key = key[start + 1 : end]
    return crc16_xmodem(key) % 16384


def test_crc16_matches_the_spec_examples() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3  # the spec's test vector
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"foo{}{bar}") == crc16_xmodem(b"foo{}{bar}") % 16384
    assert key_slot(b"foo{{bar}}zap") == crc16_xmodem(b"{bar") % 16384


ODD_IDS = [
    "acme", "a}b{c", "{x}", "}{", "{", "}", "%7D", "%", "%%7B", "a:b:c", "c:{acme}:d", "line\nbreak", "nul\x00byte",
    "emoji 😀🔥", "ünï côdé", "\t", "x" * 128, "".join(chr(0x21 + (i * 13) % 0x5E) for i in range(128)),
]


async def test_odd_customer_ids_round_trip_through_ingestion(h: Harness, redis_client: aioredis.Redis) -> None:
    await h.feed([ev("activity", f"e{i}", T0, cid=c, action="login", count=i + 1) for i, c in enumerate(ODD_IDS)])
    await h.feed([ev("tickets", f"t{i}", T0, cid=c, ticket_id="T", status="opened") for i, c in enumerate(ODD_IDS)])
    for i, c in enumerate(ODD_IDS):
        a = await h.agg(c)
        assert a.customer_id == c and a.windows["7d"].activity_events == i + 1 and a.events_applied == 2, repr(c)
    assert set(await h.store.customer_ids()) >= set(ODD_IDS)
    # every customer key sits under its own hash tag: the tag is the escaped id, exactly
    by_tag: dict[bytes, set[bytes]] = {}
    async for key in redis_client.scan_iter(match=f"{h.settings.key_prefix}c:*", count=1000):
        start, end = key.index(b"{"), key.index(b"}")
        by_tag.setdefault(key[start + 1 : end], set()).add(key)
    assert set(by_tag) == {hash_tag(c).encode() for c in ODD_IDS}
    for c in ODD_IDS:
        assert by_tag[hash_tag(c).encode()] <= {k.encode() for k in h.store.keys(c).all()}


def customer_keys(cid: str, prefix: str = "cs:") -> list[bytes]:
    return [k.encode("utf-8") for k in CustomerKeys.for_customer(prefix, cid).all()]


def test_cluster_slots_one_per_customer_and_no_collisions() -> None:
    keys_seen: dict[bytes, str] = {}
    for cid in ODD_IDS:
        keys = customer_keys(cid)
        slots = {key_slot(k) for k in keys}
        assert len(slots) == 1, (cid, slots)  # one customer = one slot: its Lua update is legal on a cluster
        assert slots == {crc16_xmodem(hash_tag(cid).encode()) % 16384}
        for k in keys:
            assert keys_seen.setdefault(k, cid) == cid, f"{cid!r} and {keys_seen[k]!r} share {k!r}"


customer_ids = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # JSON cannot carry lone surrogates
    min_size=1,
    max_size=128,
)


@hsettings(max_examples=500, derandomize=True, deadline=None, database=None,
           suppress_health_check=[HealthCheck.too_slow])
@given(a=customer_ids, b=customer_ids)
def test_any_customer_ids_single_slot_and_distinct_keys(a: str, b: str) -> None:
    ka, kb = customer_keys(a), customer_keys(b)
    assert len({key_slot(k) for k in ka}) == 1
    tag = hash_tag(a)
    assert "{" not in tag and "}" not in tag  # nothing can end the tag early or start another
    if a != b:
        assert not set(ka) & set(kb)  # the escaping is injective
    else:
        assert ka == kb
