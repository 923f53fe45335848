"""Crash and redelivery, in process (fast): an ingestor dies at random points (including in the
middle of publishing a drain's outputs), a new one takes over and Kafka's redelivery is
emulated from the contiguous prefix of acknowledged offsets. Everything must equal a clean run."""

from __future__ import annotations

import random
from typing import Any

import pytest

from harness import Harness, ListOutputs
from stream_app.ingest import Ingestor
from stream_app.settings import Settings
from test_ordering import sim_records


class Crash(Exception):
    """Not a transient error: the ingestor gives up, like a killed process."""


class CrashingOutputs(ListOutputs):
    def __init__(self, rng: random.Random, rate: float) -> None:
        super().__init__()
        self.rng, self.rate = rng, rate

    def _maybe(self) -> None:
        if self.rng.random() < self.rate:
            raise Crash

    async def alerts(self, alerts: list[Any]) -> None:
        self._maybe()
        await super().alerts(alerts)

    async def scores(self, scores: list[Any]) -> None:
        self._maybe()
        await super().scores(scores)


async def run_with_crashes(settings: Settings, redis_client: Any, logs: dict[tuple[str, int], list[bytes]],
                           seed: int | None) -> tuple[Harness, int]:
    rng = random.Random(seed)
    h = Harness(settings, redis_client)
    out = CrashingOutputs(rng, 0.08 if seed is not None else 0.0)
    ends = {(settings.topic(t), p): len(log) for (t, p), log in logs.items()}

    rate = 0.03 if seed is not None else 0.0

    def crash_after(fn: Any) -> Any:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = await fn(*args, **kwargs)
            if rng.random() < rate:  # killed right after Redis applied it, before anything else
                raise Crash
            return result
        return wrapped

    h.store.apply_and_read = crash_after(h.store.apply_and_read)  # type: ignore[method-assign]

    def fresh() -> Ingestor:
        ing = Ingestor(h.store, settings, out, clock=lambda: h.clock_s)
        ing.scorer.portfolio.update = crash_after(ing.scorer.portfolio.update)  # type: ignore[method-assign]
        return ing

    h.ingestor = fresh()
    h.out = out
    await h.ingestor.assign(ends)
    committed = {tp: 0 for tp in ends}
    done: dict[tuple[str, int], set[int]] = {tp: set() for tp in ends}
    cursor = dict(committed)
    crashes = 0
    while any(committed[tp] < ends[tp] for tp in ends):
        live = [tp for tp in sorted(ends) if cursor[tp] < ends[tp]]
        if not live:  # everything delivered; what is held waits for the pump
            keys = await h.ingestor.pump()
        else:
            tp = rng.choice(live) if seed is not None else live[0]
            size = rng.randint(1, 300)
            logical = tp[0][len(settings.topic_prefix):]
            values = logs[(logical, tp[1])][cursor[tp]: cursor[tp] + size]
            from stream_app.ingest import Record

            recs = [Record(tp[0], tp[1], cursor[tp] + i, v, ends[tp]) for i, v in enumerate(values)]
            cursor[tp] += len(values)
            try:
                keys = await h.ingestor.handle(recs)
            except Crash:
                crashes += 1
                h.ingestor = fresh()  # a new process: redelivery from the committed offsets
                await h.ingestor.assign(ends)
                cursor = dict(committed)
                continue
        for t, p, off in keys:
            done[(t, p)].add(off)
        for k in ends:  # Faust commits the contiguous prefix of acknowledged offsets
            while committed[k] in done[k]:
                committed[k] += 1
    return h, crashes


async def snapshot(h: Harness) -> dict[str, Any]:
    state = {}
    for cid in sorted(await h.store.customer_ids(10_000)):
        raw = await h.store.read(cid)
        state[cid] = (raw.main, raw.days, raw.seen, raw.tickets)
    summary = await h.store.redis.get(f"{h.settings.key_prefix}model:summary")
    return {
        "state": state,
        "alerts": {a.alert_id: a.model_dump() for a in h.out.alert_list},
        "scores": {s.model_dump_json() for s in h.out.score_list},
        "model": summary,
        "pending": await h.store.redis.zrange(f"{h.settings.key_prefix}labels:pending", 0, -1, withscores=True),
        "risk": await h.store.redis.zrange(f"{h.settings.key_prefix}risk", 0, -1, withscores=True),
        "portfolio": await portfolio_keys(h),
    }


async def portfolio_keys(h: Harness) -> dict[str, Any]:
    """Every portfolio key (sums, records, segment observations and checkpoints), by value."""
    r, prefix = h.store.redis, h.settings.key_prefix
    out: dict[str, Any] = {}
    async for key in r.scan_iter(match=f"{prefix}pf:*", count=1000):
        kind = (await r.type(key)).decode()
        name = key.decode()[len(prefix):]
        if kind == "hash":
            out[name] = await r.hgetall(key)
        elif kind == "zset":
            out[name] = await r.zrange(key, 0, -1, withscores=True)
        elif kind == "string":
            out[name] = await r.get(key)
        else:
            out[name] = kind
    return out


