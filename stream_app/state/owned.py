"""The customers a worker owns, kept in its memory: loaded on first touch, written once per drain.

A partition group (one partition number across the input topics) is consumed by one worker
at a time, and a customer's events all land in one group, so the worker that owns the group
can keep its customers' state in memory and use Redis as the durable store only:

* **load** on first touch (or after eviction): one pipelined round trip for a drain's misses;
* **write** once per drain: what changed, many customers per script call
  (``StateStore.write_customers``);
* **bounded**: least recently used customers beyond ``capacity`` are dropped (reloaded on
  their next event);
* **revocation** drops the group's customers;
* **fencing**: each assignment bumps the group's generation in Redis (``Keys.fence``); loads
  and writes carry it and Redis refuses a lower one than the customer was last claimed with,
  so a worker that lost the group (a zombie after a rebalance or a long pause) can never
  write over the new owner's state;
* a failed or uncertain write (``evict``) drops the drain's customers: they are reloaded
  from what Redis really holds.

>>> owned = OwnedStates(store=None, capacity=2)  # type: ignore[arg-type]
>>> owned.generation(3)
0
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

from stream_app.state.customer import CustomerState
from stream_app.state.store import StateStore


class FencedError(Exception):
    """A newer owner claimed these customers: this worker no longer owns their partition group."""

    def __init__(self, customers: Iterable[str], groups: Iterable[int]) -> None:
        self.customers = set(customers)
        self.groups = set(groups)
        super().__init__(f"partition groups {sorted(self.groups)} are owned by another worker now "
                         f"({len(self.customers)} customers fenced off)")


class OwnedStates:
    """In-memory customer states (see the module)."""

    def __init__(self, store: StateStore, capacity: int) -> None:
        self.store = store
        self.capacity = capacity
        self._states: OrderedDict[str, CustomerState] = OrderedDict()
        #: partition group of each customer in memory
        self._group: dict[str, int] = {}
        #: this worker's fence generation per owned group (0: unmanaged, e.g. fed by hand)
        self._gens: dict[int, int] = {}
        self.loads = 0

    def __len__(self) -> int:
        return len(self._states)

    def generation(self, group: int) -> int:
        return self._gens.get(group, 0)

    async def claim(self, groups: Iterable[int]) -> None:
        """Partition groups just assigned to this worker: a new generation each (a group
        reassigned to the same worker also gets one: what it held may be stale)."""
        new = sorted(set(groups))
        if not new:
            return
        self.release(new)
        pipe = self.store.redis.pipeline(transaction=False)
        for g in new:
            pipe.incr(self.store.names.fence(g))
        for g, gen in zip(new, await pipe.execute()):
            self._gens[g] = int(gen)

    def release(self, groups: Iterable[int]) -> None:
        """Partition groups no longer owned: forget their customers."""
        gone = set(groups)
        for g in gone:
            self._gens.pop(g, None)
        self.evict([cid for cid, g in self._group.items() if g in gone])

    def evict(self, customers: Iterable[str]) -> None:
        for cid in customers:
            self._states.pop(cid, None)
            self._group.pop(cid, None)

    async def get(self, wanted: Mapping[str, int]) -> dict[str, CustomerState]:
        """The states of ``wanted`` (customer -> partition group), loading those not in
        memory in one round trip. Raises ``FencedError`` if a newer owner claimed some."""
        out: dict[str, CustomerState] = {}
        missing: list[str] = []
        for cid in wanted:
            st = self._states.get(cid)
            if st is None:
                missing.append(cid)
            else:
                self._states.move_to_end(cid)
                out[cid] = st
        if missing:
            loaded = await self.store.load_customers([(cid, self.generation(wanted[cid])) for cid in missing])
            fenced = [cid for cid, st in zip(missing, loaded) if st is None]
            if fenced:
                raise FencedError(fenced, {wanted[cid] for cid in fenced})
            for cid, st in zip(missing, loaded):
                assert st is not None
                self._states[cid] = out[cid] = st
                self._group[cid] = wanted[cid]
            self.loads += len(missing)
        return out

    def trim(self) -> None:
        """Drop the least recently used customers beyond the capacity (all written by now)."""
        while len(self._states) > self.capacity:
            cid, st = self._states.popitem(last=False)
            self._group.pop(cid, None)
            assert not st.pending_write, f"{cid} evicted with unwritten changes"

    async def write(self, states: Iterable[CustomerState], before: list[tuple[str, tuple[object, ...]]],
                    newest_ms: int) -> set[str]:
        """Write what changed (see ``StateStore.write_customers``); returns the fenced
        customers, which are dropped from memory; the others start a new change set."""
        todo = [(st, self.generation(self._group.get(st.customer_id, -1))) for st in states if st.pending_write]
        fenced = await self.store.write_customers(todo, before, newest_ms)
        for st, _ in todo:
            if st.customer_id not in fenced:
                st.written()
        self.evict(fenced)
        return fenced

    def group_of(self, customer_id: str) -> int | None:
        return self._group.get(customer_id)
