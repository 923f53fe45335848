"""Commit discipline: per partition, the offsets read and not yet settled (every sink accepted
the record or it was parked). The committable offset is one past the longest settled prefix,
so a restart re-reads exactly the records still in flight (and those after them).

>>> t = OffsetTracker()
>>> for o in (10, 11, 12):
...     t.begin("p0", o, 1000 * o)
>>> t.finish("p0", 11); t.committable()
{}
>>> t.finish("p0", 10); t.committable(), t.in_flight, t.oldest_ms()
({'p0': 12}, 1, 12000)
>>> t.committable()
{}
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable


class _Partition:
    def __init__(self) -> None:
        self.order: deque[int] = deque()
        self.done: set[int] = set()
        self.started: dict[int, int] = {}  # offset -> Kafka timestamp (ms)
        self.next: int | None = None  # next offset to commit, once it moved
        self.dirty = False


class OffsetTracker:
    """Offsets in flight per partition (any hashable key, a ``TopicPartition`` in the service)."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, _Partition] = {}
        self.in_flight = 0

    def begin(self, tp: Hashable, offset: int, timestamp_ms: int) -> None:
        part = self._parts.setdefault(tp, _Partition())
        part.order.append(offset)
        part.started[offset] = timestamp_ms
        self.in_flight += 1

    def finish(self, tp: Hashable, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None or offset not in part.started:
            return  # the partition was revoked meanwhile
        del part.started[offset]
        part.done.add(offset)
        self.in_flight -= 1
        while part.order and part.order[0] in part.done:
            done = part.order.popleft()
            part.done.discard(done)
            part.next, part.dirty = done + 1, True

    def committable(self) -> dict[Hashable, int]:
        """Partitions whose commit point moved since the last call -> the offset to commit."""
        out = {}
        for tp, part in self._parts.items():
            if part.dirty and part.next is not None:
                out[tp] = part.next
                part.dirty = False
        return out

    def pending(self, tp: Hashable) -> int:
        part = self._parts.get(tp)
        return len(part.started) if part else 0

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Drop revoked partitions (their unsettled records are re-read by the new owner)."""
        for tp in tps:
            part = self._parts.pop(tp, None)
            if part is not None:
                self.in_flight -= len(part.started)

    def oldest_ms(self) -> int | None:
        """Kafka timestamp of the oldest record still in flight."""
        starts = [min(p.started.values()) for p in self._parts.values() if p.started]
        return min(starts) if starts else None
