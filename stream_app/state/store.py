"""Per-customer state in Redis, the durable store: the owned state's load and once-per-drain
write, the reads, progress bookkeeping.

Key and field names: :mod:`stream_app.state.layout`; what is encoded how:
:mod:`stream_app.state.codec`; events are applied in the worker's memory (:mod:`stream_app.state.apply`,
whose reference is ``lua/apply_events.lua``, kept for the differential test).

Exactly-once effects: a customer's state records, with its aggregates, the source
(partition, offset) per topic and the event_id digests, and each customer's changes of a
drain are written by one atomic script: a redelivered message (crash, restart, rebalance)
is recognised by its offset, a re-sent one by its event_id, so neither is counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Any, Sequence

import redis.asyncio as aioredis
from redis.cluster import key_slot
from redis.exceptions import NoScriptError

from schemas import InputEvent
from stream_app.core import DAY_MS, RawCustomerState, text
from stream_app.settings import Settings
from stream_app.state import layout
from stream_app.state.cluster import is_cluster, load_script
from stream_app.state.codec import encode_changes, encode_for_script
from stream_app.state.customer import CustomerState
from stream_app.state.layout import CustomerKeys, Keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcedEvent:
    """A validated event and where it came from (for offset bookkeeping)."""

    event: InputEvent
    topic: str
    partition: int
    offset: int

    def for_script(self, priority_weights: dict[str, int]) -> list[Any]:
        """The compact tuple the Lua script reads."""
        return encode_for_script(self.event, self.partition, self.offset, priority_weights)


def _pairs(flat: Sequence[bytes | str]) -> dict[str, str]:
    """A flat ``HGETALL`` reply from a script (field, value, field, value...) as a str dict.

    >>> _pairs([b"n", b"3", "hs", "710"])
    {'n': '3', 'hs': '710'}
    """
    # decoded in one pass: this runs for every field of every scored event
    items = [v.decode() if type(v) is bytes else v for v in flat]
    return dict(zip(items[::2], items[1::2]))


class StateStore:
    """Reads and atomically updates customer state; tracks partition progress."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.prefix = settings.key_prefix
        self.names = Keys(self.prefix)
        self._owned_shas: dict[str, str] | None = None
        self._retention_ms = settings.retention_days * DAY_MS

    def keys(self, customer_id: str) -> CustomerKeys:
        return self.names.customer(customer_id)

    # --- owned state: load on first touch, write once per drain (``state.owned``) -------------
    async def load_customers(self, wanted: Sequence[tuple[str, int]]) -> list[CustomerState | None]:
        """Load and claim customers for the worker that owns them: ``(customer, fence
        generation)`` pairs, one pipelined round trip. None: a newer owner claimed it (fenced)."""
        calls = []
        for cid, gen in wanted:
            k = self.keys(cid)
            calls.append(([k.main, k.days, k.seen, k.tickets, k.dedupe, k.outbox], [gen, layout.OWNER]))
        out: list[CustomerState | None] = []
        for (cid, _), res in zip(wanted, await self._run_owned("load", calls)):
            if int(res[0]) == 0:
                out.append(None)
                continue
            main = _pairs(res[1])
            main.pop(layout.OWNER, None)  # the claim is Redis' business, not the state's
            out.append(CustomerState(cid, main, _pairs(res[2]), _pairs(res[3]), _pairs(res[4]), _pairs(res[5]),
                                     list(res[6])))
        return out

    async def write_customers(self, states: Sequence[tuple[CustomerState, int]],
                              before: Sequence[tuple[str, tuple[Any, ...]]] = (), newest_ms: int = -1) -> set[str]:
        """Write what changed in each ``(state, fence generation)``: ``before`` first (index
        updates that must precede the saves they index), then the customers (many per script
        call; on Redis Cluster one call per hash slot, so each call is single-slot), then the
        newest event time applied. Returns the customers a newer owner had claimed (nothing
        of theirs written). Each customer's write is atomic."""
        if before:
            pipe = self.redis.pipeline(transaction=False)
            for command, args in before:
                getattr(pipe, command)(*args)
            await self._execute(pipe)
        chunks = self._write_chunks(states)
        calls: list[tuple[list[str], list[Any]]] = []
        for chunk in chunks:
            keys: list[str] = []
            argv: list[Any] = [layout.OWNER, self._retention_ms]
            for st, gen in chunk:
                keys += self.keys(st.customer_id).script_keys()
                argv += [gen, encode_changes(st)]
            calls.append((keys, argv))
        fenced: set[str] = set()
        for chunk, res in zip(chunks, await self._run_owned("write", calls)):
            fenced.update(st.customer_id for (st, _), ok in zip(chunk, res) if int(ok) == 0)
        if newest_ms >= 0:
            await self.redis.eval(_MAX_SCRIPT, 1, self.names.watermark, newest_ms)  # a monotone max: safe to repeat
        return fenced

    def _write_chunks(self, states: Sequence[tuple[CustomerState, int]]) -> list[list[tuple[CustomerState, int]]]:
        """Customers per script call: on Redis Cluster, those of one hash slot; else up to 64."""
        if not states:
            return []
        if not is_cluster(self.redis):
            return [list(states[i:i + _WRITE_CHUNK]) for i in range(0, len(states), _WRITE_CHUNK)]
        by_slot: dict[int, list[tuple[CustomerState, int]]] = {}
        for item in states:
            by_slot.setdefault(key_slot(self.keys(item[0].customer_id).main.encode()), []).append(item)
        return list(by_slot.values())

    async def _execute(self, pipe: Any) -> list[Any]:
        res = await pipe.execute(raise_on_error=False)
        for r in res:
            if isinstance(r, Exception):
                raise r
        return res

    async def _run_owned(self, name: str, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """Run an owned-state script once per ``(keys, args)`` call, in one pipeline. Calls that
        failed because a node forgot the script (a restart, a failover, SCRIPT FLUSH) are sent
        again, alone, after loading it on every primary; never the ones that ran (the write
        appends to the outbox: running it twice would duplicate entries)."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in (0, 1):
            if not todo:
                break
            if self._owned_shas is None:
                self._owned_shas = {n: await load_script(self.redis, src) for n, src in _OWNED_SCRIPTS.items()}
            sha = self._owned_shas[name]
            pipe = self.redis.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                pipe.evalsha(sha, len(keys), *keys, *args)
            retry = []
            for i, r in zip(todo, await pipe.execute(raise_on_error=False)):
                if isinstance(r, NoScriptError):
                    retry.append(i)
                elif isinstance(r, Exception):
                    raise r
                else:
                    results[i] = r
            if retry:
                self._owned_shas = None
                if attempt:
                    raise NoScriptError(f"the {name} script was not found on a node after loading it again")
            todo = retry
        return results

    # --- partition progress ---------------------------------------------------------------
    async def ensure_progress(self, topic: str, partition: int, idle: bool) -> None:
        """A placeholder for a partition nobody has handled yet, so that the global
        watermark waits for it (unless it is empty)."""
        key = self._progress_key(topic, partition)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, layout.PROGRESS_OFFSET, -1)
        pipe.hsetnx(key, layout.PROGRESS_NEWEST, -1)
        pipe.hsetnx(key, layout.PROGRESS_LOW, -1)
        pipe.hsetnx(key, layout.PROGRESS_IDLE, int(idle))
        await pipe.execute()

    async def progress_watermark(self, parts: Sequence[tuple[str, int]]) -> int | None:
        """Event-time watermark from saved progress: the minimum newest event time over the
        partitions still busy; a partition at its log end (idle) does not hold it back, one
        with no progress at all is ignored. If all are idle: the newest of them."""
        pipe = self.redis.pipeline(transaction=False)
        for topic, p in parts:
            pipe.hmget(self._progress_key(topic, p), layout.PROGRESS_OFFSET, layout.PROGRESS_LOW, layout.PROGRESS_IDLE)
        busy: list[int] = []
        idle: list[int] = []
        for off, lw, is_idle in await pipe.execute():
            if off is None:
                continue
            newest = int(lw) if lw is not None else -1
            (idle if is_idle in (b"1", "1") else busy).append(newest)
        if busy:
            return min(busy)
        return max(idle) if idle else None

    def _progress_key(self, topic: str, partition: int) -> str:
        return self.names.progress(topic, partition)

    async def get_progress(self, topic: str, partition: int) -> tuple[int, int] | None:
        """(highest handled offset, newest event time ms) of a partition, if recorded."""
        raw = await self.redis.hmget(self._progress_key(topic, partition), layout.PROGRESS_OFFSET, layout.PROGRESS_NEWEST)
        if raw[0] is None:
            return None
        return int(raw[0]), int(raw[1] or -1)

    async def set_progress(
        self, topic: str, partition: int, offset: int, newest_ms: int, caught_up: bool = False,
        low_ms: int | None = None,
    ) -> None:
        """Record that every offset <= ``offset`` is handled (never moves backwards), whether
        that reached the partition's log end when fetched (an idle partition), and the low
        watermark: every record ordered before ``low_ms`` is done (monotone)."""
        await self.redis.eval(
            _PROGRESS_SCRIPT, 1, self._progress_key(topic, partition), offset, newest_ms, int(caught_up),
            newest_ms if low_ms is None else low_ms,
            layout.PROGRESS_OFFSET, layout.PROGRESS_NEWEST, layout.PROGRESS_IDLE, layout.PROGRESS_LOW,
        )

    async def handled(self, topics: list[str], partitions: int) -> int:
        """Records handled (applied or dead-lettered) over these topics, from partition
        progress: offsets start at 0 and are contiguous, so highest offset + 1 per partition."""
        pipe = self.redis.pipeline(transaction=False)
        for topic in topics:
            for p in range(partitions):
                pipe.hget(self._progress_key(topic, p), layout.PROGRESS_OFFSET)
        return sum(int(off) + 1 for off in await pipe.execute() if off is not None)

    async def watermark(self) -> int | None:
        raw = await self.redis.get(self.names.watermark)
        return int(raw) if raw is not None else None

    # --- reads ----------------------------------------------------------------------------
    async def read(self, customer_id: str) -> RawCustomerState:
        return (await self.read_many([customer_id]))[0]

    async def read_many(self, customer_ids: Sequence[str]) -> list[RawCustomerState]:
        """Several customers' state in one pipelined round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for cid in customer_ids:
            self._queue_read(pipe, cid)
        res = await pipe.execute()
        return [self._raw_from(cid, res[5 * i : 5 * i + 5]) for i, cid in enumerate(customer_ids)]

    def _queue_read(self, pipe: Any, cid: str) -> None:
        k = self.keys(cid)
        pipe.hgetall(k.main)
        pipe.hgetall(k.days)
        pipe.hgetall(k.seen)
        pipe.hgetall(k.tickets)
        pipe.hlen(k.dedupe)

    @staticmethod
    def _raw_from(cid: str, reads: Sequence[Any]) -> RawCustomerState:
        main, days, seen, tickets, ndedupe = reads

        def conv(d: dict[Any, Any]) -> dict[str, str]:
            return {text(a): text(b) for a, b in d.items()}

        fields = conv(main)
        fields.pop(layout.OWNER, None)  # fencing bookkeeping, not the customer's state
        return RawCustomerState(cid, fields, conv(days), conv(seen), conv(tickets), int(ndedupe))

    async def memory_usage(self, customer_id: str) -> int:
        """Bytes Redis reports (``MEMORY USAGE``) over all of this customer's keys."""
        total = 0
        for key in self.keys(customer_id).all():
            n = await self.redis.memory_usage(key, samples=0)
            total += int(n or 0)
        return total

    async def customer_ids(self, count: int = 1000) -> list[str]:
        """Customer ids present in Redis (SCAN; for tools and tests, not the hot path)."""
        out: list[str] = []
        async for key in self.redis.scan_iter(match=layout.customer_pattern(self.prefix), count=1000):
            k = text(key)
            if k.endswith("}"):
                out.append(layout.customer_of_main_key(self.prefix, k))
                if len(out) >= count:
                    break
        return out


#: customers per write call on a single Redis (a drain of thousands: a few calls, none too long)
_WRITE_CHUNK = 64
_OWNED_SCRIPTS = {name: resources.files("stream_app.state").joinpath(f"lua/{name}_state.lua").read_text()
                  for name in ("load", "write")}

_MAX_SCRIPT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

#: ARGV: offset, newest event time, idle, low watermark; then the field names (layout):
#: offset, newest, idle, low
_PROGRESS_SCRIPT = """
local OFF, NEWEST, IDLE, LOW = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if redis.call('HEXISTS', KEYS[1], OFF) == 0 then redis.call('HSET', KEYS[1], OFF, -1) end
local cur = tonumber(redis.call('HGET', KEYS[1], OFF))
if tonumber(ARGV[1]) > cur then
  redis.call('HSET', KEYS[1], OFF, ARGV[1])
  local wm = tonumber(redis.call('HGET', KEYS[1], NEWEST) or '-1')
  if tonumber(ARGV[2]) > wm then redis.call('HSET', KEYS[1], NEWEST, ARGV[2]) end
end
if tonumber(ARGV[1]) >= cur then redis.call('HSET', KEYS[1], IDLE, ARGV[3]) end
local lw = tonumber(redis.call('HGET', KEYS[1], LOW) or '-1')
if tonumber(ARGV[4]) > lw then redis.call('HSET', KEYS[1], LOW, ARGV[4]) end
return 1
"""


async def wait_for_redis(client: aioredis.Redis, timeout_s: float = 30.0) -> None:
    """Block until Redis answers PING (start-up ordering), or raise TimeoutError."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            await client.ping()
            return
        except Exception:  # noqa: BLE001 - any failure means "not yet"
            if loop.time() > deadline:
                raise TimeoutError("Redis did not answer PING") from None
            await asyncio.sleep(0.2)


async def delete_prefix(redis: Any, prefix: str) -> int:
    """Unlink every key under ``prefix`` (SCAN in batches); returns how many. For tools (a
    backtest's private prefix, a rebuild's wiped deployment), never the hot path."""
    deleted = 0
    batch: list[Any] = []
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += await redis.unlink(*batch)
            batch = []
    if batch:
        deleted += await redis.unlink(*batch)
    return deleted
