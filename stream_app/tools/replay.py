"""Produce a JSON Lines file of contract events to Kafka (``stream-app replay``).

Each line is one contract event plus a ``topic`` field naming its input topic, logical
(``activity``) or real (``cs.activity``). The line is produced byte-for-byte as written (the
contract ignores the extra ``topic`` field), keyed by ``customer_id`` so a customer's events
stay in one partition and in order; invalid events are produced too, for the worker to
dead-letter. A line that is not a JSON object with a known
topic cannot be routed: it is reported (line number and reason), never dropped silently.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import orjson
from aiokafka import AIOKafkaProducer

from stream_app.settings import INPUT_TOPICS, Settings
from stream_app.tools.embedded import ensure_topics


@dataclass
class ReplayReport:
    produced: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    unroutable: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.produced / self.seconds if self.seconds else 0.0


def open_lines(path: str | Path) -> Iterator[bytes]:
    p = Path(path)
    raw = gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")  # noqa: SIM115
    with raw as fh:
        for line in io.BufferedReader(fh):  # type: ignore[arg-type]
            yield line.rstrip(b"\r\n")


def route(line: bytes, settings: Settings) -> tuple[str, bytes | None, bytes] | str:
    """(real topic, key, value) for one line, or the reason it cannot be routed.

    >>> s = Settings(_env_file=None)
    >>> route(b'{"topic":"activity","customer_id":"c1","event_id":"e"}', s)
    ('cs.activity', b'c1', b'{"topic":"activity","customer_id":"c1","event_id":"e"}')
    >>> route(b'[1]', s)
    'not a JSON object'
    """
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:  # the stdlib also reads NaN/Infinity: route it, let the worker reject it
            obj = json.loads(line)
        except (ValueError, RecursionError):
            return f"invalid JSON: {exc}"
    if not isinstance(obj, dict):
        return "not a JSON object"
    topic = obj.get("topic")
    if not isinstance(topic, str):
        return "missing 'topic' field"
    logical = topic[len(settings.topic_prefix) :] if topic.startswith(settings.topic_prefix) else topic
    if logical not in INPUT_TOPICS:
        return f"unknown topic {topic!r} (expected one of {', '.join(INPUT_TOPICS)})"
    cid = obj.get("customer_id")
    key = cid.encode() if isinstance(cid, str) else None
    return settings.topic(logical), key, line


async def replay(
    path: str | Path,
    settings: Settings,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Produce every routable line; ``rate`` caps events/s (None: as fast as possible)."""

    # A producer would otherwise auto-create missing topics with the broker's default
    # partition count, not ours (and a customer's events would then be keyed elsewhere).
    await ensure_topics(
        settings.bootstrap_servers(),
        {settings.topic(t): settings.topic_partitions for t in INPUT_TOPICS},
        settings.topic_replication,
        settings.kafka_client_kwargs(),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers(),
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        enable_idempotence=False,
        **settings.kafka_client_kwargs(),  # type: ignore[arg-type]
    )
    await producer.start()
    report = ReplayReport()
    started = time.monotonic()
    pending: list[asyncio.Future[object]] = []
    try:
        for lineno, line in enumerate(open_lines(path), start=1):
            if not line.strip():
                continue
            routed = route(line, settings)
            if isinstance(routed, str):
                report.unroutable.append((lineno, routed))
                continue
            topic, key, value = routed
            pending.append(await producer.send(topic, value=value, key=key))
            report.produced += 1
            report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
            if rate:
                ahead = report.produced / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if on_progress and report.produced % 1000 == 0:
                on_progress(report.produced)
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    report.seconds = time.monotonic() - started
    if on_progress:
        on_progress(report.produced)
    return report
