"""Test helpers: an ingestor on a real Redis, fed records with increasing offsets."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from schemas import DeadLetter
from stream_app.scoring.aggregates import compute_aggregates
from stream_app.pipeline.ingest import Ingestor
from stream_app.core import Record
from stream_app.settings import Settings
from stream_app.state.store import StateStore

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # a Monday
DAY = timedelta(days=1)


def ev(topic: str, eid: str, at: datetime, cid: str = "acme", **fields: Any) -> tuple[str, bytes]:
    body = {"event_id": eid, "customer_id": cid, "ts": at.isoformat(), **fields}
    return topic, json.dumps(body).encode()


class ListOutputs:
    """Collects what the pipeline publishes (the Kafka side is covered by the e2e tests)."""

    def __init__(self) -> None:
        self.dead: list[DeadLetter] = []
        self.alert_list: list[Any] = []
        self.score_list: list[Any] = []
        self.example_list: list[dict[str, Any]] = []

    async def dead_letters(self, letters: list[DeadLetter]) -> None:
        self.dead.extend(letters)

    async def alerts(self, alerts: list[Any]) -> None:
        self.alert_list.extend(alerts)

    async def scores(self, scores: list[Any]) -> None:
        self.score_list.extend(scores)

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        self.example_list.extend(examples)


class Harness:
    """An ingestor on a real Redis, fed records with increasing offsets per partition."""

    def __init__(self, settings: Settings, redis_client: Any) -> None:
        self.settings = settings
        self.store = StateStore(redis_client, settings)
        self.out = ListOutputs()
        self.dead = self.out.dead
        self.clock_s = 4_000_000_000.0  # wall clock for the future-ts bound: far after test data
        self.ingestor = Ingestor(self.store, settings, self.out, clock=lambda: self.clock_s)
        self.offsets: dict[tuple[str, int], int] = {}

    def records(self, items: list[tuple[str, bytes]], partition: int = 0, lag: int = 0) -> list[Record]:
        """Records with the next offsets; ``lag`` more records wait behind them in the log."""
        out = []
        for logical, value in items:
            topic = self.settings.topic(logical)
            off = self.offsets.get((topic, partition), -1) + 1
            self.offsets[(topic, partition)] = off
            out.append(Record(topic, partition, off, value))
        ends = {(r.topic, r.partition): r.offset + 1 + lag for r in out}
        return [Record(r.topic, r.partition, r.offset, r.value, ends[(r.topic, r.partition)]) for r in out]

    async def feed(self, items: list[tuple[str, bytes]], partition: int = 0, lag: int = 0) -> list[Record]:
        """Hand records to the ingestor as one batch (partition ``partition`` of each topic)."""
        recs = self.records(items, partition, lag)
        await self.ingestor.handle(recs)
        return recs

    async def agg(self, cid: str = "acme", now: datetime | None = None):
        raw = await self.store.read(cid)
        now_ms = int(now.timestamp() * 1000) if now else None
        return compute_aggregates(raw, now_ms, self.settings.windows_days)
