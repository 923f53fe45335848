"""The simulator's events as they would sit in the topics' partitions, and a harness run that
feeds them in batches (topic by topic, or interleaved at random)."""

from __future__ import annotations

import random
import zlib
from typing import Any

import orjson

from support.harness import Harness
from stream_app.tools.simulator import SimConfig, Simulator

PARTITIONS = 2


def partition_of(cid: str) -> int:
    return zlib.crc32(cid.encode()) % PARTITIONS


def sim_records(customers: int, days: int, seed: int) -> dict[tuple[str, int], list[bytes]]:
    """The simulator's events as they would sit in the topics' partitions (by key)."""
    logs: dict[tuple[str, int], list[bytes]] = {}
    for e in Simulator(SimConfig(customers=customers, days=days, seed=seed, activity_scale=0.3)).events():
        logs.setdefault((e.topic, partition_of(e.event["customer_id"])), []).append(orjson.dumps(e.event))
    return logs


async def run(h: Harness, logs: dict[tuple[str, int], list[bytes]], rng: random.Random | None) -> dict[str, Any]:
    """Feed every partition's log in batches: topic by topic (rng None), or interleaved at
    random with random batch sizes; each batch knows how much of its log is still waiting."""
    cursor = {tp: 0 for tp in logs}
    # as the worker does on assignment: every owned partition and its log end
    await h.ingestor.assign({(h.settings.topic(t), p): len(log) for (t, p), log in logs.items()})
    while any(cursor[tp] < len(log) for tp, log in logs.items()):
        live = [tp for tp in sorted(logs) if cursor[tp] < len(logs[tp])]
        tp = live[0] if rng is None else rng.choice(live)
        size = 400 if rng is None else rng.randint(1, 300)
        chunk = logs[tp][cursor[tp]: cursor[tp] + size]
        cursor[tp] += len(chunk)
        await h.feed([(tp[0], v) for v in chunk], partition=tp[1], lag=len(logs[tp]) - cursor[tp])
    return await snapshot_of(h)


async def snapshot_of(h: Harness) -> dict[str, Any]:
    """Everything a run leaves: outputs, every customer's state, the model."""
    state = {}
    for cid in sorted(await h.store.customer_ids(10_000)):
        raw = await h.store.read(cid)
        state[cid] = (raw.main, raw.days, raw.seen, raw.tickets)
    model = await h.store.redis.get(f"{h.settings.key_prefix}model:summary")
    return {
        "alerts": [a.model_dump() for a in h.out.alert_list],
        "scores": [s.model_dump() for s in h.out.score_list],
        "examples": [(e["id"], e["y"]) for e in h.out.example_list],
        "state": state,
        "model": orjson.loads(model) if model else None,
        "through": await h.store.redis.get(f"{h.settings.key_prefix}model:through"),
    }