@pytest.mark.parametrize("seed", [1, 2, pytest.param(6, marks=pytest.mark.xfail(
    strict=True, reason="known hole (open in issue 4): a kill right after a scoring round is applied can "
    "leave one customer's January portfolio sums filed under another stage/segment than a clean run's"))])
async def test_crashes_anywhere_change_nothing(settings: Settings, redis_client: Any, seed: int) -> None:
    logs = sim_records(customers=30, days=70, seed=9)
    s = settings.model_copy(update={"model_min_labels": 20, "model_min_positives": 2})
    base = s.key_prefix
    clean, _ = await run_with_crashes(s.model_copy(update={"key_prefix": base + "a:"}), redis_client, logs, None)
    crashed, crashes = await run_with_crashes(s.model_copy(update={"key_prefix": base + "b:"}), redis_client,
                                              logs, seed)
    a, b = await snapshot(clean), await snapshot(crashed)
    assert crashes >= 3 and a["alerts"] and a["model"]
    assert any(k.startswith("pf:{pf}:seg:blob:") for k in a["portfolio"])  # segments were learnt
    for what in ("state", "model", "pending", "risk", "alerts", "scores", "portfolio"):
        if what in ("state", "portfolio"):
            for key in a[what]:
                assert a[what][key] == b[what].get(key), key
        assert a[what] == b[what], what
    for k in ("a:", "b:"):
        keys = [key async for key in redis_client.scan_iter(match=f"{base}{k}*", count=1000)]
        if keys:
            await redis_client.delete(*keys)


async def test_a_state_lost_during_a_drain_publishes_nothing(settings: Settings, redis_client: Any) -> None:
    """Redis restarts empty in the middle of a drain: the rounds after it run on a blank state,
    so the drain must not publish what they computed; the ingestor raises StateLostError (the
    worker exits 3 and asks for a rebuild) and acknowledges nothing."""
    from stream_app.ingest import Record, StateLostError

    logs = sim_records(customers=10, days=20, seed=4)
    h = Harness(settings, redis_client)
    ends = {(settings.topic(t), p): len(log) for (t, p), log in logs.items()}
    await h.ingestor.assign(ends)
    calls = 0
    real = h.store.apply_and_read

    async def wipe_after_first_round(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        result = await real(*args, **kwargs)
        if calls == 2:  # Redis comes back empty: every key of this deployment is gone
            keys = [k async for k in redis_client.scan_iter(match=f"{settings.key_prefix}*", count=1000)]
            await redis_client.delete(*keys)
        return result

    h.store.apply_and_read = wipe_after_first_round  # type: ignore[method-assign]
    records = [Record(settings.topic(t), p, i, v, ends[(settings.topic(t), p)])
               for (t, p), log in sorted(logs.items()) for i, v in enumerate(log)]
    with pytest.raises(StateLostError):
        await h.ingestor.handle(records)
    assert calls >= 3  # rounds ran on the blank state after the wipe
    assert h.out.alert_list == [] and h.out.score_list == []


async def test_scoring_lanes_change_nothing(settings: Settings, redis_client: Any) -> None:
    """Customers scored in 1 lane or in 3 concurrent lanes: the same state, outputs, model and
    portfolio (the lanes only overlap this process' scoring with Redis' work)."""
    logs = sim_records(customers=30, days=70, seed=9)
    s = settings.model_copy(update={"model_min_labels": 20, "model_min_positives": 2})
    base = s.key_prefix
    one, _ = await run_with_crashes(s.model_copy(update={"key_prefix": base + "a:", "score_lanes": 1}),
                                    redis_client, logs, None)
    three, _ = await run_with_crashes(s.model_copy(update={"key_prefix": base + "b:", "score_lanes": 3}),
                                      redis_client, logs, None)
    a, b = await snapshot(one), await snapshot(three)
    assert a["alerts"] and a["model"] and len(a["state"]) == 30
    for what in ("state", "model", "pending", "risk", "alerts", "scores", "portfolio"):
        assert a[what] == b[what], what
    for k in ("a:", "b:"):
        keys = [key async for key in redis_client.scan_iter(match=f"{base}{k}*", count=1000)]
        if keys:
            await redis_client.delete(*keys)


async def test_a_failing_lane_stops_the_others_before_its_error_surfaces() -> None:
    import asyncio

    from stream_app.scorer import _all_or_none

    steps: list[str] = []

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise ConnectionError("redis went away")

    async def slow() -> int:
        try:
            await asyncio.sleep(5)
            steps.append("finished")
        except asyncio.CancelledError:
            steps.append("cancelled")
            raise
        return 1

    with pytest.raises(ConnectionError):  # the error itself, not an ExceptionGroup
        await _all_or_none([slow(), fails()])
    assert steps == ["cancelled"]  # stopped and awaited before the error reached the caller
    assert await _all_or_none([asyncio.sleep(0, result=1), asyncio.sleep(0, result=2)]) == [1, 2]
