"""Event-time alignment: the order in which a worker applies and scores events.

The four input topics are consumed independently, so how their records interleave depends
on timing (fetch sizes, a backlog, a restart). Scores and alerts must not: a crash, an outage
or a replay has to give the clean run's results exactly. So events are applied in an order
that is a function of the data alone:

* Every record gets an **order key** ``(k, topic index, partition, offset)`` where
  ``k = max(ts, newest ts earlier in its partition)``: non-decreasing along a partition, so a
  late event keeps its place behind what its partition already delivered (its *state* still
  lands in its own event-time day; only the processing order moves).
* Customer keys hash to the same partition number in every input topic (same key, same
  partitioner, same partition count), and Faust assigns co-partitioned topics together, so
  partition ``i`` of the four topics (a **group**) holds all of a customer's events.
* A group releases records with ``k`` below its **watermark**: the smallest newest-``k`` over
  its busy topic-partitions. Every later record of a busy partition has a key at or above
  it, so nothing can arrive that sorts before a released record. A partition that has
  caught up with its log end (idle) does not hold the others back; one that is known to
  have records but has delivered none yet does.

Records that are not released stay held: the app does not acknowledge them, so their
offsets are never committed and a crash re-delivers them to be held again.

>>> a = GroupAligner(["act", "tix"])
>>> a.known(("act", 0), handled=-1, wm=-1, caught_up=False)
>>> a.known(("tix", 0), handled=-1, wm=-1, caught_up=False)
>>> a.receive(("act", 0), 0, ts=100, item="a0")
>>> a.receive(("act", 0), 1, ts=300, item="a1")
>>> [p.item for p in a.release()]          # tickets not heard from yet: nothing is safe
[]
>>> a.receive(("tix", 0), 0, ts=200, item="t0")
>>> [p.item for p in a.release()]          # watermark 200: a0 only
['a0']
>>> a.caught_up(("tix", 0))                # tickets at log end: only activity bounds it
>>> [p.item for p in a.release()]          # watermark 300, a1 waits for its successor
['t0']
>>> a.caught_up(("act", 0))
>>> [p.item for p in a.release()]
['a1']
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from stream_app.core import TP

T = TypeVar("T")

#: sorts after every real event time: the watermark of a group whose partitions all caught up
END_OF_TIME = 2**62


@dataclass(order=True)
class Pending(Generic[T]):
    """A record waiting for its group's watermark, ordered by its order key."""

    key: tuple[int, int, int, int]
    tp: TP = field(compare=False)
    item: T = field(compare=False)

    @property
    def k(self) -> int:
        return self.key[0]


@dataclass
class PartitionTrack:
    """What the worker knows of one topic-partition.

    ``handled``/``wm``: every offset <= handled is done (applied or dead-lettered) and wm is
    the newest event time among them (persisted as the partition's progress). ``newest``:
    the newest event time received, held records included (drives the watermark).
    """

    handled: int = -1
    wm: int = -1
    newest: int = -1
    received: int = -1
    is_caught_up: bool = False
    #: received, not yet done, in offset order: [offset, newest ts up to it, done?, order k]
    open: deque[list[int]] = field(default_factory=deque)

    def receive(self, offset: int, ts: int | None) -> int:
        """Record a new offset (``ts`` None: not an event, e.g. a dead letter); returns k."""
        before = self.newest
        if ts is not None and ts > self.newest:
            self.newest = ts
        self.received = max(self.received, offset)
        k = max(ts if ts is not None else -1, before)
        self.open.append([offset, self.newest, 0, k])
        return k

    @property
    def low_watermark(self) -> int:
        """Every record of this partition with an order key below this is done: the key of
        the first record not done, or (none open) the newest event time received."""
        return self.open[0][3] if self.open else self.newest

    def done(self, offset: int) -> None:
        for entry in self.open:
            if entry[0] == offset:
                entry[2] = 1
                break
        while self.open and self.open[0][2]:
            off, newest, _, _ = self.open.popleft()
            self.handled, self.wm = off, max(self.wm, newest)


class GroupAligner(Generic[T]):
    """Holds one partition group's records and releases them in order-key order.

    Topics are named in a fixed order (their index is part of the order key); partitions
    are added with ``known`` (from saved progress) or on first ``receive``.
    """

    def __init__(self, topics: list[str]) -> None:
        self.topic_index = {t: i for i, t in enumerate(topics)}
        self.tracks: dict[TP, PartitionTrack] = {}
        self.heap: list[Pending[T]] = []

    def known(self, tp: TP, handled: int, wm: int, caught_up: bool) -> None:
        """A partition this worker owns, with its saved progress."""
        self.tracks[tp] = PartitionTrack(handled=handled, wm=wm, newest=wm, received=handled,
                                         is_caught_up=caught_up)

    def track(self, tp: TP) -> PartitionTrack:
        t = self.tracks.get(tp)
        if t is None:
            t = self.tracks[tp] = PartitionTrack()
        return t

    def receive(self, tp: TP, offset: int, ts: int | None, item: T | None = None) -> None:
        """A record arrived (in offset order per partition). Events (``item`` given) are held;
        anything else (a dead letter) only takes its place in the partition's progress."""
        t = self.track(tp)
        t.is_caught_up = False
        k = t.receive(offset, ts)
        if item is not None:
            heapq.heappush(self.heap, Pending((k, self.topic_index[tp[0]], tp[1], offset), tp, item))

    def caught_up(self, tp: TP, value: bool = True) -> None:
        """The partition has delivered everything up to its log end (or has more again)."""
        self.track(tp).is_caught_up = value

    def watermark(self) -> int:
        busy = [t.newest for t in self.tracks.values() if not t.is_caught_up]
        return min(busy) if busy else END_OF_TIME

    def release(self, limit: int = END_OF_TIME) -> list[Pending[T]]:
        """Records whose key is below the watermark (and below ``limit``), in key order."""
        bound = min(self.watermark(), limit)
        out: list[Pending[T]] = []
        while self.heap and (self.heap[0].k < bound or (bound == END_OF_TIME and self.heap[0].k < limit)):
            out.append(heapq.heappop(self.heap))
        return out

    def done(self, tp: TP, offset: int) -> None:
        self.track(tp).done(offset)

    def held(self) -> int:
        return len(self.heap)

    def min_held_k(self) -> int | None:
        return self.heap[0].k if self.heap else None

    def drop(self, tps: set[TP]) -> None:
        """Forget partitions this worker no longer owns (their records will be re-fetched)."""
        for tp in tps:
            self.tracks.pop(tp, None)
        self.heap = [p for p in self.heap if p.tp not in tps]
        heapq.heapify(self.heap)
