"""Scoring rounds: a drain's released events applied and scored, one event per customer at a time.

Events arrive already ordered (``ordering``). The customers' states live in the worker's
memory (``state.owned``: loaded from Redis on first touch). Round n applies every customer's
n-th event (``state.apply``), then scores it (``pipeline.score.score_one``, with the model
checkpoint of the event's day looked up first) and keeps the score state and the outputs in
the customer's memory (its outbox). Nothing is written while scoring: ``pipeline.commit``
writes the drain's changes once, then publishes. A crash can therefore only lose a whole
drain's work, which the redelivered records redo from the state Redis holds.

Recovery: a customer loaded from Redis brings its outbox; entries left there by a crash
(alerts and snapshots written but not published, portfolio facts not yet applied) join this
drain's outputs.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from schemas import Alert, ScoreSnapshot
from stream_app.core import DAY_MS, Outputs, RawCustomerState
from stream_app.model.checkpoints import ModelHolder
from stream_app.pipeline.commit import Drain, DrainCommit, IndexUpdate
from stream_app.pipeline.ordering import Pending
from stream_app.pipeline.score import Scored, ScoreRules, score_one
from stream_app.portfolio.assess import decode_scoring
from stream_app.portfolio.segment_days import decode_observation
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.scoring.alerts import Trigger, triggers_of
from stream_app.settings import Settings
from stream_app.state.apply import apply_events, apply_save
from stream_app.state.codec import OutboxEntry, ScoreSave, saved_order
from stream_app.state.customer import CustomerState, Limits
from stream_app.state.layout import ALREADY_APPLIED, DUPLICATE, Keys
from stream_app.state.owned import FencedError, OwnedStates
from stream_app.state.store import SourcedEvent, StateStore

log = logging.getLogger(__name__)


@dataclass
class ScoringStats:
    scored: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    scores_published: int = 0
    snapshots: int = 0
    examples: int = 0


def limits_of(settings: Settings) -> Limits:
    """The bounds a deployment keeps each customer's state within."""
    return Limits(settings.max_window_days, settings.dedupe_days, settings.top_actions,
                  settings.ticket_retention_days, settings.max_open_tickets, settings.max_tracked_users,
                  settings.retention_days * DAY_MS)


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
        #: the customers this worker owns, in memory
        self.owned = OwnedStates(store, settings.state_cache_customers)
        self.limits = limits_of(settings)
        self.commit = DrainCommit(store, self.owned, outputs, self.portfolio, settings.portfolio_enabled, self.stats,
                                  epoch_check)

    async def process(self, released: list[Pending[SourcedEvent]]) -> set[int]:
        """Apply and score released events (in order-key order per customer): one event at
        a time, or with a score tick, all of a customer's events of one tick together.

        The customers' states come from the worker's memory (loaded on first touch); events
        are applied and scored there, and what changed is written to Redis once, at the
        drain's commit, together with the outputs in each customer's outbox (one atomic
        write per customer). If anything fails before the commit is through, the drain's
        customers are dropped from memory and reloaded from what Redis really holds: a
        retry then sees the saved state, and any outbox leftovers are published.
        Returns the partition groups found owned by another worker (fenced): nothing of
        theirs was written or published."""
        tick = int(self.settings.score_tick_s * 1000)
        queues: dict[str, deque[list[Pending[SourcedEvent]]]] = {}
        wanted: dict[str, int] = {}
        for p in released:
            cid = p.item.event.customer_id
            q = queues.get(cid)
            if q is None:
                q = queues[cid] = deque()
                wanted[cid] = p.item.partition
            if tick and q and q[-1][-1].k // tick == p.k // tick:
                q[-1].append(p)
            else:
                q.append([p])
        await self.portfolio.prepare(self.store.redis)  # portfolio (issue 7)
        try:
            try:
                states = await self.owned.get(wanted)
            except FencedError as exc:
                return exc.groups
            drain = await self._rounds(queues, states)
            fenced = await self.commit.commit(drain, states)
        except BaseException:
            self.owned.evict(wanted)
            raise
        self.owned.trim()
        return {wanted[cid] for cid in fenced}

    async def _rounds(self, queues: dict[str, deque[list[Pending[SourcedEvent]]]],
                      states: dict[str, CustomerState]) -> Drain:
        """Score the drain's customers round by round (round n: every customer's n-th event)."""
        acc = Drain()
        alerts, scores, boxed, pf_items, replayed = acc.alerts, acc.scores, acc.boxed, acc.pf_items, acc.replayed
        weights = self.settings.priority_weights
        limits = self.limits
        first = True
        pending: dict[str, int] = {}
        risk: dict[str, float | None] = {}
        while queues:
            round_ = [(cid, q.popleft()) for cid, q in queues.items()]
            queues = {cid: q for cid, q in queues.items() if q}
            applied = []
            for cid, chunk in round_:
                st = states[cid]
                applied.append(apply_events(st, [p.item.for_script(weights) for p in chunk], limits))
                acc.newest_ms = max(acc.newest_ms, max(p.item.event.ts_ms for p in chunk))
            if first:  # a crash's leftovers: in the outbox of a customer loaded from Redis
                first = False
                for cid, _ in round_:
                    st = states[cid]
                    if st.leftovers:
                        self._recover(st, acc)
            for (cid, chunk), statuses in zip(round_, applied):
                st = states[cid]
                last = chunk[-1]
                # applied before a crash and its score state saved: done already
                if all(s == ALREADY_APPLIED for s in statuses) and last.key <= saved_order(st.main):
                    continue
                if all(s == DUPLICATE for s in statuses):  # re-sent events change nothing; remember them
                    apply_save(st, ScoreSave.order_only(last.key))
                    continue
                triggers = [t for p, s in zip(chunk, statuses) if s != DUPLICATE
                            and (t := triggers_of(p.item.event)) is not None]
                out = await self.score_one(st, last.k, last.key, triggers)
                apply_save(st, out.save)
                alerts.extend(out.alerts)
                if out.score is not None:
                    scores.append(out.score)
                if out.alerts or out.score is not None:
                    boxed.add(cid)
                if out.pending is not None:
                    pending[out.pending[0]] = out.pending[1]
                risk[cid] = out.risk
                self.portfolio.collect(pf_items, out.portfolio)  # portfolio (issue 7)
        acc.before = self._index_updates(pending, risk)
        return acc

    def _recover(self, st: CustomerState, acc: Drain) -> None:
        """Outputs a crash left in the customer's outbox join this drain's."""
        acc.boxed.add(st.customer_id)
        recovered = []
        for entry in st.leftovers:
            kind, payload = OutboxEntry.of(entry)
            if kind is OutboxEntry.ALERT:
                acc.alerts.append(Alert.model_validate_json(payload))
            elif kind is OutboxEntry.OBSERVATION:  # a segmentation observation not yet stored (issue 7)
                k, features = decode_observation(payload.decode())
                acc.replayed.append((k, st.customer_id, features))
            elif kind is OutboxEntry.FACTS:  # a scoring's month facts not yet in the portfolio
                recovered.append(decode_scoring(payload))
            else:
                acc.scores.append(ScoreSnapshot.model_validate_json(payload))
        if recovered:  # ahead of the customer's re-scorings (``collect`` lets later ones win)
            acc.pf_items[st.customer_id] = self.portfolio.from_outbox(st.customer_id, st, recovered)
        st.leftovers = []

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
                        triggers: list[Trigger]) -> Scored:
        """Score one customer as of ``now_ms`` with the model checkpoint of its day (see
        ``pipeline.score.score_one``)."""
        model = await self.model.for_day(self.store.redis, now_ms // DAY_MS)
        out = score_one(self.rules, raw, now_ms, key, triggers, model)
        self.stats.scored += 1
        return out
