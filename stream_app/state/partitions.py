"""The Redis side of changing the number of partitions (``stream-app partitions``).

* **Which topics the state was built on**: ``{prefix}partitioning`` = ``"<topic prefix>|<partitions>"``.
  A worker records it on its first start and refuses to start when the settings name other topics
  or another partition count (``tools/partitions.py``): a deployment pointed at re-partitioned or
  new topics without the migration would otherwise misbehave silently.
* **What a partition has handled**: the safety check reads each input partition's progress
  (``StateStore.get_progress``): a migration is safe once every record of every old partition is
  handled.
* **New partitions** get a progress placeholder (nothing handled, at its log end), as a worker
  would create on assignment, so the learner's watermark and ``handled`` counts see them at once.
* **New topics** restart their offsets at 0, while each customer's hash remembers the last applied
  ``(partition, offset)`` per topic kind to recognise redelivered records: those must be
  forgotten, or a new record at a lower offset of the same partition number would be taken for a
  redelivery and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from stream_app.core import text
from stream_app.state import layout
from stream_app.state.layout import Keys
from stream_app.state.store import StateStore


@dataclass(frozen=True)
class Partitioning:
    """The input topics a deployment's state was built on.

    >>> Partitioning.parse("cs.|4")
    Partitioning(topic_prefix='cs.', partitions=4)
    >>> Partitioning("acme.", 12).encode()
    'acme.|12'
    """

    topic_prefix: str
    partitions: int

    def encode(self) -> str:
        return f"{self.topic_prefix}|{self.partitions}"

    @classmethod
    def parse(cls, raw: str) -> "Partitioning":
        prefix, _, n = raw.rpartition("|")
        return cls(prefix, int(n))


async def read_partitioning(redis: Any, prefix: str) -> Partitioning | None:
    raw = await redis.get(Keys(prefix).partitioning)
    return Partitioning.parse(text(raw)) if raw is not None else None


async def write_partitioning(redis: Any, prefix: str, value: Partitioning, only_if_missing: bool = False) -> bool:
    """Record the topics the state is built on; ``only_if_missing``: keep one already recorded."""
    return bool(await redis.set(Keys(prefix).partitioning, value.encode(), nx=only_if_missing))


async def has_state(redis: Any, prefix: str) -> bool:
    """Whether a worker ever ran on this key prefix (the epoch marker exists)."""
    return bool(await redis.exists(Keys(prefix).epoch))


async def handled_offsets(store: StateStore, tps: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Highest handled offset per partition from Redis progress (-1: none handled or no progress)."""
    out = {}
    for tp in tps:
        prog = await store.get_progress(*tp)
        out[tp] = prog[0] if prog is not None else -1
    return out


async def prepare_progress(store: StateStore, topics: Sequence[str], partitions: int) -> None:
    """A placeholder for every partition that has no progress yet (existing ones are kept)."""
    for topic in topics:
        for p in range(partitions):
            await store.ensure_progress(topic, p, True)


async def forget_source_offsets(redis: Any, prefix: str, batch: int = 500) -> int:
    """Drop every customer's last applied (partition, offset) per topic kind; returns how many
    customers. Only between topic generations, with every worker stopped and every old record
    handled: nothing of the old topics is ever delivered again."""
    names = layout.SOURCE_OFFSETS
    pattern = layout.main_key_pattern("".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix))
    count = 0
    pipe = redis.pipeline(transaction=False)
    async for key in redis.scan_iter(match=pattern, count=1000):
        pipe.hdel(key, *names)
        count += 1
        if count % batch == 0:
            await pipe.execute()
            pipe = redis.pipeline(transaction=False)
    await pipe.execute()
    return count
