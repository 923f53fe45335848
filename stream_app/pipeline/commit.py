"""A drain's commit, step by step, in the order that makes its effects exactly-once.

A *drain* is what the ingestor releases in one go (events in event-time order, see
``pipeline.ingest``); ``pipeline.scorer`` applies and scores them in the worker's memory
(``state.owned``), each scoring's outputs going into its customer's outbox. Then, in this order:

1. **portfolio**: the per-period KPI sums take the drain's scorings (before the states that
   record them, so a crash in between re-scores and re-applies them: the update is
   idempotent per customer and version);
2. **save**: the global indexes (``labels:pending``, ``risk``: before the saves they index),
   then what changed in each customer (its state, score state, label snapshots and outbox,
   one atomic write per customer, many customers per call), and the newest event time;
3. **epoch check**: Redis still holds this deployment's state (it may have restarted empty
   while the drain ran): nothing computed on a blank state is ever published;
4. **publish**: alerts, then score snapshots, each awaited until the broker acknowledged;
5. **clear outboxes**: the published entries leave the outboxes (a crash before this
   publishes them again after the restart: the same alert ids, never a lost alert).

Then the ingestor marks the drain's records done in their partition groups and saves each
partition's progress (``Ingestor._pump``), and the worker acknowledges the done records
to Kafka (``pipeline.runtime.Runtime.release``): offsets are never committed past records
whose effects are not all in Redis and on the broker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas import Alert, ScoreSnapshot
from stream_app.core import Outputs
from stream_app.portfolio.assess import PortfolioItem, ReplayedObservation
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.state.customer import CustomerState
from stream_app.state.owned import OwnedStates
from stream_app.state.store import StateStore

#: a Redis command to send ahead of the saves it indexes: (command, args)
IndexUpdate = tuple[str, tuple[Any, ...]]


@dataclass
class Drain:
    """What a drain's scoring rounds leave to commit (one per lane, then joined in lane order)."""

    alerts: list[Alert] = field(default_factory=list)
    scores: list[ScoreSnapshot] = field(default_factory=list)
    #: customers whose outbox holds entries to clear once published
    boxed: set[str] = field(default_factory=set)
    pf_items: dict[str, PortfolioItem] = field(default_factory=dict)  # portfolio (issue 7)
    replayed: list[ReplayedObservation] = field(default_factory=list)  # portfolio (issue 7): from outboxes
    #: index updates, sent ahead of the saves they index
    before: list[IndexUpdate] = field(default_factory=list)
    #: newest event time applied (-1: none)
    newest_ms: int = -1

    def drop(self, customers: set[str]) -> None:
        """Forget fenced customers' outputs: their new owner produces them."""
        self.alerts = [a for a in self.alerts if a.customer_id not in customers]
        self.scores = [s for s in self.scores if s.customer_id not in customers]
        self.boxed -= customers
        for cid in customers:
            self.pf_items.pop(cid, None)


class DrainCommit:
    """Commits a drain (see the module): portfolio -> save -> epoch check -> publish -> clear outboxes."""

    def __init__(self, store: StateStore, owned: OwnedStates, outputs: Outputs, portfolio: PortfolioTracker, portfolio_enabled: bool,
                 stats: Any, epoch_check: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.owned = owned
        self.outputs = outputs
        self.portfolio = portfolio
        self.portfolio_enabled = portfolio_enabled
        #: counts ``alerts`` by kind and ``scores_published`` (the scorer's stats)
        self.stats = stats
        #: raises if Redis lost the state meanwhile (the ingestor's epoch check)
        self.epoch_check = epoch_check

    async def commit(self, drain: Drain, states: Mapping[str, CustomerState]) -> set[str]:
        """Returns the customers fenced off (owned by another worker now): nothing of theirs
        is saved or published."""
        await self.update_portfolio(drain)
        fenced = await self.save(drain, states)
        if fenced:
            drain.drop(fenced)
        await self.check_epoch(drain)
        await self.publish(drain)
        await self.clear_outboxes(drain)
        return fenced

    async def update_portfolio(self, drain: Drain) -> None:
        """Step 1: the portfolio, before the score states that record its scorings."""
        if (drain.pf_items or drain.replayed) and self.portfolio_enabled:
            await self.portfolio.update(self.store.redis, list(drain.pf_items.values()), replayed=drain.replayed)

    async def save(self, drain: Drain, states: Mapping[str, CustomerState]) -> set[str]:
        """Step 2: the indexes, then what changed in each customer, once."""
        return await self.owned.write(states.values(), drain.before, drain.newest_ms)

    async def check_epoch(self, drain: Drain) -> None:
        """Step 3: nothing computed on a blank state is published."""
        if self.epoch_check is not None and (drain.alerts or drain.scores):
            await self.epoch_check()

    async def publish(self, drain: Drain) -> None:
        """Step 4: alerts, then score snapshots; each returns once the broker acknowledged."""
        if drain.alerts:
            await self.outputs.alerts(drain.alerts)
            for a in drain.alerts:
                self.stats.alerts[a.kind] = self.stats.alerts.get(a.kind, 0) + 1
        if drain.scores:
            await self.outputs.scores(drain.scores)
            self.stats.scores_published += len(drain.scores)

    async def clear_outboxes(self, drain: Drain) -> None:
        """Step 5: what was published leaves the outboxes."""
        if drain.boxed:
            await self.store.redis.delete(*(self.store.keys(cid).outbox for cid in drain.boxed))
