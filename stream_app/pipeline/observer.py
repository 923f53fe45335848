"""The ingestor's observation points: what operations (metrics, the watchdog) see of records.

The ingestor calls an optional observer when a batch arrives, when it returns from it, and
when held records are done later;
everything else operations need (counters, alerts, the model) is read from the pipeline's own
state at scrape time. ``now`` is the ingestor's wall clock in seconds, comparable with a
record's Kafka timestamp (``Record.timestamp_ms``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from stream_app.core import Record, RecordKey


class PipelineObserver(Protocol):
    """Receives the arrival of each batch and the records the ingestor finished."""

    async def received(self, records: Sequence[Record], now: float) -> None:
        """A batch arrived, before anything is taken. May wait: after an agent crash the
        watchdog holds ingestion here until the process exits (and test-only fault injection
        freezes or crashes an agent here)."""

    def handled(self, records: Sequence[Record], done: Sequence[RecordKey], now: float) -> None:
        """The ingestor returned from the batch ``records``: each is done or held now. ``done``:
        the records now done (of this batch or held from earlier ones)."""

    def done(self, keys: Sequence[RecordKey], now: float) -> None:
        """Records done outside a batch (``Ingestor.pump``): applied and scored (alerts and
        scores published), dead-lettered, or skipped as redelivered; their offsets may be
        committed."""
