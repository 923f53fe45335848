"""Scoring rounds: a drain's released events applied and scored one event per customer at a time.

Events arrive already ordered (``ordering``). Each customer's events are scored one at a time,
in rounds: round n applies every customer's n-th event and reads its state back in one round
trip (``StateStore.apply_and_read``), then scores it (``pipeline.score.score_one``, with the
model checkpoint of the event's day looked up first). Alerts and score snapshots are published
and acknowledged by the broker before the score state that records them is saved, and that save
rides in the same atomic script as the customer's next event (``lua/apply_events.lua``), so a
crash can leave at most the last applied event unscored, and re-scoring it sees the very state
it was first scored on. What the rounds leave (the last saves, the outputs) is committed by
``pipeline.commit``.

Recovery: the first round of a drain also reads each customer's outbox; entries left there by
a crash (alerts and snapshots not yet published, portfolio facts not yet applied) join this
drain's outputs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from schemas import Alert, ScoreSnapshot
from stream_app.core import DAY_MS, Outputs, RawCustomerState
from stream_app.model.checkpoints import ModelHolder
from stream_app.pipeline.commit import Drain, DrainCommit, IndexUpdate
from stream_app.pipeline.ordering import Pending
from stream_app.pipeline.score import Scored, ScoreRules, score_one
from stream_app.portfolio.assess import decode_scoring
from stream_app.portfolio.periods import month_of
from stream_app.portfolio.segment_days import decode_observation
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.scoring.alerts import Trigger, triggers_of
from stream_app.settings import Settings
from stream_app.state.codec import OutboxEntry, ScoreSave, saved_order
from stream_app.state.layout import Keys
from stream_app.state.store import ALREADY_APPLIED, DUPLICATE, SourcedEvent, StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class ScoringStats:
    scored: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    scores_published: int = 0
    snapshots: int = 0
    examples: int = 0


async def _all_or_none(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; if one fails, cancel the others and wait for them before raising its
    error (unwrapped, so callers' ``except`` clauses still match). A lane left running after
    its drain failed would race the retry of that drain."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Scorer:
    """Health, churn probability, alerts and label snapshots, one event at a time."""

    def __init__(self, store: StateStore, settings: Settings, outputs: Outputs, model: ModelHolder,
                 epoch_check: Callable[[], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.outputs = outputs
        self.model = model
        self.keys = Keys(settings.key_prefix)
        self.stats = ScoringStats()
        self.portfolio = PortfolioTracker(settings)  # portfolio KPIs, stages, segments (issue 7)
        self.rules = ScoreRules.of(settings.sections.scoring, self.portfolio, settings.portfolio_enabled)
        self.scorecard = self.rules.scorecard
        #: ``epoch_check``: called after a drain's state is saved and before its outputs are
        #: published: raises if Redis lost the state meanwhile (the ingestor's epoch check), so
        #: nothing computed on a blank state is ever published
        self.commit = DrainCommit(store, outputs, self.portfolio, settings.portfolio_enabled, self.stats, epoch_check)

    async def process(self, released: list[Pending[SourcedEvent]]) -> None:
        """Apply and score released events (in order-key order per customer): one event at
        a time, or with a score tick, all of a customer's events of one tick together.

        One Redis round trip per round. A score's outputs go into the customer's outbox in the
        same atomic script that saves the score state; the whole drain's outputs are published
        once at the end, then the outboxes are cleared. A crash in between leaves them in the
        outbox, and the redelivered records bring the customer back: its leftovers are published
        then (the same alert ids again, never a lost alert)."""
        tick = int(self.settings.score_tick_s * 1000)
        queues: dict[str, deque[list[Pending[SourcedEvent]]]] = {}
        for p in released:
            q = queues.setdefault(p.item.event.customer_id, deque())
            if tick and q and q[-1][-1].k // tick == p.k // tick:
                q[-1].append(p)
            else:
                q.append([p])
        await self.portfolio.prepare(self.store.redis)  # portfolio (issue 7)
        # customers split into lanes that run concurrently: while Redis applies one lane's
        # round, this process scores another's. Customers are independent: each one's events
        # stay in order within its lane, its state chain is exactly the one-lane chain, and
        # the lanes' outputs are joined in lane order (the same order on every run)
        n_lanes = max(1, min(self.settings.score_lanes, len(queues)))
        lanes: list[dict[str, deque[list[Pending[SourcedEvent]]]]] = [{} for _ in range(n_lanes)]
        for i, (cid, q) in enumerate(queues.items()):
            lanes[i % n_lanes][cid] = q
        drain = Drain.join(await _all_or_none([self._lane(lane) for lane in lanes]))
        await self.commit.commit(drain)

    async def _lane(self, queues: dict[str, deque[list[Pending[SourcedEvent]]]]) -> Drain:
        """Score one lane's customers round by round (round n: every customer's n-th event,
        one Redis round trip). What it returns still has to be saved (``carry``, ``before``)
        and published."""
        acc = Drain()
        alerts, scores, boxed, pf_items, replayed = acc.alerts, acc.scores, acc.boxed, acc.pf_items, acc.replayed
        carry = acc.carry
        first = set(queues)
        before: list[IndexUpdate] = []
        while queues:
            round_ = [(cid, q.popleft()) for cid, q in queues.items()]
            queues = {cid: q for cid, q in queues.items() if q}
            check = [cid for cid, _ in round_ if cid in first]
            first.difference_update(check)
            results, leftovers = await self.store.apply_and_read(
                [(cid, [p.item for p in chunk], carry.pop(cid, None)) for cid, chunk in round_], before, check)
            for cid, box in leftovers.items():
                boxed.add(cid)
                recovered = []
                for entry in box:
                    kind, payload = OutboxEntry.of(entry)
                    if kind is OutboxEntry.ALERT:
                        alerts.append(Alert.model_validate_json(payload))
                    elif kind is OutboxEntry.OBSERVATION:  # a segmentation observation not yet stored (issue 7)
                        k, features = decode_observation(payload.decode())
                        replayed.append((k, cid, features))
                    elif kind is OutboxEntry.FACTS:  # a scoring's month facts not yet in the portfolio
                        recovered.append(decode_scoring(payload))
                    else:
                        scores.append(ScoreSnapshot.model_validate_json(payload))
                if recovered:  # ahead of the customer's re-scorings (``collect`` lets later ones win)
                    raw_now = next(raw for (c, _), (_, raw) in zip(round_, results) if c == cid)
                    pf_items[cid] = self.portfolio.from_outbox(cid, raw_now, recovered)
            pending: dict[str, int] = {}
            risk: dict[str, float | None] = {}
            for (cid, chunk), (statuses, raw) in zip(round_, results):
                last = chunk[-1]
                # applied before a crash and its score state saved: done already
                if all(s == ALREADY_APPLIED for s in statuses) and last.key <= saved_order(raw.main):
                    continue
                if all(s == DUPLICATE for s in statuses):  # re-sent events change nothing; remember them
                    carry[cid] = ScoreSave.order_only(last.key)
                    continue
                triggers = [t for p, s in zip(chunk, statuses) if s != DUPLICATE
                            and (t := triggers_of(p.item.event)) is not None]
                # the portfolio is updated once, at the end of the drain, but this scoring's
                # state is saved with the customer's next event, before that: if the drain
                # ends in another month, a crash in between would leave this month without
                # this scoring's facts (a re-delivery skips a saved scoring), so they ride in
                # the outbox. The drain's last scoring is saved after the update: re-done.
                rest = queues.get(cid)
                box_facts = rest is not None and month_of(last.k) != month_of(rest[-1][-1].k)
                out = await self.score_one(raw, last.k, last.key, triggers, box_facts)
                alerts.extend(out.alerts)
                if out.score is not None:
                    scores.append(out.score)
                if out.alerts or out.score is not None or box_facts:
                    boxed.add(cid)
                if out.pending is not None:
                    pending[out.pending[0]] = out.pending[1]
                risk[cid] = out.risk
                carry[cid] = out.save
                self.portfolio.collect(pf_items, out.portfolio)  # portfolio (issue 7)
            before = self._index_updates(pending, risk)
        acc.before = before
        return acc

    def _index_updates(self, pending: dict[str, int], risk: dict[str, float | None]) -> list[IndexUpdate]:
        """Global index updates, sent ahead of the saves they index in the next round trip."""
        out: list[IndexUpdate] = []
        if pending:
            # indexed before the snapshot itself is saved: an entry without one is skipped
            out.append(("zadd", (self.keys.labels_pending, pending)))
            self.stats.snapshots += len(pending)
        # the portfolio's risk ranking (a global index: "top N riskiest" without a scan)
        ranked = {cid: p for cid, p in risk.items() if p is not None}
        if ranked:
            out.append(("zadd", (self.keys.risk, ranked)))
        gone = [cid for cid, p in risk.items() if p is None]
        if gone:
            out.append(("zrem", (self.keys.risk, *gone)))
        return out

    async def score_one(self, raw: RawCustomerState, now_ms: int, key: tuple[int, int, int, int],
                        triggers: list[Trigger], box_facts: bool = False) -> Scored:
        """Score one customer as of ``now_ms`` with the model checkpoint of its day (see
        ``pipeline.score.score_one``)."""
        model = await self.model.for_day(self.store.redis, now_ms // DAY_MS)
        out = score_one(self.rules, raw, now_ms, key, triggers, model, box_facts)
        self.stats.scored += 1
        return out
