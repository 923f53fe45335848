"""Input records -> ordered, exactly-once effects in Redis; dead letters to Kafka.

Independent of Faust (the app wiring hands it records and acknowledges what it returns), so
it is tested directly against a real Redis. Per batch:

1. load each new partition's progress (highest handled offset, newest event time) and skip
   records at or below it (redelivered after a crash or a rebalance);
2. decode and validate the rest in offset order; invalid ones are dead-lettered (and the
   broker's acknowledgement awaited), valid ones are held by their partition group
   (``ordering.GroupAligner``) under their event-time order key;
3. release what the group's watermark (and the model checkpoint gate) allows, in order, and
   apply + score it one event per customer at a time (``scorer.Scorer.process``);
4. save each partition's progress (the prefix of offsets that is done) and return the
   records that are done: only those may be acknowledged to Kafka. Held records are not,
   so their offsets are never committed and a crash re-delivers them.

While Redis or the broker is down, work is retried with back-off and nothing is acknowledged.
All of it runs under one lock: the four topics' agents take turns, because the order of
effects, not just their set, is what makes a replay reproduce the same scores and alerts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, ParamSpec, Sequence, TypeVar

from schemas import DeadLetter, format_errors
from stream_app.core import HOUR_MS, STATE_LOST_HELP, TP, TRANSIENT_ERRORS, Outputs, Record, RecordKey, StateLostError
from stream_app.model.checkpoints import ModelHolder
from stream_app.model.learner import Learner
from stream_app.pipeline.decoding import check_not_future, decode
from stream_app.pipeline.observer import PipelineObserver
from stream_app.pipeline.ordering import END_OF_TIME, GroupAligner
from stream_app.pipeline.scorer import Scorer
from stream_app.settings import INPUT_TOPICS, Settings
from stream_app.state.layout import Keys
from stream_app.state.store import SourcedEvent, StateStore

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class IngestStats:
    """Running counters (per real topic name)."""

    applied: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    redelivered: Counter[str] = field(default_factory=Counter)
    dead_lettered: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    redis_retries: int = 0

    def total(self, name: str) -> int:
        return sum(getattr(self, name).values())


class Ingestor:
    """Applies records exactly once and in event-time order; dead-letters what fails."""

    def __init__(
        self,
        store: StateStore,
        settings: Settings,
        outputs: Outputs,
        clock: Callable[[], float] = time.time,
        model: ModelHolder | None = None,
        inline_learner: bool = True,
        observer: PipelineObserver | None = None,  # ops: metrics and watchdog (stream_app/ops/health.py)
    ) -> None:
        self.observer = observer
        self.store = store
        self.clock = clock
        self.settings = settings
        self.outputs = outputs
        self.model = model or ModelHolder(settings.sections.model, settings.key_prefix)
        self.scorer = Scorer(store, settings, outputs, self.model, epoch_check=self._epoch_unchanged)
        #: the learner runs here when this process is the only one (tests, backtests); the
        #: worker runs it on the Faust leader instead
        self.learner = Learner(store, settings, outputs) if inline_learner else None
        self.stats = IngestStats()
        self._tolerance_ms = int(settings.future_tolerance_hours * HOUR_MS)
        self._stopping = False
        self._topics = [settings.topic(t) for t in INPUT_TOPICS]
        self.groups: dict[int, GroupAligner[SourcedEvent]] = {}
        self._loaded: set[TP] = set()
        self._lock = asyncio.Lock()
        #: partitions that had no progress in Redis when assigned -> their log start offset
        self._fresh: dict[TP, int] = {}
        self._epoch: bytes | None = None
        #: the partitions the worker owns (None: not managed, e.g. tests feeding by hand)
        self._assigned: set[TP] | None = None
        self._tick_ms = int(settings.score_tick_s * 1000)

    def stop(self) -> None:
        """Stop retrying (shutdown): the current batch is abandoned un-acknowledged."""
        self._stopping = True

    def group(self, partition: int) -> GroupAligner[SourcedEvent]:
        g = self.groups.get(partition)
        if g is None:
            g = self.groups[partition] = GroupAligner(self._topics)
        return g

    def owns(self, tp: TP) -> bool:
        return self._assigned is None or tp in self._assigned

    def held(self) -> int:
        return sum(g.held() for g in self.groups.values())

    # --- assignment ----------------------------------------------------------------------------
    async def assign(self, log_ends: dict[TP, int], log_starts: dict[TP, int] | None = None) -> None:
        """The partitions this worker now owns, with their log-end (and log-start) offsets. A
        partition with records this worker has not seen yet holds its group's watermark back
        until they come."""
        async with self._lock:
            await self._check_epoch(create=True)
            if self._assigned is None:
                self._assigned = set()
            new = {tp for tp in log_ends if tp[0] in self._topics and tp not in self._assigned}
            self._assigned.update(new)
            # fencing: this worker's generation of each group it now owns (state.owned)
            await self._retry(self.scorer.owned.claim, {tp[1] for tp in new})
            for tp, end in sorted(log_ends.items()):
                if tp[0] not in self._topics or tp in self._loaded:
                    continue
                prog = await self._retry(self.store.get_progress, *tp)
                handled, wm = prog if prog is not None else (-1, -1)
                caught_up = end <= handled + 1
                if prog is None:
                    await self._retry(self.store.ensure_progress, tp[0], tp[1], caught_up)
                    if log_starts is not None:
                        self._fresh[tp] = log_starts.get(tp, 0)
                self.group(tp[1]).known(tp, handled, wm, caught_up)
                self._loaded.add(tp)

    async def check_state(self) -> None:
        """Raise ``StateLostError`` if Redis lost the state (the app checks this periodically,
        so an idle worker notices too)."""
        if self._epoch is not None:
            async with self._lock:
                await self._check_epoch()

    async def _epoch_unchanged(self) -> None:
        """Before a drain's outputs go out: Redis may have restarted empty while it ran."""
        if self._epoch is not None:
            await self._check_epoch()

    async def _check_epoch(self, create: bool = False) -> None:
        """Redis restarted empty (or was flushed) under a running deployment: detect it by
        the epoch marker this worker saw, instead of silently building on a blank state."""
        key = Keys(self.settings.key_prefix).epoch
        if create and self._epoch is None:
            await self._retry(self.store.redis.set, key, f"{self.clock():.0f}", nx=True)
        current = await self._retry(self.store.redis.get, key)
        if self._epoch is None:
            self._epoch = current
        elif current != self._epoch:
            raise StateLostError(f"Redis lost this deployment's state: the marker {key} is gone. " + STATE_LOST_HELP)

    async def revoke(self, tps: set[TP]) -> None:
        """Partitions now owned elsewhere: forget their held records (re-fetched there).
        Waits for the batch in hand, so nothing of a revoked partition is applied after."""
        async with self._lock:
            self._forget(tps)

    def _forget(self, tps: set[TP]) -> None:
        """No longer this worker's: the partitions' bookkeeping, held records and customers."""
        for tp in tps:
            self._loaded.discard(tp)
            self._fresh.pop(tp, None)
            if self._assigned is not None:
                self._assigned.discard(tp)
            if tp[1] in self.groups:
                self.groups[tp[1]].drop({tp})
        self.scorer.owned.release({tp[1] for tp in tps})

    def _fenced(self, groups: set[int]) -> None:
        """Another worker owns these partition groups now (a rebalance this worker has not
        heard of yet, or a long pause): stop handling them; their records stay unacknowledged
        and their customers leave this worker's memory."""
        log.error("partition groups %s are owned by another worker now: dropping them until reassigned",
                  sorted(groups))
        self._forget({tp for tp in (self._assigned or set()) | self._loaded if tp[1] in groups})
        for g in groups:
            self.groups.pop(g, None)
        self.scorer.owned.release(groups)

    # --- records ---------------------------------------------------------------------------
    async def handle(self, records: Sequence[Record]) -> list[RecordKey]:
        """Take a batch; returns the keys of records now done (safe to acknowledge), which
        may include records held from earlier batches. The others are held."""
        if not records:
            return []
        if self.observer is not None:  # ops observation point 1/3
            await self.observer.received(records, self.clock())
        async with self._lock:
            done = await self._take(records)
            done.extend(await self._pump())
            self.stats.batches += 1
            if self.observer is not None:  # ops observation point 2/3
                self.observer.handled(records, done, self.clock())
            return done

    async def pump(self) -> list[RecordKey]:
        """Release what became releasable without new input (the learner moved on, a
        partition caught up); the app calls it periodically."""
        if self._lock.locked():  # a batch is being handled: it pumps on its way out
            return []
        async with self._lock:
            done = await self._pump()
            if self.observer is not None and done:  # ops observation point 3/3
                self.observer.done(done, self.clock())
            return done

    async def _take(self, records: Sequence[Record]) -> list[RecordKey]:
        logical = self.settings.input_topics
        # The contract bounds ts to 24 h past "the newest event time seen". A partition's
        # newest event time alone would reject legitimate events after a quiet weekend on a
        # sparse partition, so the wall clock may only *relax* the bound: history replayed
        # later is judged by event time exactly as it was live (it is behind the clock).
        wall_ms = int(self.clock() * 1000)
        incoming = {(r.topic, r.partition) for r in records if self.owns((r.topic, r.partition))}
        for tp in sorted(incoming - self._loaded):
            prog = await self._retry(self.store.get_progress, *tp)
            handled, wm = prog if prog is not None else (-1, -1)
            self.group(tp[1]).known(tp, handled, wm, False)
            self._loaded.add(tp)
        if self._epoch is not None:
            await self._check_epoch()
        done: list[RecordKey] = []
        dead: list[tuple[RecordKey, DeadLetter]] = []
        last: dict[TP, Record] = {}
        for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
            tp = (r.topic, r.partition)
            if not self.owns(tp):
                continue  # fetched before a rebalance took the partition away: its new owner applies it
            g = self.group(r.partition)
            track = g.track(tp)
            if r.offset <= track.handled:
                self.stats.redelivered[r.topic] += 1
                done.append((r.topic, r.partition, r.offset))
                continue
            if r.offset <= track.received:
                continue  # delivered again while still held here: it stays held
            start = self._fresh.pop(tp, None)
            if start is not None and r.offset > start:
                raise StateLostError(
                    f"Redis has no progress for {tp[0]}[{tp[1]}] but the consumer group resumes it at offset "
                    f"{r.offset} (log start {start}): the state of the records before it is gone. " + STATE_LOST_HELP)
            last[tp] = r
            result = decode(r.value, logical.get(r.topic, ""), self.settings.max_message_bytes)
            if not isinstance(result, list):
                reference = max(track.newest, wall_ms)
                future = check_not_future(result, reference, self._tolerance_ms)
                if future is None:
                    g.receive(tp, r.offset, result.ts_ms, SourcedEvent(result, r.topic, r.partition, r.offset))
                    continue
                result = [future]
            g.receive(tp, r.offset, None)
            dead.append(((r.topic, r.partition, r.offset), DeadLetter.from_bytes(
                r.value or b"", topic=r.topic, partition=r.partition, offset=r.offset,
                error=format_errors(result), errors=result, received_at=datetime.now(timezone.utc),
                max_payload_bytes=self.settings.max_message_bytes,
            )))
        if dead:
            await self._retry(self.outputs.dead_letters, [d for _, d in dead])
            for key, d in dead:
                self.stats.dead_lettered[d.topic] += 1
                log.warning("dead-lettered %s: %s", d.dead_letter_id, d.error)
                self.group(key[1]).done((key[0], key[1]), key[2])
                done.append(key)
        for tp, r in last.items():
            if r.highwater is not None:
                self.group(tp[1]).caught_up(tp, r.offset + 1 >= r.highwater)
        await self._save_progress(set(last))
        return done

    async def _pump(self) -> list[RecordKey]:
        done: list[RecordKey] = []
        while True:
            first = min((k for g in self.groups.values()
                         if (k := g.min_held_k()) is not None and k < g.watermark()), default=None)
            if first is None:
                break
            gate = await self._retry(self.model.gate_ms, self.store.redis, first)
            released = [p for g in self.groups.values() for p in g.release(min(gate, self._tick_floor(g.watermark())))]
            if released:
                fenced = await self._retry(self.scorer.process, released)
                if fenced:
                    released = [p for p in released if p.tp[1] not in fenced]
                    self._fenced(fenced)
                for p in released:
                    tp = p.tp
                    self.group(tp[1]).done(tp, p.key[3])
                    self.stats.applied[tp[0]] += 1
                    done.append((tp[0], tp[1], p.key[3]))
                await self._save_progress({p.tp for p in released})
            if self.learner is None or not await self._retry(self.learner.advance):
                break
        if self.settings.portfolio_enabled:
            # the segmentation learns the days the churn learner completed (cheap when none), also
            # when no event follows them: a quiet stream's final state does not wait for the next
            await self._retry(self.scorer.portfolio.prepare, self.store.redis)
        return done

    def _tick_floor(self, watermark: int) -> int:
        """With score ticks, release whole ticks only: a tick's events are scored together,
        whatever the batches were."""
        if self._tick_ms <= 0 or watermark >= END_OF_TIME:
            return END_OF_TIME
        return watermark // self._tick_ms * self._tick_ms

    async def _save_progress(self, tps: set[TP]) -> None:
        for tp in sorted(tps):
            t = self.group(tp[1]).track(tp)
            await self._retry(self.store.set_progress, tp[0], tp[1], t.handled, t.wm,
                              t.is_caught_up and not t.open, t.low_watermark)

    async def _retry(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` until it succeeds; back off while Redis (or the broker) is away."""
        delay = 0.1
        while True:
            try:
                return await fn(*args, **kwargs)
            except TRANSIENT_ERRORS as exc:
                if self._stopping:
                    raise
                self.stats.redis_retries += 1
                log.error(
                    "dependency unavailable (%s: %s); nothing acknowledged, retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.redis_retry_max_s)
