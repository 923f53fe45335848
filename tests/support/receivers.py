"""Real local HTTP receivers (aiohttp servers) for the delivery tests and bench: they answer as
told (fail the first N calls, always 500, 429 with Retry-After), verify the signature, and
record what reached them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from stream_app.delivery.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


@dataclass
class Call:
    at: float
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Receiver:
    """``answer(n, call)`` -> (status, headers) for the n-th call (from 1); default 200."""

    answer: Callable[[int, Call], tuple[int, dict[str, str]]] = lambda n, call: (200, {})
    secret: bytes | None = None
    calls: list[Call] = field(default_factory=list)
    accepted: list[Call] = field(default_factory=list)
    runner: web.AppRunner | None = None
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        ok = None if self.secret is None else verify(self.secret, request.headers.get(SIGNATURE_HEADER), body)
        call = Call(time.time(), request.method, request.path, dict(request.headers), body, ok)
        self.calls.append(call)
        if ok is False:
            return web.Response(status=401, text="bad signature")
        status, headers = self.answer(len(self.calls), call)
        if 200 <= status < 300:
            self.accepted.append(call)
        return web.Response(status=status, headers=headers, text="ok" if status < 300 else f"nope {status}")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def unique_keys(self) -> list[str]:
        """Idempotency keys of accepted calls, de-duplicated (first seen order)."""
        return list(dict.fromkeys(c.headers[IDEMPOTENCY_HEADER] for c in self.accepted))


def fail_first(n: int, status: int = 503) -> Callable[[int, Call], tuple[int, dict[str, str]]]:
    return lambda i, call: (status, {}) if i <= n else (200, {})


def always(status: int) -> Callable[[int, Call], tuple[int, dict[str, str]]]:
    return lambda i, call: (status, {})
