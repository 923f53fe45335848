"""One delivery with retries, against real local HTTP receivers (aiohttp servers, no mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import pytest_asyncio
from support.receivers import Receiver, always, fail_first

from stream_app.delivery.config import RetryPolicy
from stream_app.delivery.signing import IDEMPOTENCY_HEADER
from stream_app.delivery.transport import HttpSender, Outgoing, RateLimiter

FAST = RetryPolicy(max_attempts=5, base_delay_s=0.01, max_delay_s=0.05, budget_s=30)
BODY = orjson.dumps({"alert_id": "a1", "customer_id": "acme"})


@pytest_asyncio.fixture
async def sender() -> AsyncIterator[HttpSender]:
    async with aiohttp.ClientSession() as session:
        yield HttpSender(session)


async def started(r: Receiver) -> Receiver:
    return await r.start()


def req(r: Receiver, secret: bytes | None = None) -> Outgoing:
    return Outgoing("POST", r.url, BODY, {"Content-Type": "application/json", IDEMPOTENCY_HEADER: "a1"}, secret)


async def test_a_receiver_failing_the_first_calls_gets_the_alert_after_retries(sender: HttpSender) -> None:
    r = await started(Receiver(fail_first(3)))
    try:
        out = await sender.deliver(req(r), 2.0, FAST)
    finally:
        await r.stop()
    assert out.accepted and out.attempts == 4 and out.last_status == 200
    assert len(r.calls) == 4 and r.unique_keys() == ["a1"]  # the same key each time
    assert {c.headers[IDEMPOTENCY_HEADER] for c in r.calls} == {"a1"}


async def test_always_500_gives_up_after_the_budget_with_the_reason(sender: HttpSender) -> None:
    r = await started(Receiver(always(500)))
    try:
        out = await sender.deliver(req(r), 2.0, FAST)
    finally:
        await r.stop()
    assert not out.accepted and out.attempts == 5 and out.last_status == 500
    assert "HTTP 500" in out.last_error and "after 5 attempts" in out.last_error


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_other_4xx_are_not_retried(sender: HttpSender, status: int) -> None:
    r = await started(Receiver(always(status)))
    try:
        out = await sender.deliver(req(r), 2.0, FAST)
    finally:
        await r.stop()
    assert not out.accepted and out.attempts == 1 and out.last_status == status and "not retried" in out.last_error


async def test_429_retry_after_is_honoured(sender: HttpSender) -> None:
    r = await started(Receiver(lambda n, call: (429, {"Retry-After": "1"}) if n == 1 else (200, {})))
    try:
        out = await sender.deliver(req(r), 2.0, FAST)  # the back-off alone would wait <= 0.05 s
    finally:
        await r.stop()
    assert out.accepted and out.attempts == 2
    assert r.calls[1].at - r.calls[0].at >= 0.95


async def test_retry_after_beyond_the_budget_parks_at_once(sender: HttpSender) -> None:
    r = await started(Receiver(lambda n, call: (503, {"Retry-After": "3600"})))
    try:
        out = await sender.deliver(req(r), 2.0, FAST)
    finally:
        await r.stop()
    assert not out.accepted and out.attempts == 1 and "budget" in out.last_error


async def test_network_errors_are_retried_and_described_without_the_url(sender: HttpSender) -> None:
    r = await started(Receiver())
    url = r.url
    await r.stop()  # nothing listens there any more
    out = await sender.deliver(Outgoing("POST", url + "/T0SECRET/B0SECRET", BODY), 1.0, FAST)
    assert not out.accepted and out.attempts == 5 and out.last_status is None
    assert "cannot connect" in out.last_error and "SECRET" not in out.last_error


async def test_a_bad_signature_is_detected_by_the_receiver(sender: HttpSender) -> None:
    r = await started(Receiver(secret=b"shared-secret"))
    try:
        good = await sender.deliver(req(r, b"shared-secret"), 2.0, FAST)
        bad = await sender.deliver(req(r, b"wrong-secret"), 2.0, FAST)
        unsigned = await sender.deliver(req(r), 2.0, FAST)
    finally:
        await r.stop()
    assert [c.signature_ok for c in r.calls] == [True, False, False]
    assert good.accepted and not bad.accepted and bad.last_status == 401 and not unsigned.accepted


async def test_the_slack_rate_limit_queues_and_never_drops(sender: HttpSender) -> None:
    r = await started(Receiver())
    limiter = RateLimiter(4.0)
    try:
        outs = await asyncio.gather(*(sender.deliver(req(r), 2.0, FAST, limiter) for _ in range(5)))
    finally:
        await r.stop()
    assert all(o.accepted for o in outs) and len(r.accepted) == 5
    gaps = [b.at - a.at for a, b in zip(r.calls, r.calls[1:])]
    assert min(gaps) >= 0.2  # 4/s: 0.25 s apart (some slack for the clock)
