"""The worker's in-memory customers against a real Redis: a write then a load gives back the
same state; fencing keeps a worker that lost its partition group from writing; the memory
stays bounded."""

from __future__ import annotations

from typing import Any

import pytest

from stream_app.settings import Settings
from stream_app.state.customer import DAYS, DEDUPE, MAIN, SEEN, TICKETS, CustomerState
from stream_app.state.layout import OWNER
from stream_app.state.owned import FencedError, OwnedStates
from stream_app.state.store import StateStore


def _fill(st: CustomerState, n: int) -> None:
    st.hset(MAIN, "n", str(n))
    st.hset(MAIN, "lts", str(1_700_000_000_000 + n))
    st.hset(DAYS, str(20_000 + n), f"{n},0,{n}")
    st.hset(SEEN, f"u{n:012x}", str(20_000 + n))
    st.hset(TICKETS, f"k{n}", f"o,{n},{n},3")
    st.hset(DEDUPE, f"{20_000 + n}.0", "abcdefgh")


async def test_a_write_then_a_load_gives_back_the_same_state(settings: Settings, redis_client: Any) -> None:
    store = StateStore(redis_client, settings)
    owned = OwnedStates(store, capacity=100)
    await owned.claim([0])
    states = await owned.get({"acme": 0, "beta": 0})
    assert all(not st.main and not st.leftovers for st in states.values())
    for i, st in enumerate(states.values()):
        _fill(st, i + 1)
        st.labels["20001:5"] = "features"
        st.outbox.append("a{}")
    states["acme"].hset(DAYS, "19000", "1")
    states["acme"].hdel(DAYS, "19000")  # set and deleted in one drain: never written
    assert await owned.write(states.values(), [], newest_ms=5) == set()
    assert not any(st.pending_write for st in states.values())
    assert await store.watermark() == 5

    again = await OwnedStates(store, capacity=100).get({"acme": 0, "beta": 0})
    for cid, st in states.items():
        loaded = again[cid]
        assert (loaded.main, loaded.days, loaded.seen, loaded.tickets, loaded.dedupe) == \
            (st.main, st.days, st.seen, st.tickets, st.dedupe)
        assert loaded.leftovers == [b"a{}"]  # the outbox: published, then cleared, by the commit
        assert await redis_client.hgetall(store.keys(cid).snapshots) == {b"20001:5": b"features"}
        assert OWNER not in loaded.main


async def test_only_changes_are_written_and_a_reset_replaces_everything(settings: Settings, redis_client: Any) -> None:
    store = StateStore(redis_client, settings)
    owned = OwnedStates(store, capacity=100)
    st = (await owned.get({"acme": 0}))["acme"]
    _fill(st, 1)
    await owned.write([st], [], -1)
    await redis_client.hset(store.keys("acme").days, "untouched", "9")  # not in memory: a write keeps it
    st.hset(MAIN, "n", "2")
    st.hdel(DAYS, "20001")
    await owned.write([st], [], -1)
    assert await redis_client.hgetall(store.keys("acme").days) == {b"untouched": b"9"}
    assert await redis_client.hget(store.keys("acme").main, "n") == b"2"
    st.reset = True  # back after the retention period: the memory is the whole truth
    await owned.write([st], [], -1)
    assert await redis_client.hgetall(store.keys("acme").days) == {}
    assert await redis_client.hget(store.keys("acme").main, "n") == b"2"


async def test_a_worker_that_lost_its_group_can_neither_write_nor_load(settings: Settings, redis_client: Any) -> None:
    store = StateStore(redis_client, settings)
    zombie, owner = OwnedStates(store, capacity=100), OwnedStates(store, capacity=100)
    await zombie.claim([3])
    old = (await zombie.get({"acme": 3}))["acme"]
    _fill(old, 1)
    await zombie.write([old], [], -1)
    await owner.claim([3])  # a rebalance gave group 3 to another worker
    assert owner.generation(3) > zombie.generation(3)
    mine = (await owner.get({"acme": 3}))["acme"]  # loading claims the customer
    assert mine.main["n"] == "1"
    old.hset(MAIN, "n", "99")
    assert await zombie.write([old], [], -1) == {"acme"}  # refused: nothing written
    assert await redis_client.hget(store.keys("acme").main, "n") == b"1"
    assert len(zombie) == 0  # and forgotten
    with pytest.raises(FencedError) as info:
        await zombie.get({"acme": 3})
    assert info.value.groups == {3}
    mine.hset(MAIN, "n", "2")
    assert await owner.write([mine], [], -1) == set()
    assert await redis_client.hget(store.keys("acme").main, "n") == b"2"


async def test_memory_is_bounded_and_revocation_forgets(settings: Settings, redis_client: Any) -> None:
    store = StateStore(redis_client, settings)
    owned = OwnedStates(store, capacity=2)
    await owned.claim([0, 1])
    states = await owned.get({"a": 0, "b": 0, "c": 1})
    for i, st in enumerate(states.values()):
        _fill(st, i)
    await owned.write(states.values(), [], -1)
    owned.trim()
    assert len(owned) == 2 and owned.group_of("a") is None  # the least recently used went
    await owned.get({"a": 0})
    assert owned.loads == 4 and (await owned.get({"a": 0}))["a"].main["n"] == "0"
    owned.release([1])
    assert owned.group_of("c") is None and owned.group_of("a") == 0
