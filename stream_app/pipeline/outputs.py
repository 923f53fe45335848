"""The pipeline's outputs on Kafka: each send awaited until the broker acknowledged it."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import orjson

from schemas import Alert, DeadLetter, ScoreSnapshot


class FaustOutputs:
    """Publishes to the output topics and waits for the broker's acknowledgements."""

    def __init__(self, topics: dict[str, faust.TopicT]) -> None:
        self.topics = topics

    async def _send(self, topic: str, items: list[tuple[bytes | None, bytes]]) -> None:
        t = self.topics[topic]
        futures = [await t.send(key=k, value=v) for k, v in items]
        await asyncio.gather(*futures)

    async def dead_letters(self, letters: list[DeadLetter]) -> None:
        await self._send("deadletter", [(d.dead_letter_id.encode(), d.model_dump_json().encode()) for d in letters])

    async def alerts(self, alerts: list[Alert]) -> None:
        await self._send("alerts", [(a.customer_id.encode(), a.model_dump_json().encode()) for a in alerts])

    async def scores(self, scores: list[ScoreSnapshot]) -> None:
        await self._send("scores", [(s.customer_id.encode(), s.model_dump_json().encode()) for s in scores])

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        await self._send("examples", [(None, orjson.dumps(e)) for e in examples])
