"""What every layer shares, defined once: time units, record identities, the Kafka record as the
pipeline sees it, a customer's raw Redis state, the outputs protocol and the pipeline's errors.

Nothing here imports another ``stream_app`` module: every package may import it.

>>> DAY_MS == 24 * HOUR_MS == 1440 * MINUTE_MS
True
>>> text(b"cs:wm"), text("cs:wm"), text(None)
('cs:wm', 'cs:wm', None)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

from aiokafka.errors import KafkaError
from redis.exceptions import BusyLoadingError, ClusterDownError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas import Alert, DeadLetter, ScoreSnapshot

# --- time units (event time is epoch milliseconds, UTC) ------------------------------------
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

# --- identities ------------------------------------------------------------------------------
#: a topic partition: (real topic name, partition)
TP = tuple[str, int]
#: one Kafka record: (real topic name, partition, offset), as ``Ingestor.handle`` returns them
RecordKey = tuple[str, int, int]


@overload
def text(value: bytes | str) -> str: ...
@overload
def text(value: None) -> None: ...
def text(value: bytes | str | None) -> str | None:
    """A Redis reply (bytes, or str from a decoding client) as ``str``; ``None`` stays ``None``."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Record:
    """A Kafka record as the ingestor sees it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    #: the partition's log-end offset when fetched (None: unknown); a partition whose records
    #: are all handled is idle and does not hold the event-time watermark back
    highwater: int | None = None
    #: the record's Kafka timestamp (ms), for the processing-latency metrics (None: unknown)
    timestamp_ms: int | None = None


@dataclass
class RawCustomerState:
    """Everything Redis holds for one customer, as strings (input to ``scoring.aggregates``)."""

    customer_id: str
    main: dict[str, str] = field(default_factory=dict)
    days: dict[str, str] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    tickets: dict[str, str] = field(default_factory=dict)
    dedupe_days: int = 0
    #: what scoring derived from this very state and keeps with it (``scoring.windows``: the
    #: parsed day buckets and window sums, updated in place while the state lives on)
    derived: Any = field(default=None, repr=False, compare=False)

    @property
    def exists(self) -> bool:
        return bool(self.main)


class Outputs(Protocol):
    """Where the pipeline's messages go; every method returns after the broker acknowledged."""

    async def dead_letters(self, letters: list[DeadLetter]) -> None: ...
    async def alerts(self, alerts: list[Alert]) -> None: ...
    async def scores(self, scores: list[ScoreSnapshot]) -> None: ...
    async def examples(self, examples: list[dict[str, Any]]) -> None: ...


# --- errors ----------------------------------------------------------------------------------
#: Errors worth waiting out (the server is away), as opposed to bugs.
TRANSIENT_ERRORS = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    # Redis Cluster during a failover or resharding (a primary down, a slot not served yet)
    ClusterDownError,
    SlotNotCoveredError,
    TryAgainError,
    ConnectionError,
    OSError,
    KafkaError,
    asyncio.TimeoutError,
)


class StateLostError(RuntimeError):
    """Redis no longer holds the state the consumer group's committed offsets build on."""


STATE_LOST_HELP = (
    "Nothing more will be applied. Stop all workers, run `stream-app rebuild` (it replays every "
    "input topic from its earliest offset up to the consumer group's committed offsets into Redis, "
    "publishing nothing again), then start the workers again."
)
