"""One delivery over HTTP with retries: the request, the attempts, the outcome.

A retryable answer (see :func:`~stream_app.delivery.retry.classify`) is tried again after the
back-off or the receiver's ``Retry-After``, until the sink's retry budget is spent; any other
answer ends the delivery at once. Errors are described without the URL (a Slack webhook's URL
is its credential): the exception type, the status and the first 200 characters of the
answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

from stream_app.delivery.config import RetryPolicy
from stream_app.delivery.retry import backoff, classify, retry_after
from stream_app.delivery.signing import SIGNATURE_HEADER, sign


@dataclass
class Outgoing:
    """A request to send (signed afresh at each attempt when ``secret`` is set)."""

    method: str
    url: str = field(repr=False)  # a secret for Slack: never in repr or logs
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    secret: bytes | None = field(default=None, repr=False)


@dataclass
class Outcome:
    """How a delivery ended: accepted, or given up (then parked) with the last answer."""

    accepted: bool
    attempts: int
    last_status: int | None
    last_error: str
    first_attempt_at: float | None
    seconds: float


class RateLimiter:
    """At most ``rate_per_s`` starts per second, first come first served (never drops: callers
    wait their turn).

    >>> async def starts():
    ...     r = RateLimiter(20.0)
    ...     t0 = time.monotonic()
    ...     await asyncio.gather(*(r.wait() for _ in range(5)))
    ...     return round(time.monotonic() - t0, 1)
    >>> asyncio.run(starts())
    0.2
    """

    def __init__(self, rate_per_s: float) -> None:
        self.interval = 1.0 / rate_per_s
        self._next = 0.0
        self._lock = asyncio.Lock()  # FIFO: waiters are served in arrival order
        self.waiting = 0

    async def wait(self) -> None:
        self.waiting += 1
        try:
            async with self._lock:
                now = time.monotonic()
                if self._next > now:
                    await asyncio.sleep(self._next - now)
                self._next = max(now, self._next) + self.interval
        finally:
            self.waiting -= 1


Sleep = Callable[[float], Awaitable[None]]


class HttpSender:
    """Sends :class:`Outgoing` requests on one ``aiohttp`` session, with the retry policy."""

    def __init__(self, session: aiohttp.ClientSession, sleep: Sleep = asyncio.sleep) -> None:
        self.session = session
        self.sleep = sleep

    async def attempt(self, req: Outgoing, timeout_s: float) -> tuple[int | None, str, float | None]:
        """One try: (status or None, error text or "", Retry-After seconds or None)."""
        headers = dict(req.headers)
        if req.secret is not None:
            headers[SIGNATURE_HEADER] = sign(req.secret, req.body)
        try:
            async with self.session.request(
                req.method, req.url, data=req.body, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                text = ""
                if resp.status >= 300:
                    text = (await resp.content.read(200)).decode("utf-8", "replace").strip()
                else:
                    await resp.read()
                error = "" if resp.status < 300 else f"HTTP {resp.status}" + (f": {text}" if text else "")
                return resp.status, error, retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            return None, f"timeout after {timeout_s:g}s", None
        except aiohttp.ClientConnectorError as exc:
            return None, f"cannot connect: {type(exc.os_error).__name__} {exc.os_error.strerror or ''}".strip(), None
        except aiohttp.ClientError as exc:
            return None, type(exc).__name__, None

    async def deliver(self, req: Outgoing, timeout_s: float, policy: RetryPolicy,
                      limiter: RateLimiter | None = None,
                      on_retry: Callable[[int | None], None] | None = None) -> Outcome:
        """Try until accepted, a non-retryable answer, ``max_attempts`` or the budget."""
        t0 = time.time()
        status: int | None = None
        error = ""
        attempts = 0
        while True:
            if limiter is not None:
                await limiter.wait()
            attempts += 1
            status, error, after = await self.attempt(req, timeout_s)
            verdict = classify(status)
            if verdict == "ok":
                return Outcome(True, attempts, status, "", t0, time.time() - t0)
            if verdict == "fail":
                return Outcome(False, attempts, status, f"{error} (not retried)", t0, time.time() - t0)
            if attempts >= policy.max_attempts:
                return Outcome(False, attempts, status, f"{error} (after {attempts} attempts)", t0, time.time() - t0)
            wait = after if after is not None else backoff(policy, attempts)
            if time.time() + wait - t0 > policy.budget_s:
                return Outcome(False, attempts, status, f"{error} (retry budget of {policy.budget_s:g}s spent)",
                               t0, time.time() - t0)
            if on_retry is not None:
                on_retry(status)
            await self.sleep(wait)
