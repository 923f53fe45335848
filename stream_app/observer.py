"""The ingestor's observation points: what operations (metrics, the watchdog) see of a batch.

The ingestor calls an optional observer at three points of ``Ingestor.handle``; everything
else operations need (counters, alerts, the model) is read from the pipeline's own state at
scrape time. ``now`` is the ingestor's wall clock in seconds, comparable with a record's
Kafka timestamp (``Record.timestamp_ms``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

if TYPE_CHECKING:
    from .ingest import Record


class PipelineObserver(Protocol):
    """Receives the stages of each batch the ingestor handles."""

    async def received(self, records: Sequence["Record"], now: float) -> None:
        """A batch arrived, before anything is applied. May wait: after an agent crash the
        watchdog holds ingestion here until the process exits (and test-only fault injection
        freezes or crashes an agent here)."""

    def applied(self, records: Sequence["Record"], now: float) -> None:
        """The batch's valid events are applied to Redis and its dead letters acknowledged."""

    def published(self, records: Sequence["Record"], now: float) -> None:
        """The batch is done: scores and alerts published, partition progress saved."""
