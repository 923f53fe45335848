"""The alert feed for people: tail ``cs.alerts`` (last N, or from the beginning, then follow)
and render each alert as one coloured line (``stream-app alerts``).

Reads with manually assigned partitions (no consumer group, nothing committed), like
:mod:`stream_app.read.topics`, so any number of people can watch without disturbing anyone.
Alerts are ordered by the time they were published (the Kafka timestamp), newest last.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.text import Text

#: colour per severity (rich styles)
SEVERITY_STYLE: dict[str, str] = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
BAND_STYLE: dict[str, str] = {"green": "green", "yellow": "yellow", "red": "red"}


async def tail_alerts(
    bootstrap: list[str] | str,
    topic: str,
    *,
    last: int | None = 20,
    from_beginning: bool = False,
    follow: bool = False,
    poll_ms: int = 1000,
    backlog_timeout_s: float = 60.0,
    **client_kwargs: Any,
) -> AsyncIterator[dict[str, Any]]:
    """The last ``last`` alerts (all of them with ``from_beginning``), oldest first, then, with
    ``follow``, every new one as it is published. Messages that are not JSON are skipped."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **client_kwargs)
    await consumer.start()
    try:
        parts: set[int] = set()
        while True:
            await consumer._client.force_metadata_update()  # the topic may be new to this client
            parts = consumer.partitions_for_topic(topic) or set()
            if parts or not follow:
                break
            await asyncio.sleep(2)  # following a topic the worker has not created yet
        if not parts:
            return
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            start = begins[tp] if from_beginning or last is None else max(begins[tp], ends[tp] - max(0, last))
            consumer.seek(tp, start)
        # the backlog: read up to the end offsets seen now, order across partitions by publish time
        backlog: list[tuple[int, int, int, dict[str, Any]]] = []
        newer: list[tuple[int, int, int, dict[str, Any]]] = []  # published while reading the backlog
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        deadline = asyncio.get_running_loop().time() + backlog_timeout_s
        while remaining and asyncio.get_running_loop().time() < deadline:
            # an empty fetch is not the end (a busy broker may answer before it has data)
            batch = await consumer.getmany(*remaining, timeout_ms=poll_ms)
            for tp, msgs in batch.items():
                for m in msgs:
                    alert = _decode(m.value)
                    if alert is not None:
                        (backlog if m.offset < ends[tp] else newer).append((m.timestamp, tp.partition, m.offset, alert))
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        backlog.sort(key=lambda t: t[:3])
        if last is not None and not from_beginning:
            backlog = backlog[-last:] if last > 0 else []
        if follow:
            backlog += sorted(newer, key=lambda t: t[:3])
        for *_, alert in backlog:
            yield alert
        while follow:
            batch = await consumer.getmany(timeout_ms=poll_ms)
            for m in sorted((m for msgs in batch.values() for m in msgs), key=lambda m: (m.timestamp, m.partition, m.offset)):
                alert = _decode(m.value)
                if alert is not None:
                    yield alert
    finally:
        await consumer.stop()


def _decode(value: bytes | None) -> dict[str, Any] | None:
    try:
        out = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return out if isinstance(out, dict) else None


def _when(ts: Any) -> str:
    if isinstance(ts, (int, float)):
        return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    try:
        return datetime.fromisoformat(str(ts)).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(ts)


def alert_line(alert: dict[str, Any]) -> Text:
    """One alert as a line: event time, severity (coloured), kind, customer, health, churn
    probability and the top reasons.

    >>> line = alert_line({"ts": "2026-03-02T09:00:00+00:00", "severity": "critical", "kind": "churn_risk",
    ...     "customer_id": "acme", "health_score": 31.5, "health_band": "red", "churn_probability": 0.42,
    ...     "reasons": [{"factor": "engagement", "impact": -20.1}]})
    >>> line.plain
    '2026-03-02 09:00  CRITICAL  churn_risk    acme  health 31.5 red  churn 42%  engagement -20.1'
    >>> [s.style for s in line.spans][:1]
    ['bold red']
    """
    severity = str(alert.get("severity", "info"))
    text = Text()
    text.append(f"{_when(alert.get('ts'))}  ")
    text.append(f"{severity.upper():<8}", style=SEVERITY_STYLE.get(severity, ""))
    text.append(f"  {alert.get('kind', '?')!s:<12}  ")
    text.append(str(alert.get("customer_id", "?")), style="bold")
    band = str(alert.get("health_band", ""))
    if alert.get("health_score") is not None:
        text.append(f"  health {alert['health_score']:.1f} ")
        text.append(band, style=BAND_STYLE.get(band, ""))
    if alert.get("churn_probability") is not None:
        text.append(f"  churn {alert['churn_probability']:.0%}")
    reasons = [r for r in alert.get("reasons") or [] if isinstance(r, dict)][:3]
    if reasons:
        text.append("  " + ", ".join(f"{r.get('factor')} {r.get('impact', 0):+g}" for r in reasons), style="dim")
    return text
