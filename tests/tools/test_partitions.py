"""The partition migration's safety check against Redis progress (``tools/partitions.assess``),
with the log's tail and the consumer group given (no broker); the Redis side of the migration."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from stream_app.settings import Settings
from stream_app.state import layout
from stream_app.state.partitions import Partitioning, forget_source_offsets, prepare_progress, read_partitioning
from stream_app.state.store import StateStore
from stream_app.tools.partitions import assess

pytestmark = pytest.mark.asyncio


def tails_of(log_ends: dict[tuple[str, int], int]):  # type: ignore[no-untyped-def]
    """A log whose partition tp holds offsets 0 .. log_ends[tp] - 1: what a fetch from ``next`` finds."""
    async def tails(settings: Settings, nexts: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        out = {}
        for tp, nxt in nexts.items():
            end = log_ends.get(tp, 0)
            if nxt < end:
                out[tp] = nxt
            elif nxt > end and end > 0:
                out[tp] = 0  # out of range: the consumer resets to the log start
        return out
    return tails


def members(n: int | None):  # type: ignore[no-untyped-def]
    async def count(settings: Settings) -> int | None:
        return n
    return count


async def test_safe_only_when_every_record_is_handled_and_no_worker_runs(
        settings: Settings, redis_client: aioredis.Redis) -> None:
    store = StateStore(redis_client, settings)
    topics = [settings.topic(t) for t in ("activity", "tickets", "surveys", "subscriptions")]
    counts: dict[str, int | None] = {t: 2 for t in topics}
    ends = {(topics[0], 0): 10, (topics[0], 1): 5, (topics[3], 1): 3}
    await store.set_progress(topics[0], 0, 9, 1000)
    await store.set_progress(topics[0], 1, 3, 1000)  # offset 4 not handled yet
    await store.ensure_progress(topics[1], 0, True)  # an empty partition's placeholder
    # topics[3][1] holds 3 records and has no progress at all: none handled

    safety = await assess(settings, store, counts, tails_of(ends), members(0))
    assert not safety.drained and safety.workers_stopped
    assert safety.pending == {(topics[0], 1): 4, (topics[3], 1): 0}
    text = "\n".join(safety.lines())
    assert f"{topics[0]}[1]: handled through offset 3, but offset 4 is not handled yet" in text

    await store.set_progress(topics[0], 1, 4, 1000)
    await store.set_progress(topics[3], 1, 2, 1000)
    safety = await assess(settings, store, counts, tails_of(ends), members(1))
    assert safety.drained and not safety.workers_stopped
    assert "1 member(s)" in "\n".join(safety.lines())

    safety = await assess(settings, store, counts, tails_of(ends), members(0))
    assert safety.drained and safety.workers_stopped and safety.lines() == []
    # a record produced after the check (a producer still running) makes it unsafe again
    ends[(topics[2], 1)] = 1
    assert (await assess(settings, store, counts, tails_of(ends), members(0))).pending == {(topics[2], 1): 0}


async def test_progress_past_the_log_end_is_not_safe(settings: Settings, redis_client: aioredis.Redis) -> None:
    store = StateStore(redis_client, settings)
    topic = settings.topic("activity")
    await store.set_progress(topic, 0, 99, 1000)  # the topic was recreated: the log holds 5 records
    safety = await assess(settings, store, {topic: 1}, tails_of({(topic, 0): 5}), members(0))
    assert safety.past_end == {(topic, 0): 0} and not safety.drained
    assert "recreated or truncated" in safety.lines()[0]


async def test_new_partitions_get_placeholders_and_old_progress_is_kept(
        settings: Settings, redis_client: aioredis.Redis) -> None:
    store = StateStore(redis_client, settings)
    topic = settings.topic("activity")
    await store.set_progress(topic, 1, 41, 5000)
    await prepare_progress(store, [topic], 6)
    await prepare_progress(store, [topic], 6)  # idempotent
    assert await store.get_progress(topic, 1) == (41, 5000)
    assert [await store.get_progress(topic, p) for p in (0, 2, 5)] == [(-1, -1)] * 3
    assert await store.get_progress(topic, 6) is None
    # an empty new partition does not hold the event-time watermark back
    assert await store.progress_watermark([(topic, p) for p in range(6)]) == 5000


async def test_forgetting_source_offsets_touches_only_them(settings: Settings, redis_client: aioredis.Redis) -> None:
    keys = [StateStore(redis_client, settings).keys(c) for c in ("acme", "globex")]
    for k in keys:
        await redis_client.hset(k.main, mapping={"o:a": "1:57", "o:b": "0:3", layout.EVENTS: 9})
        await redis_client.hset(k.days, mapping={"o:a": "kept"})  # not a main hash
    assert await forget_source_offsets(redis_client, settings.key_prefix) == 2
    for k in keys:
        assert await redis_client.hgetall(k.main) == {layout.EVENTS.encode(): b"9"}
        assert await redis_client.hget(k.days, "o:a") == b"kept"
    assert await read_partitioning(redis_client, settings.key_prefix) is None
    assert Partitioning.parse(Partitioning("a|b.", 3).encode()) == Partitioning("a|b.", 3)
