"""Crash and redelivery, in process (fast): an ingestor dies at random points (including in the
middle of publishing a drain's outputs), a new one takes over and Kafka's redelivery is
emulated from the contiguous prefix of acknowledged offsets. Everything must equal a clean run."""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from support.harness import Harness, ListOutputs
from stream_app.pipeline.ingest import Ingestor
from stream_app.settings import Settings
from support.sim import sim_records


class Crash(Exception):
    """Not a transient error: the ingestor gives up, like a killed process."""


class AfterCall:
    """``fn`` wrapped: after each call returns, ``then(call number, args)`` runs before the
    result is handed back (it may raise: a kill right after Redis applied the call)."""

    def __init__(self, fn: Any, then: Callable[[int, tuple[Any, ...]], Awaitable[None]]) -> None:
        self.fn, self.then, self.calls = fn, then, 0

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        result = await self.fn(*args, **kwargs)
        await self.then(self.calls, args)
        return result


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

    async def maybe_crash(_: int, __: tuple[Any, ...]) -> None:
        if rng.random() < rate:  # killed right after Redis applied it, before anything else
            raise Crash

    def crash_after(fn: Any) -> Any:
        return AfterCall(fn, maybe_crash)

    # killed right after Redis loaded (and claimed) a drain's customers, or wrote their changes
    h.store.load_customers = crash_after(h.store.load_customers)  # type: ignore[method-assign]
    h.store.write_customers = crash_after(h.store.write_customers)  # type: ignore[method-assign]

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
            from stream_app.core import Record

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


def _seeds() -> list[Any]:
    """Seeds 1, 2 and 6 (6 once found a hole: a kill right after a scoring round); a soak run
    takes more, e.g. ``RECOVERY_SEEDS=1-40 python -m pytest tests/test_recovery.py -k crashes``."""
    spec = os.environ.get("RECOVERY_SEEDS", "")
    if not spec:
        return [1, 2, 6]
    lo, _, hi = spec.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


@pytest.mark.parametrize("seed", _seeds())
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


async def test_a_state_lost_during_a_drain_publishes_nothing(settings: Settings, redis_client: Any) -> None:
    """Redis restarts empty in the middle of a drain: the rounds after it run on a blank state,
    so the drain must not publish what they computed; the ingestor raises StateLostError (the
    worker exits 3 and asks for a rebuild) and acknowledges nothing."""
    from stream_app.core import Record, StateLostError

    logs = sim_records(customers=10, days=20, seed=4)
    h = Harness(settings, redis_client)
    ends = {(settings.topic(t), p): len(log) for (t, p), log in logs.items()}
    await h.ingestor.assign(ends)

    async def wipe_after_first_write(calls: int, _: tuple[Any, ...]) -> None:
        if calls == 1:  # Redis comes back empty: every key of this deployment is gone
            keys = [k async for k in redis_client.scan_iter(match=f"{settings.key_prefix}*", count=1000)]
            await redis_client.delete(*keys)

    wrapped = h.store.write_customers = AfterCall(h.store.write_customers, wipe_after_first_write)  # type: ignore[method-assign]
    records = [Record(settings.topic(t), p, i, v, ends[(settings.topic(t), p)])
               for (t, p), log in sorted(logs.items()) for i, v in enumerate(log)]
    with pytest.raises(StateLostError):
        await h.ingestor.handle(records)
    assert wrapped.calls == 1  # the drain was scored and written, then Redis lost it
    assert h.out.alert_list == [] and h.out.score_list == []


async def test_state_cache_size_changes_nothing(settings: Settings, redis_client: Any) -> None:
    """Every customer kept in memory, or only 3 (the others dropped after each drain and
    reloaded from Redis on their next event): the same state, outputs, model and portfolio."""
    logs = sim_records(customers=30, days=70, seed=9)
    s = settings.model_copy(update={"model_min_labels": 20, "model_min_positives": 2})
    base = s.key_prefix
    one, _ = await run_with_crashes(s.model_copy(update={"key_prefix": base + "a:"}), redis_client, logs, None)
    three, _ = await run_with_crashes(s.model_copy(update={"key_prefix": base + "b:", "state_cache_customers": 3}),
                                      redis_client, logs, None)
    assert three.ingestor.scorer.owned.loads > 10 * one.ingestor.scorer.owned.loads
    a, b = await snapshot(one), await snapshot(three)
    assert a["alerts"] and a["model"] and len(a["state"]) == 30
    for what in ("state", "model", "pending", "risk", "alerts", "scores", "portfolio"):
        assert a[what] == b[what], what


async def test_a_kill_after_a_month_end_scoring_was_saved_keeps_that_months_facts(
        settings: Settings, redis_client: Any) -> None:
    """One drain scores a customer on Jan 31 and on Feb 1, and is killed right after its
    changes were written (before anything was published); the redelivery brings the Jan 31
    records alone first (done already: skipped), then Feb 1. January's record must carry the
    Jan 31 scoring's facts, as a clean run's does, not the older scoring's."""
    from datetime import datetime, timezone

    from support.harness import ev
    from stream_app.core import Record

    jan20 = datetime(2026, 1, 20, 9, 0, tzinfo=timezone.utc)
    jan31 = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)
    feb1 = datetime(2026, 2, 1, 8, 0, tzinfo=timezone.utc)
    first = [ev("subscriptions", "s0", jan20, status="started", mrr=900, plan="growth")]
    # Jan 31: a burst of use and a happy survey (health moves up); Feb 1: a detractor
    second = [ev("activity", f"a{i}", jan31.replace(minute=i), action="report", user=f"u{i % 4}",
                 feature=f"f{i % 5}", duration_s=600) for i in range(12)]
    second += [ev("surveys", "c1", jan31.replace(hour=13), survey="csat", score=5),
               ev("surveys", "n1", feb1, survey="nps", score=1)]
    base = settings.key_prefix

    async def run(prefix: str, kill: bool) -> dict[str, Any]:
        s = settings.model_copy(update={"key_prefix": base + prefix})
        h = Harness(s, redis_client)
        await h.feed(first)
        recs = h.records(second)
        if not kill:
            await h.ingestor.handle(recs)
            return await portfolio_keys(h)
        real = h.store.write_customers

        async def killed_after_the_write(_: int, args: tuple[Any, ...]) -> None:
            raise Crash

        wrapped = h.store.write_customers = AfterCall(real, killed_after_the_write)  # type: ignore[method-assign]
        published = len(h.out.alert_list), len(h.out.score_list)
        with pytest.raises(Crash):
            await h.ingestor.handle(recs)
        assert wrapped.calls == 1 and (len(h.out.alert_list), len(h.out.score_list)) == published
        h.store.write_customers = real  # type: ignore[method-assign]
        h.ingestor = Ingestor(h.store, s, h.out, clock=lambda: h.clock_s)
        jan = [r for r in recs if not r.value.startswith(b'{"event_id": "n1"')]
        await h.ingestor.assign({(r.topic, r.partition): r.offset + 1 for r in recs})
        await h.ingestor.handle(jan)
        await h.ingestor.handle([r for r in recs if r not in jan])
        return await portfolio_keys(h)

    clean, killed = await run("a:", False), await run("b:", True)
    month = "pf:{pf}:m:2026-01:c"
    assert clean[month] and clean[month] == killed[month]
    assert clean == killed
