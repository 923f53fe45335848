"""Rebuild Redis state from Kafka: when Redis lost its data, the input topics still hold it.

``stream-app rebuild`` (workers stopped) deletes what is left under the key prefix, reads
every input partition from its earliest offset up to the consumer group's committed offset
with manually assigned consumers (no group membership), and runs those records through the
same ``Ingestor`` as the worker (ordering, scoring, labels and learner included). The
committed offsets are a consistent cut: a record is acknowledged only once every record
ordered before it in its partition group is done, so what is rebuilt is exactly what the
workers had done, and they resume from there as if nothing happened. Alerts, scores and
dead letters of the rebuilt records are NOT published again: they went out the first time
(a record is committed only after its outputs were acknowledged), and re-paging people for
last month's alerts is not a recovery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import Alert, DeadLetter, ScoreSnapshot
from stream_app.core import Record
from stream_app.pipeline.ingest import Ingestor
from stream_app.settings import INPUT_TOPICS, Settings
from stream_app.state.layout import Keys
from stream_app.state.store import StateStore, delete_prefix

log = logging.getLogger(__name__)


@dataclass
class CountingOutputs:
    """Outputs that publish nothing and count what would have been published."""

    counts: dict[str, int] = field(default_factory=lambda: {"dead_letters": 0, "alerts": 0, "scores": 0, "examples": 0})

    async def dead_letters(self, letters: list[DeadLetter]) -> None:
        self.counts["dead_letters"] += len(letters)

    async def alerts(self, alerts: list[Alert]) -> None:
        self.counts["alerts"] += len(alerts)

    async def scores(self, scores: list[ScoreSnapshot]) -> None:
        self.counts["scores"] += len(scores)

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        self.counts["examples"] += len(examples)


def epoch_key(settings: Settings) -> str:
    return Keys(settings.key_prefix).epoch


async def clear_state(redis: Any, settings: Settings) -> int:
    """Delete every key under the deployment's prefix; returns how many."""
    return await delete_prefix(redis, settings.key_prefix)


async def committed_offsets(settings: Settings, tps: list[Any], starts: dict[Any, int]) -> dict[Any, int]:
    """The consumer group's committed offset per partition (the log start where none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), group_id=settings.app_id,
                                enable_auto_commit=False, **settings.kafka_client_kwargs())
    await consumer.start()
    try:
        out = {}
        for tp in tps:
            committed = await consumer.committed(tp)
            out[tp] = max(committed, starts[tp]) if committed is not None else starts[tp]
        return out
    finally:
        await consumer.stop()


async def rebuild(settings: Settings, redis: Any, progress: Callable[[int, int], None] | None = None,
                  batch: int = 2000) -> dict[str, Any]:
    """Replay every input partition from its earliest offset into a cleared Redis."""
    kwargs = settings.kafka_client_kwargs()
    deleted = await clear_state(redis, settings)
    reader = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False,
                              auto_offset_reset="earliest", max_poll_records=batch, **kwargs)
    await reader.start()
    try:
        await reader._client.force_metadata_update()
        tps = [TopicPartition(settings.topic(t), p) for t in INPUT_TOPICS
               for p in sorted(reader.partitions_for_topic(settings.topic(t)) or ())]
        starts = await reader.beginning_offsets(tps)
        ends = await committed_offsets(settings, tps, starts)
        total = sum(ends[tp] - starts[tp] for tp in tps)
        outputs = CountingOutputs()
        ingestor = Ingestor(StateStore(redis, settings), settings, outputs)
        await ingestor.assign({(tp.topic, tp.partition): ends[tp] for tp in tps})
        todo = [tp for tp in tps if ends[tp] > starts[tp]]
        reader.assign(todo)
        for tp in todo:
            reader.seek(tp, starts[tp])
        done = 0
        while todo:
            got = await reader.getmany(*todo, timeout_ms=1000, max_records=batch)
            records = [Record(tp.topic, tp.partition, m.offset, m.value, ends[tp])
                       for tp, msgs in got.items() for m in msgs if m.offset < ends[tp]]
            if records:
                await ingestor.handle(records)
                done += len(records)
                if progress:
                    progress(done, total)
            finished = [tp for tp in todo if await reader.position(tp) >= ends[tp]]
            if finished:
                reader.pause(*finished)
                todo = [tp for tp in todo if tp not in finished]
        while ingestor.held():  # the tail waits for nothing now: every partition is at its end
            if not await ingestor.pump():
                log.warning("rebuild: %d records still held after the end", ingestor.held())
                break
    finally:
        await reader.stop()
    await redis.set(epoch_key(settings), "rebuilt")
    return {"deleted_keys": deleted, "records": done, "partitions": len(tps),
            "not_republished": outputs.counts, "model_labels": ingestor.learner.learned if ingestor.learner else 0}
