"""What runs inside the worker's event loop: the shared runtime, the ingest agents, the timers.

Each input topic has one agent; all of them hand batches of raw records to the same
``Ingestor``, which holds each record until its partition group's event-time watermark passes
it, then applies and scores in that order. The agent acknowledges only the records the
ingestor reports done; held ones get an extra reference (``incref``) so ``take_events`` does
not acknowledge them, and are acknowledged when they are done, from whichever agent or the
pump timer finished them. Offsets therefore never get committed past unapplied records.
The learner runs on the Faust leader only (one per deployment, a single model).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable

import faust

from stream_app.core import TRANSIENT_ERRORS, Outputs, Record, RecordKey, StateLostError
from stream_app.model.learner import Learner
from stream_app.pipeline.clients import redis_client
from stream_app.pipeline.ingest import Ingestor
from stream_app.pipeline.observer import PipelineObserver
from stream_app.settings import INPUT_TOPICS, Settings
from stream_app.state.store import StateStore

log = logging.getLogger(__name__)


class Runtime:
    """What the agents share inside the worker's event loop, created on first use."""

    def __init__(self, settings: Settings, outputs: Outputs) -> None:
        self.settings = settings
        self.outputs = outputs
        self._ingestor: Ingestor | None = None
        self._learner: Learner | None = None
        self._lock = asyncio.Lock()
        #: records the ingestor holds (not done), by key: acknowledged when done
        self.held: dict[RecordKey, list[Any]] = {}
        self.observer: PipelineObserver | None = None  # set by stream_app.ops.health.mount_ops

    @property
    def current_ingestor(self) -> Ingestor | None:
        """The ingestor, once the first agent created it (None before)."""
        return self._ingestor

    async def ingestor(self) -> Ingestor:
        async with self._lock:
            if self._ingestor is None:
                store = StateStore(redis_client(self.settings), self.settings)
                self._ingestor = Ingestor(store, self.settings, self.outputs, inline_learner=False,
                                          observer=self.observer)
            return self._ingestor

    async def learner(self) -> Learner:
        async with self._lock:
            if self._learner is None:
                store = StateStore(redis_client(self.settings), self.settings)
                self._learner = Learner(store, self.settings, self.outputs)
            return self._learner

    def hold(self, events: list[Any], done: list[RecordKey]) -> None:
        """Keep the not-done events of a batch un-acknowledged; acknowledge held ones now done."""
        finished = set(done)
        ingestor = self._ingestor
        for e in events:
            m = e.message
            key = (m.topic, m.partition, m.offset)
            if key not in finished:
                m.incref()  # never acknowledged here: held, or no longer ours
                if ingestor is None or ingestor.owns((m.topic, m.partition)):
                    self.held.setdefault(key, []).append(e)
        self.release(done)

    def release(self, done: list[RecordKey]) -> None:
        for key in done:
            for e in self.held.pop(key, ()):
                e.ack()

    def forget(self, tps: set[tuple[str, int]]) -> None:
        """Revoked partitions: their held records are re-fetched by the new owner; never ack them."""
        for key in [k for k in self.held if (k[0], k[1]) in tps]:
            del self.held[key]


def ingest_agent(runtime: Runtime) -> Callable[[faust.StreamT], Any]:
    settings = runtime.settings

    async def ingest(stream: faust.StreamT) -> None:
        ingestor = await runtime.ingestor()
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            consumer = stream.app.consumer
            records = [
                Record(e.message.topic, e.message.partition, e.message.offset, e.message.value,
                       consumer.highwater(e.message.tp),
                       timestamp_ms=int(e.message.timestamp * 1000) if e.message.timestamp else None)
                for e in events
            ]
            try:
                done = await ingestor.handle(records)
            except StateLostError as exc:
                _fatal(exc)
            except BaseException:
                # take_events acknowledges the batch in a ``finally`` (so its offsets would
                # be committed); hold one extra reference so a batch that was not fully
                # applied is never acknowledged. It is redelivered after the restart.
                for e in events:
                    e.message.incref()
                raise
            runtime.hold(list(events), done)

    return ingest


def _fatal(exc: Exception) -> None:
    """Stop at once, acknowledging nothing: continuing would build on a wrong state, and a
    supervisor restarting the worker gets the same clear message until someone acts."""
    log.critical("%s", exc)
    logging.shutdown()
    os._exit(3)


def wire_lifecycle(app: faust.App, runtime: Runtime) -> None:
    """Assignment, revocation, the pump, the state check and the learner."""
    settings = runtime.settings
    inputs = {settings.topic(t) for t in INPUT_TOPICS}

    @app.on_partitions_assigned.connect  # type: ignore[misc]
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        tps = [tp for tp in assigned if tp.topic in inputs]
        if not tps:
            return
        beyond = sorted(f"{tp.topic}[{tp.partition}]" for tp in tps if tp.partition >= settings.topic_partitions)
        if beyond:  # partitions added under a running deployment: its customers' records now split
            _fatal(StateLostError(
                f"assigned {', '.join(beyond)} but TOPIC_PARTITIONS={settings.topic_partitions}: partitions were added "
                f"while workers ran; stop every worker, run `stream-app partitions migrate --to <the new count>` "
                f"(docs/operations.md, \"Changing the number of partitions\") and restart with that TOPIC_PARTITIONS"))
        ends = await app.consumer.highwaters(*tps)
        starts = await app.consumer.earliest_offsets(*tps)
        ingestor = await runtime.ingestor()
        try:
            await ingestor.assign({(tp.topic, tp.partition): int(end) for tp, end in ends.items()},
                                  {(tp.topic, tp.partition): int(v) for tp, v in starts.items()})
        except StateLostError as exc:
            _fatal(exc)

    @app.on_partitions_revoked.connect  # type: ignore[misc]
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        tps = {(tp.topic, tp.partition) for tp in revoked if tp.topic in inputs}
        if tps and runtime.current_ingestor is not None:
            await runtime.current_ingestor.revoke(tps)
            runtime.forget(tps)

    # short: records waiting for the model gate (an event-time midnight) or for another
    # partition's progress are released this soon after it moves (the p99 latency)
    @app.timer(0.05, name="stream_app.pump")
    async def pump() -> None:
        # releases what became releasable without new input (the learner completed a day,
        # another worker's progress moved the watermark); with nothing held too: the
        # segmentation learns the days the learner completed after the last batch
        if runtime.current_ingestor is not None:
            try:
                runtime.release(await runtime.current_ingestor.pump())
            except StateLostError as exc:
                _fatal(exc)

    @app.timer(5.0, name="stream_app.state_check")
    async def state_check() -> None:
        if runtime.current_ingestor is not None:
            try:
                await runtime.current_ingestor.check_state()
            except StateLostError as exc:
                _fatal(exc)
            except TRANSIENT_ERRORS:
                pass  # Redis away: the ingest path retries and logs it

    @app.timer(max(settings.label_resolve_interval_s, 0.1), on_leader=True, name="stream_app.learner")
    async def learn() -> None:
        learner = await runtime.learner()
        try:
            await learner.advance()
        except TRANSIENT_ERRORS as exc:  # Redis away: the next tick tries again
            log.error("learner: dependency unavailable (%s: %s)", type(exc).__name__, exc)
