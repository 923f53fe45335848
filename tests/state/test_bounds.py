"""Bounded resources (real Redis): a customer's state is bounded by the longest window, not by
how long its history is; total state is linear in active customers; pending label snapshots
are bounded by customers x (horizon / snapshot interval), however long the stream runs."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import orjson

from support.harness import DAY, T0, Harness, ev
from stream_app.settings import Settings
from stream_app.tools.simulator import SimConfig, Simulator


def day_of_activity(cid: str, day: int) -> list[tuple[str, bytes]]:
    """One ordinary working day of a customer: logins and feature use by a few users, a
    ticket every 10 days, a survey every 30."""
    at = T0 + day * DAY
    items = [ev("activity", f"{cid}-{day}-{j}", at + j * timedelta(minutes=40), cid=cid,
                action=["login", "feature_used", "post", "export"][j % 4], user_id=f"u{j % 5}",
                feature=f"f{j % 7}", duration_s=60) for j in range(10)]
    if day % 10 == 0:
        items.append(ev("tickets", f"{cid}-t{day}", at, cid=cid, ticket_id=f"T{day}", status="opened"))
        items.append(ev("tickets", f"{cid}-r{day}", at + timedelta(hours=5), cid=cid, ticket_id=f"T{day}",
                        status="resolved"))
    if day % 30 == 0:
        items.append(ev("surveys", f"{cid}-s{day}", at, cid=cid, survey="nps", score=8))
    return items


async def customer_bytes(h: Harness, cids: list[str]) -> list[int]:
    return [await h.store.memory_usage(c) for c in cids]


async def test_customer_state_does_not_grow_with_history_length(h: Harness) -> None:
    """Same daily pattern: the state after 240 days is the size of the state after 100 (the
    longest window is 90 days; older buckets and de-duplication digests are pruned)."""
    await h.feed([ev("subscriptions", "sub", T0, status="started", mrr=300)])
    sizes: dict[int, int] = {}
    for day in range(240):
        await h.feed(day_of_activity("acme", day))
        if day + 1 in (100, 240):
            sizes[day + 1] = await h.store.memory_usage("acme")
    assert sizes[100] > 1000  # the state is really there
    assert sizes[240] <= sizes[100] * 1.10, sizes


async def test_total_state_is_linear_in_active_customers(settings: Settings, redis_client: Any) -> None:
    """10 and 40 customers with the same 100-day pattern, each group in a deployment of its own
    (its own key prefix, fed the same way): the per-customer mean stays the same, so the total
    scales with customers (shared keys: the risk index and pending labels grow by one entry per
    customer, not per event). Two separate deployments, so both groups are at the same point of
    their label cycle: a second group fed into the first's deployment after it would hold fewer
    pending snapshots for a while, which is timing, not growth."""
    async def total(prefix: str, n: int) -> int:
        h = Harness(settings.model_copy(update={"key_prefix": f"{settings.key_prefix}{prefix}:"}), redis_client)
        cids = [f"c{i:03d}" for i in range(n)]
        for c in cids:
            await h.feed([ev("subscriptions", f"{c}-sub", T0, cid=c, status="started", mrr=300)])
        for day in range(100):
            await h.feed([item for c in cids for item in day_of_activity(c, day)])
        return sum(await customer_bytes(h, cids))

    small = await total("small", 10)
    large = await total("large", 40)
    assert small > 10 * 1000
    assert 3.6 <= large / small <= 4.4, (small, large)


async def test_pending_label_snapshots_stay_bounded(settings: Settings, redis_client: Any) -> None:
    """A 200-day simulated stream: pending snapshots never exceed customers x (horizon / every + 1),
    although several times that many are taken over the stream (they resolve and leave)."""
    customers, days = 30, 200
    h = Harness(settings, redis_client)
    events = sorted(Simulator(SimConfig(customers=customers, days=days, seed=5, activity_scale=0.15)).events(),
                    key=lambda e: e.event["ts"])
    pending_key = f"{settings.key_prefix}labels:pending"
    bound = customers * (math.ceil(settings.label_horizon_days / settings.snapshot_every_days) + 1)
    by_day: dict[int, int] = {}
    chunk: list[tuple[str, bytes]] = []
    day = 0
    for e in events:
        d = (int(e.event["ts"][:4]), int(e.event["ts"][5:7]), int(e.event["ts"][8:10]))
        if chunk and d != day:
            await h.feed(chunk)
            chunk = []
            by_day[len(by_day)] = await redis_client.zcard(pending_key)
        day = d
        chunk.append((e.topic, orjson.dumps(e.event)))
    await h.feed(chunk)
    counts = list(by_day.values())
    resolved = len(h.out.example_list)
    assert resolved > customers  # labels really resolve (each resolution removes a pending snapshot)
    assert max(counts) <= bound, (max(counts), bound)
    taken = resolved + counts[-1]
    assert taken > 3 * max(counts), (taken, max(counts))
