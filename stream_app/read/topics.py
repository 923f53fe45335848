"""Read a whole topic from the beginning (tools, tests, evaluations).

Uses manually assigned partitions, not a consumer group, so it works against any broker
(including the embedded one, whose consumer groups kafka-python cannot join) and leaves no
committed offsets behind.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_topic(bootstrap: list[str] | str, topic: str, **client_kwargs: Any) -> list[dict[str, Any]]:
    """Every JSON message of ``topic`` (all partitions), from the first offset to the end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_kwargs)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()  # the topic may be new to this client
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            return []
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        while len(out) < sum(ends.values()):
            batch = await consumer.getmany(*tps, timeout_ms=2000)
            if not batch:
                break
            for msgs in batch.values():
                out.extend(orjson.loads(m.value) for m in msgs)
        return out
    finally:
        await consumer.stop()
