"""Test-only fault injection: freeze or crash ONE ingest agent from inside the worker.

Stopping the whole process (SIGSTOP) would also stop the watchdog and the web server, so it
cannot show what a stalled consumer looks like from the inside. Instead, a batch holding a
record whose raw value contains ``FAULT_FREEZE_MARKER`` blocks its agent forever (the rest of
the worker keeps running: other agents, the watchdog, /health, /metrics), and one containing
``FAULT_CRASH_MARKER`` raises out of the agent. Both settings are unset in production; the
worker logs a warning at start-up when either is set.

Nothing of it runs unless one is set: :func:`faults_for` returns an inert stand-in otherwise, and
the observer calls ``before_batch`` only when ``enabled``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from stream_app.core import Record
from stream_app.settings import OpsSettings

log = logging.getLogger(__name__)


class InjectedFault(RuntimeError):
    """The crash ``FAULT_CRASH_MARKER`` asked for."""


class FaultInjector:
    """Decides, per batch, whether to freeze or crash the agent handling it."""

    def __init__(self, settings: OpsSettings) -> None:
        self.freeze_marker = settings.fault_freeze_marker.encode() if settings.fault_freeze_marker else None
        self.crash_marker = settings.fault_crash_marker.encode() if settings.fault_crash_marker else None
        self._never = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.freeze_marker is not None or self.crash_marker is not None

    @staticmethod
    def _holds(records: Sequence[Record], marker: bytes | None) -> Record | None:
        if marker is None:
            return None
        return next((r for r in records if r.value is not None and marker in r.value), None)

    async def before_batch(self, records: Sequence[Record]) -> None:
        """Freeze (await forever) or crash (raise) if the batch holds a marked record."""
        hit = self._holds(records, self.crash_marker)
        if hit is not None:
            log.warning("fault injection: crashing the agent at %s[%d]@%d", hit.topic, hit.partition, hit.offset)
            raise InjectedFault(f"injected crash at {hit.topic}[{hit.partition}]@{hit.offset}")
        hit = self._holds(records, self.freeze_marker)
        if hit is not None:
            log.warning("fault injection: freezing the agent at %s[%d]@%d", hit.topic, hit.partition, hit.offset)
            await self._never.wait()  # cancelled at shutdown, never set


class NoFaults:
    """The stand-in when no fault is asked for: never enabled, never called per batch."""

    enabled = False

    async def before_batch(self, records: Sequence[Record]) -> None:  # pragma: no cover - never called
        return None


def faults_for(settings: OpsSettings) -> FaultInjector | NoFaults:
    """A fault injector when ``FAULT_FREEZE_MARKER`` or ``FAULT_CRASH_MARKER`` is set, else ``NoFaults``."""
    if settings.fault_freeze_marker or settings.fault_crash_marker:
        return FaultInjector(settings)
    return NoFaults()
