"""One batch of input records -> customer state in Redis, dead letters to Kafka.

Independent of Faust (the app wiring hands it records), so it is tested directly against
a real Redis. The order of effects is what makes a crash anywhere harmless:

1. read each partition's progress (highest handled offset, newest event time);
2. skip records at or below it; decode and validate the rest, in offset order;
3. apply valid events (atomic per customer, with offset and event_id bookkeeping);
4. publish dead letters and wait for the broker's acknowledgement;
5. refresh the touched customers' scores and alerts (``scorer.Scorer``);
6. advance each partition's progress, then resolve the labels the watermark made due.

A crash before 6 replays the batch: step 3 recognises what it already applied, step 5
re-derives the same alerts with the same ids, a dead letter may be published again with
the same ``dead_letter_id`` (at-least-once, keyed for de-duplication). While Redis or the broker is down the batch is retried with back-off
and never acknowledged, so Kafka offsets are never committed past unapplied records.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, ParamSpec, Sequence, TypeVar

from aiokafka.errors import KafkaError

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import BusyLoadingError

from schemas import DeadLetter, format_errors

from .alerts import Trigger

from .decoding import check_not_future, decode
from .settings import Settings
from .scorer import ModelHolder, Outputs, Scorer, triggers_of
from .state import ALREADY_APPLIED, APPLIED, DUPLICATE, SourcedEvent, StateStore

log = logging.getLogger(__name__)

#: Errors worth waiting out (the server is away), as opposed to bugs.
TRANSIENT_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ConnectionError,
    OSError,
    KafkaError,
    asyncio.TimeoutError,
)
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True)
class Record:
    """A Kafka record as the ingestor sees it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    #: the partition's log-end offset when fetched (None: unknown); a partition whose records
    #: are all handled is idle and does not hold the event-time watermark back
    highwater: int | None = None


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
    """Applies batches of records exactly once (effects), dead-letters what fails."""

    def __init__(
        self,
        store: StateStore,
        settings: Settings,
        outputs: Outputs,
        clock: Callable[[], float] = time.time,
        model: ModelHolder | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.outputs = outputs
        self.scorer = Scorer(store, settings, outputs, model or ModelHolder(settings))
        self._last_resolve = 0.0
        self.stats = IngestStats()
        self._tolerance_ms = int(settings.future_tolerance_hours * 3_600_000)
        self._stopping = False

    def stop(self) -> None:
        """Stop retrying (shutdown): the current batch is abandoned un-acknowledged."""
        self._stopping = True

    async def handle(self, records: Sequence[Record]) -> None:
        """Process one batch; returns only once every record is applied or dead-lettered."""
        if not records:
            return
        logical = self.settings.input_topics
        parts = sorted({(r.topic, r.partition) for r in records})
        # The contract bounds ts to 24 h past "the newest event time seen". A partition's
        # newest event time alone would reject legitimate events after a quiet weekend on a
        # sparse partition, so the wall clock may only *relax* the bound: history replayed
        # later is judged by event time exactly as it was live (it is behind the clock).
        wall_ms = int(self.clock() * 1000)
        progress = await self._retry(self._load_progress, parts)

        valid: list[SourcedEvent] = []
        dead: list[DeadLetter] = []
        newest: dict[tuple[str, int], int] = {}
        top_offset: dict[tuple[str, int], int] = {}
        for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
            tp = (r.topic, r.partition)
            handled, wm = progress.get(tp, (-1, -1))
            top_offset[tp] = max(top_offset.get(tp, -1), r.offset)
            if r.offset <= handled:
                self.stats.redelivered[r.topic] += 1
                continue
            reference = max(wm, newest.get(tp, -1), wall_ms)
            result = decode(r.value, logical.get(r.topic, ""), self.settings.max_message_bytes)
            if not isinstance(result, list):
                future = check_not_future(result, reference, self._tolerance_ms)
                if future is None:
                    valid.append(SourcedEvent(result, r.topic, r.partition, r.offset))
                    newest[tp] = max(newest.get(tp, -1), result.ts_ms)
                    continue
                result = [future]
            dead.append(
                DeadLetter.from_bytes(
                    r.value or b"",
                    topic=r.topic,
                    partition=r.partition,
                    offset=r.offset,
                    error=format_errors(result),
                    errors=result,
                    received_at=datetime.now(timezone.utc),
                    max_payload_bytes=self.settings.max_message_bytes,
                )
            )

        # customers whose state this batch changed (or may have changed before a crash)
        touched: dict[str, list[Trigger]] = {}
        if valid:
            statuses = await self._retry(self.store.apply, valid)
            for se, status in zip(valid, statuses):
                if status == DUPLICATE:
                    self.stats.duplicates[se.topic] += 1
                    continue
                if status == APPLIED:
                    self.stats.applied[se.topic] += 1
                elif status == ALREADY_APPLIED:
                    self.stats.redelivered[se.topic] += 1
                triggers = touched.setdefault(se.event.customer_id, [])
                trig = triggers_of(se.event)
                if trig is not None:
                    triggers.append(trig)
        if dead:
            await self._retry(self.outputs.dead_letters, dead)
            for d in dead:
                self.stats.dead_lettered[d.topic] += 1
                log.warning("dead-lettered %s: %s", d.dead_letter_id, d.error)
        highwater: dict[tuple[str, int], int] = {}
        for r in records:
            if r.highwater is not None:
                highwater[(r.topic, r.partition)] = max(highwater.get((r.topic, r.partition), -1), r.highwater)
        batch_progress = {
            tp: (max(progress.get(tp, (-1, -1))[1], newest.get(tp, -1)),
                 highwater.get(tp) is not None and off + 1 >= highwater[tp])
            for tp, off in top_offset.items()
        }
        if touched:
            await self._retry(self.scorer.refresh, touched, batch_progress)
        for tp, off in top_offset.items():
            if off > progress.get(tp, (-1, -1))[0]:
                wm, caught_up = batch_progress[tp]
                await self._retry(self.store.set_progress, tp[0], tp[1], off, wm, caught_up)
        # after progress: the watermark then includes this batch
        if self.clock() - self._last_resolve >= self.settings.label_resolve_interval_s:
            await self._retry(self.scorer.resolve_labels)
            self._last_resolve = self.clock()
        self.stats.batches += 1

    async def _load_progress(self, parts: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        out: dict[tuple[str, int], tuple[int, int]] = {}
        for topic, partition in parts:
            p = await self.store.get_progress(topic, partition)
            if p is not None:
                out[(topic, partition)] = p
        return out

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
                    "dependency unavailable (%s: %s); batch not acknowledged, retrying in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.redis_retry_max_s)
