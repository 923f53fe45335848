"""Faust consumer tuning: the fetch settings reach aiokafka's fetcher, the eager hand-over
behaves like awaiting the callback, and the copied Faust method still matches upstream."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from typing import Any

import faust
import pytest
from faust.transport import consumer as faust_consumer

from stream_app.pipeline.app import create_app
from stream_app.pipeline.faust_tuning import FastDrainConsumer, FaustTuning, install, run_eagerly
from stream_app.settings import Settings

#: sha256 of faust-streaming 0.15.3's ``Consumer._drain_messages`` source, which
#: ``FastDrainConsumer._drain_messages`` copies with one change.
UPSTREAM_DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"


def test_app_kwargs_map_to_faust_settings() -> None:
    assert FaustTuning().app_kwargs() == {}
    kw = FaustTuning(max_partition_fetch_bytes=4096, max_poll_records=500, stream_buffer_maxsize=8192).app_kwargs()
    assert kw == {"consumer_max_fetch_size": 4096, "broker_max_poll_records": 500, "stream_buffer_maxsize": 8192}
    app = faust.App("tuning-kwargs", broker="kafka://127.0.0.1:1", **kw)
    assert (app.conf.consumer_max_fetch_size, app.conf.broker_max_poll_records, app.conf.stream_buffer_maxsize) == (
        4096, 500, 8192)


async def test_fetch_settings_reach_the_aiokafka_fetcher(broker_url: str) -> None:
    app = faust.App("tuning-fetch", broker=broker_url, store="memory://", web_enabled=False)
    app.topic("tuning-fetch-topic")
    install(app, FaustTuning(fetch_max_wait_ms=7, fetch_min_bytes=3, fast_drain=True))
    consumer = app.consumer
    assert isinstance(consumer, FastDrainConsumer)
    kafka_consumer = consumer._thread._create_worker_consumer(app.transport)
    await kafka_consumer.start()
    try:
        assert kafka_consumer._fetcher._fetch_max_wait_ms == 7
        assert kafka_consumer._fetcher._fetch_min_bytes == 3
    finally:
        await kafka_consumer.stop()


async def test_faust_defaults_without_tuning(broker_url: str) -> None:
    app = faust.App("tuning-none", broker=broker_url, store="memory://", web_enabled=False)
    consumer = app.consumer
    assert not isinstance(consumer, FastDrainConsumer)
    kafka_consumer = consumer._thread._create_worker_consumer(app.transport)
    assert kafka_consumer._fetch_max_wait_ms == 1500  # what the tuning exists for


async def test_the_product_app_installs_its_settings() -> None:
    app = create_app(Settings(_env_file=None, broker_url="kafka://127.0.0.1:1", consumer_fetch_max_wait_ms=25))
    consumer = app.consumer
    assert isinstance(consumer, FastDrainConsumer)
    assert consumer._thread._create_worker_consumer(app.transport)._fetch_max_wait_ms == 25
    off = create_app(Settings(_env_file=None, broker_url="kafka://127.0.0.1:1", faust_fast_drain=False))
    assert not isinstance(off.consumer, FastDrainConsumer)


def test_install_refuses_an_app_whose_consumer_exists() -> None:
    app = faust.App("tuning-late", broker="kafka://127.0.0.1:1")
    app.consumer  # noqa: B018 - creates it
    with pytest.raises(RuntimeError, match="already exists"):
        install(app, FaustTuning(fetch_max_wait_ms=10))


def test_copied_drain_loop_matches_upstream() -> None:
    source = inspect.getsource(faust_consumer.Consumer._drain_messages)
    assert hashlib.sha256(source.encode()).hexdigest() == UPSTREAM_DRAIN_SHA256, (
        "Faust's Consumer._drain_messages changed: re-copy it into FastDrainConsumer and update the hash"
    )
    ours = inspect.getsource(FastDrainConsumer._drain_messages)
    assert "run_eagerly(callback(message))" in ours and "self.wait_first(rest, self.suspend_flow.wait())" in ours


# --- run_eagerly: same results, exceptions and cancellation as awaiting the coroutine ------------

async def test_eager_finishes_synchronously_when_nothing_waits() -> None:
    steps: list[str] = []

    async def quick() -> int:
        steps.append("ran")
        return 42

    finished, result = run_eagerly(quick())
    assert (finished, result, steps) == (True, 42, ["ran"])


async def test_eager_hands_over_a_coroutine_that_waits() -> None:
    fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def slow() -> int:
        steps.append("before")
        v = await fut
        await asyncio.sleep(0)
        steps.append("after")
        return v * 2

    finished, rest = run_eagerly(slow())
    assert not finished and steps == ["before"]
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    assert not task.done()
    fut.set_result(21)
    assert await task == 42
    assert steps == ["before", "after"]


async def test_eager_propagates_errors_from_either_step() -> None:
    async def fails_now() -> None:
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        run_eagerly(fails_now())

    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await fut
        raise KeyError("later")

    _, rest = run_eagerly(fails_later())
    task = asyncio.ensure_future(rest)
    fut.set_result(None)
    with pytest.raises(KeyError):
        await task


async def test_eager_cancellation_reaches_the_coroutine() -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    seen: list[Any] = []

    async def waits() -> None:
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            seen.append("cleanup")

    _, rest = run_eagerly(waits())
    task = asyncio.ensure_future(rest)
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled", "cleanup"]
    assert fut.cancelled()  # the awaited future was cancelled, as with a plain await
