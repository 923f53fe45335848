"""Per event, in event-time order: health, churn probability, alerts and label snapshots;
the single learner that turns due snapshots into labelled examples and model checkpoints.

Scoring (``Scorer.process``): events arrive already ordered (``ordering``). Each customer's
events are scored one at a time, in rounds: round n applies every customer's n-th event and
reads its state back in one round trip, then scores it (aggregates -> scorecard -> model ->
alert rules). Alerts and score snapshots are published and acknowledged by the broker before
the score state that records them is saved, and that save rides in the same atomic script as
the customer's next event (``lua/apply_events.lua``), so a crash can leave at most the last
applied event unscored, and re-scoring it sees the very state it was first scored on.

Labels arrive later: a snapshot of the model's features is frozen at most once per
``snapshot_every_days`` of event time per active customer, indexed by its due time
(snapshot + horizon). The learner (one per deployment: the Faust leader) completes event-time
days in order: once the watermark passes the start of day D it resolves every snapshot due
before D (positive if the customer cancelled within the horizon), learns them in (due, id)
order and checkpoints "the model through day D", atomically with removing them from the
pending index. Scoring an event of day d uses the checkpoint of day ``d - model_lag_days``
(events wait until it exists), so which model scored an event is a function of event time,
not of how fast the learner happened to run: a replay gives the same probabilities.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import orjson
from redis.exceptions import WatchError

from schemas import Alert, DeadLetter, Reason, ScoreSnapshot, SurveyEvent, TicketEvent

from stream_app.scoring.aggregates import DAY_MS, compute_aggregates
from stream_app.scoring.alerts import AlertConfig, AlertState, Trigger, evaluate
from stream_app.scoring.changes import ChangeTracker
from stream_app.model.features import LEVEL_FEATURE, behaviour_features, decode_features, encode_features, features_from
from stream_app.model.churn import ChurnModel, new_model
from stream_app.portfolio.periods import month_of
from stream_app.portfolio.tracker import PortfolioItem, PortfolioTracker, ReplayedObservation, decode_scoring, encode_scoring
from stream_app.portfolio.segment_days import decode_observation, encode_observation
from stream_app.scoring.scorecard import Scorecard
from stream_app.settings import INPUT_TOPICS, Settings
from stream_app.pipeline.ordering import Pending
from stream_app.state.store import ALREADY_APPLIED, DUPLICATE, RawCustomerState, SourcedEvent, StateStore

log = logging.getLogger(__name__)
T = TypeVar("T")


class Outputs(Protocol):
    """Where the pipeline's messages go; every method returns after the broker acknowledged."""

    async def dead_letters(self, letters: list[DeadLetter]) -> None: ...
    async def alerts(self, alerts: list[Alert]) -> None: ...
    async def scores(self, scores: list[ScoreSnapshot]) -> None: ...
    async def examples(self, examples: list[dict[str, Any]]) -> None: ...


@dataclass
class ScoringStats:
    scored: int = 0
    alerts: dict[str, int] = field(default_factory=dict)
    scores_published: int = 0
    snapshots: int = 0
    examples: int = 0


def load_alert_state(main: dict[str, str]) -> AlertState:
    """Alert memory is kept as short fields (``ab``, ``ar``, ``al:<kind>``) so the customer's
    hash stays in Redis' compact encoding (every value under 64 bytes)."""
    return AlertState(
        band=main.get("ab"),
        in_risk=main.get("ar") == "1",
        last={f[3:]: int(v) for f, v in main.items() if f.startswith("al:")},
    )


def alert_state_fields(st: AlertState) -> dict[str, str]:
    fields = {"ab": st.band or "", "ar": "1" if st.in_risk else "0"}
    fields.update({f"al:{k}": str(v) for k, v in st.last.items()})
    return fields


def _model_key(settings: Settings, name: str) -> str:
    return f"{settings.key_prefix}model:{name}"


class ModelHolder:
    """The scorers' view of the model: the checkpoint pinned to an event-time day.

    ``model:through`` is the last day the learner completed; the sorted set ``model:days``
    maps each day a checkpoint was written (score) to its blob (``model:blob:<day>``), which
    serves that day and the following ones up to the next checkpoint. Before the first, the
    untrained model (the health prior) serves.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.lag = settings.model_lag_days
        self.through: int | None = None
        self._refs: dict[int, str] = {}
        self._models: dict[str, ChurnModel] = {}
        self._prior = new_model(settings)

    @property
    def model(self) -> ChurnModel:
        """The newest loaded model (for read-side tools)."""
        return next(reversed(self._models.values())) if self._models else self._prior

    async def load_through(self, redis: Any) -> int | None:
        raw = await redis.get(_model_key(self.settings, "through"))
        self.through = int(raw) if raw is not None else None
        return self.through

    async def gate_ms(self, redis: Any, first_k: int | None) -> int:
        """Events with an order key below this may be scored now (their model exists).
        The first event ever starts the day count (``SET NX``): no label can be due that early,
        so every earlier day's model is the untrained one, whichever event came first."""
        through = await self.load_through(redis)
        if through is None:
            if first_k is None:
                return 0
            await redis.set(_model_key(self.settings, "through"), first_k // DAY_MS - self.lag, nx=True)
            through = await self.load_through(redis)
            assert through is not None
        return (through + self.lag + 1) * DAY_MS

    async def for_day(self, redis: Any, day: int) -> ChurnModel:
        need = day - self.lag
        ref = self._refs.get(need)
        if ref is None:
            got = await redis.zrevrangebyscore(_model_key(self.settings, "days"), need, "-inf", start=0, num=1)
            ref = (got[0].decode() if isinstance(got[0], bytes) else got[0]) if got else "prior"
            if self.through is not None and need <= self.through:  # final: cache it
                self._refs[need] = ref
                if len(self._refs) > 64:
                    self._refs.pop(next(iter(self._refs)))
        if ref == "prior":
            return self._prior
        model = self._models.get(ref)
        if model is None:
            blob = await redis.get(_model_key(self.settings, f"blob:{ref}"))
            if blob is None:  # collected already: only a replica far behind asks for it
                log.warning("model checkpoint %s is gone; scoring day %d with the newest loaded model", ref, day)
                return self.model
            model = self._models[ref] = ChurnModel.from_bytes(blob)
            model.calibrate = self.settings.model_calibration  # this deployment's choice
            while len(self._models) > 3:
                self._models.pop(next(iter(self._models)))
        return model


def triggers_of(event: Any) -> Trigger | None:
    """The alert an input event can raise by itself, if any."""
    if isinstance(event, SurveyEvent) and event.survey == "nps" and event.score <= 6:
        return Trigger(kind="detractor", ts_ms=event.ts_ms, value=event.score, label="nps_answer")
    if isinstance(event, TicketEvent) and (
        event.status == "reopened" or (event.priority == "urgent" and event.status in ("opened", "updated"))
    ):
        return Trigger(kind="escalation", ts_ms=event.ts_ms, value=1.0, label=f"ticket_{event.status}_{event.priority}")
    return None


def score_history(main: dict[str, str]) -> dict[int, float]:
    return {int(f[1:]): int(v) / 10 for f, v in main.items() if f[0] == "h" and f[1:].isdigit()}


def trend(history: dict[int, float], today: int, score: float, days: int) -> float | None:
    """Score change over ``days`` of event time: now minus the latest score at least that old."""
    past = [d for d in history if d <= today - days]
    if not past:
        return None
    return round(score - history[max(past)], 2)


def order_text(key: tuple[int, int, int, int]) -> str:
    """An order key as the compact text kept in the customer hash (``sk``)."""
    return ".".join(map(str, key))


def order_of(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(".")) if text else (-1,)


@dataclass
class Scored:
    """What scoring one event produced."""

    alerts: list[Alert]
    score: ScoreSnapshot | None
    pending: tuple[str, int] | None
    save: bytes
    risk: float | None
    portfolio: PortfolioItem | None = None  # portfolio (issue 7)


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


@dataclass
class _Lane:
    """One scoring lane's results: outputs to publish, score states and index updates to save."""

    alerts: list[Alert] = field(default_factory=list)
    scores: list[ScoreSnapshot] = field(default_factory=list)
    boxed: set[str] = field(default_factory=set)
    pf_items: dict[str, PortfolioItem] = field(default_factory=dict)  # portfolio (issue 7)
    replayed: list[ReplayedObservation] = field(default_factory=list)  # portfolio (issue 7): from outboxes
    carry: dict[str, bytes] = field(default_factory=dict)
    before: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)


class Scorer:
    """Health, churn probability, alerts and label snapshots, one event at a time."""

    def __init__(self, store: StateStore, settings: Settings, outputs: Outputs, model: ModelHolder) -> None:
        self.store = store
        self.settings = settings
        self.outputs = outputs
        self.model = model
        self.scorecard = Scorecard(settings.scorecard())
        self.alert_cfg = AlertConfig(risk_enter=settings.risk_alert_threshold, risk_exit=settings.risk_alert_exit)
        self.stats = ScoringStats()
        self.portfolio = PortfolioTracker(settings)  # portfolio KPIs, stages, segments (issue 7)
        #: called after a drain's state is saved and before its outputs are published: raises if
        #: Redis lost the state meanwhile (the ingestor's epoch check), so nothing computed on a
        #: blank state is ever published
        self.before_publish: Callable[[], Awaitable[None]] | None = None

    def risk_key(self) -> str:
        return f"{self.settings.key_prefix}risk"

    def pending_key(self) -> str:
        return f"{self.settings.key_prefix}labels:pending"

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
        done = await _all_or_none([self._lane(lane) for lane in lanes])
        alerts: list[Alert] = []
        scores: list[ScoreSnapshot] = []
        boxed: set[str] = set()
        pf_items: dict[str, PortfolioItem] = {}  # portfolio (issue 7)
        replayed: list[ReplayedObservation] = []  # portfolio (issue 7): from outboxes
        carry: dict[str, bytes] = {}
        before: list[tuple[str, tuple[Any, ...]]] = []
        for lane in done:
            alerts += lane.alerts
            scores += lane.scores
            boxed |= lane.boxed
            pf_items.update(lane.pf_items)
            replayed += lane.replayed
            carry.update(lane.carry)
            before += lane.before
        if (pf_items or replayed) and self.settings.portfolio_enabled:  # portfolio (issue 7): before the score state
            await self.portfolio.update(self.store.redis, list(pf_items.values()), replayed=replayed)
        if carry or before:  # the last event of each customer: its score state alone
            await self.store.apply_and_read([(cid, [], save) for cid, save in carry.items()], before, read=False)
        if self.before_publish is not None and (alerts or scores):
            await self.before_publish()
        if alerts:
            await self.outputs.alerts(alerts)
            for a in alerts:
                self.stats.alerts[a.kind] = self.stats.alerts.get(a.kind, 0) + 1
        if scores:
            await self.outputs.scores(scores)
            self.stats.scores_published += len(scores)
        if boxed:
            await self.store.redis.delete(*(self.store.keys(cid).outbox for cid in boxed))

    async def _lane(self, queues: dict[str, deque[list[Pending[SourcedEvent]]]]) -> "_Lane":
        """Score one lane's customers round by round (round n: every customer's n-th event,
        one Redis round trip). What it returns still has to be saved (``carry``, ``before``)
        and published."""
        acc = _Lane()
        alerts, scores, boxed, pf_items, replayed = acc.alerts, acc.scores, acc.boxed, acc.pf_items, acc.replayed
        carry = acc.carry
        first = set(queues)
        before: list[tuple[str, tuple[Any, ...]]] = []
        while queues:
            round_ = [(cid, q.popleft()) for cid, q in queues.items()]
            queues = {cid: q for cid, q in queues.items() if q}
            check = [cid for cid, _ in round_ if cid in first]
            first.difference_update(check)
            results, leftovers = await self.store.apply_and_read(
                [(cid, [p.item for p in chunk], carry.pop(cid, b"")) for cid, chunk in round_], before, check)
            for cid, box in leftovers.items():
                boxed.add(cid)
                recovered = []
                for entry in box:
                    if entry[:1] == b"a":
                        alerts.append(Alert.model_validate_json(entry[1:]))
                    elif entry[:1] == b"o":  # a segmentation observation not yet stored (issue 7)
                        k, features = decode_observation(entry[1:].decode())
                        replayed.append((k, cid, features))
                    elif entry[:1] == b"f":  # a scoring's month facts not yet in the portfolio
                        recovered.append(decode_scoring(entry[1:]))
                    else:
                        scores.append(ScoreSnapshot.model_validate_json(entry[1:]))
                if recovered:  # ahead of the customer's re-scorings (``collect`` lets later ones win)
                    raw_now = next(raw for (c, _), (_, raw) in zip(round_, results) if c == cid)
                    pf_items[cid] = self.portfolio.from_outbox(cid, raw_now, recovered)
            pending: dict[str, int] = {}
            risk: dict[str, float | None] = {}
            for (cid, chunk), (statuses, raw) in zip(round_, results):
                last = chunk[-1]
                # applied before a crash and its score state saved: done already
                if all(s == ALREADY_APPLIED for s in statuses) and last.key <= order_of(raw.main.get("sk")):
                    continue
                if all(s == DUPLICATE for s in statuses):  # re-sent events change nothing; remember them
                    carry[cid] = orjson.dumps([-1, 0, {"sk": order_text(last.key)}, "", "", 0, []])
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

    def _index_updates(self, pending: dict[str, int], risk: dict[str, float | None]) -> list[tuple[str, tuple[Any, ...]]]:
        """Global index updates, sent ahead of the saves they index in the next round trip."""
        out: list[tuple[str, tuple[Any, ...]]] = []
        if pending:
            # indexed before the snapshot itself is saved: an entry without one is skipped
            out.append(("zadd", (self.pending_key(), pending)))
            self.stats.snapshots += len(pending)
        # the portfolio's risk ranking (a global index: "top N riskiest" without a scan)
        ranked = {cid: p for cid, p in risk.items() if p is not None}
        if ranked:
            out.append(("zadd", (self.risk_key(), ranked)))
        gone = [cid for cid, p in risk.items() if p is None]
        if gone:
            out.append(("zrem", (self.risk_key(), *gone)))
        return out

    async def score_one(self, raw: RawCustomerState, now_ms: int, key: tuple[int, int, int, int],
                        triggers: list[Trigger], box_facts: bool = False) -> Scored:
        """Score one customer as of ``now_ms`` (the event's order key time); ``box_facts``:
        put the scoring's portfolio month facts in the outbox too (see ``_lane``)."""
        cid = raw.customer_id
        today = now_ms // DAY_MS
        agg = compute_aggregates(raw, now_ms, self.settings.windows_days)
        model = await self.model.for_day(self.store.redis, today)
        behaviour = behaviour_features(agg, raw.main)
        health = self.scorecard.score(agg, model.population_percentile(behaviour.get(LEVEL_FEATURE)))
        x = features_from(health.signals, health.score, behaviour)
        p, p_raw, version = model.predict_detail(x)
        pf = self.portfolio.assess(agg, health, p)  # portfolio (issue 7): lifecycle stage + segment input
        model_reasons = [
            Reason(factor=f"model:{f}", value=round(v, 4), impact=round(c, 4)) for f, v, c in model.explain(x)
        ]
        history = score_history(raw.main)
        state = load_alert_state(raw.main)
        new_alerts, state = evaluate(
            self.alert_cfg, state, cid, now_ms, score=health.score, band=health.band, history=history,
            churn_p=p, model_version=version, reasons=model_reasons + health.reasons[:4], triggers=triggers,
            green_min=health.green_min, yellow_min=health.yellow_min,  # the customer's profile's bands
        )
        cancelled = agg.subscription_status == "cancelled"
        # issue 8, change explanations: alerts (and snapshots that moved) carry what changed
        # since the previous published score (``changes.py``; computed only when carried)
        changes = ChangeTracker(raw.main, self.scorecard, agg.plan, health)
        # a customer who already cancelled is not "at risk": the state moves on, nobody is paged
        if cancelled:
            new_alerts = []
        new_alerts = changes.attach(new_alerts)
        # cs.scores: on a material change, and at least once per customer per event-time day
        last_pub = int(raw.main["sp"]) / 10 if "sp" in raw.main else None
        last_day = int(raw.main.get("spd", "-1"))
        publish = (last_pub is None or abs(health.score - last_pub) >= self.settings.score_publish_delta
                   or today > last_day or any(a.kind == "band_change" for a in new_alerts)
                   or pf.stage != raw.main.get("ls"))  # portfolio (issue 7): stage changes
        score = None
        if publish:
            score = ScoreSnapshot(
                customer_id=cid, ts=agg.as_of, health_score=health.score, health_band=health.band,  # type: ignore[arg-type]
                churn_probability=min(1.0, max(0.0, p)), model_version=version, components=health.components,
                **pf.snapshot_fields(),  # portfolio (issue 7)
                churn_probability_raw=min(1.0, max(0.0, p_raw)),
                since_previous=changes.for_snapshot(self.settings.change_explain_delta),
            )
        # label snapshot: at most one per customer per snapshot_every_days, never after a cancellation
        snap_day, snap_text, pending = "", "", None
        last_snap = int(raw.main.get("snd", "-100000"))
        if not cancelled and today - last_snap >= self.settings.snapshot_every_days:
            # field "<day>:<second of day>", value the features: short enough (< 64 bytes)
            # for Redis to keep the hash compact
            snap_day, snap_text = f"{today}:{(now_ms % DAY_MS) // 1000}", encode_features(x)
            pending = (f"{cid}\x00{snap_day}", now_ms + self.settings.label_horizon_days * DAY_MS)
        fields = alert_state_fields(state)
        fields.update({"cp": f"{p:.4f}", "hb": health.band, "mv": version, "sk": order_text(key), "ls": pf.stage})
        reasons = health.reasons[:3]
        fields.update({f"r{i}": f"{r.factor}:{r.impact:g}" for i, r in enumerate(reasons, start=1)})
        for i in range(len(reasons) + 1, 4):
            fields[f"r{i}"] = ""
        if publish:
            fields.update({"sp": str(int(round(health.score * 10))), "spd": str(today)})
        fields.update(changes.fields(publish, p, now_ms))  # issue 8: previous score, last change
        box = [f"a{a.model_dump_json()}" for a in new_alerts] + ([f"s{score.model_dump_json()}"] if score else [])
        if today > last_day and pf.learn and self.settings.portfolio_enabled:
            # the customer's first scoring of the day is that day's segmentation observation
            # (segment_days): it rides in the outbox, saved atomically with this score state,
            # so a crash before it reaches pf:obs cannot lose it to a later scoring
            box.append("o" + encode_observation(now_ms, pf.features))
        item = self.portfolio.item(cid, now_ms, raw, health, pf)  # portfolio (issue 7)
        if box_facts and self.settings.portfolio_enabled:
            box.append("f" + encode_scoring(now_ms, item.scores[month_of(now_ms)], pf.features).decode())
        save = orjson.dumps([today, int(round(health.score * 10)), fields, snap_day, snap_text, 35, box])
        self.stats.scored += 1
        return Scored(new_alerts, score, pending, save, None if cancelled else round(p, 4), item)


class Learner:
    """The single learner: completes event-time days in order (see the module docstring)."""

    #: checkpoints kept (days of event time); scorers need only the last few
    KEEP_DAYS = 60

    def __init__(self, store: StateStore, settings: Settings, outputs: Outputs | None = None) -> None:
        self.store = store
        self.redis = store.redis
        self.settings = settings
        self.outputs = outputs
        self.model: ChurnModel | None = None
        self._model_day: int | None = None
        self.learned = 0

    def _k(self, name: str) -> str:
        return _model_key(self.settings, name)

    async def _load(self, through: int) -> ChurnModel:
        """The model as of the end of day ``through`` (from memory unless another learner
        moved on meanwhile, e.g. after a leader change)."""
        if self.model is None or self._model_day != through:
            got = await self.redis.zrevrangebyscore(self._k("days"), through, "-inf", start=0, num=1)
            ref = (got[0].decode() if isinstance(got[0], bytes) else got[0]) if got else None
            blob = await self.redis.get(self._k(f"blob:{ref}")) if ref else None
            self.model = ChurnModel.from_bytes(blob) if blob is not None else new_model(self.settings)
            self.model.calibrate = self.settings.model_calibration
            self._model_day = through
        return self.model

    async def advance(self, max_steps: int = 31) -> int:
        """Complete the days the watermark has passed; returns how many steps it took.
        Days without any label due are completed together in one step."""
        raw = await self.redis.get(self._k("through"))
        if raw is None:
            return 0
        through = int(raw)
        parts = [(self.settings.topic(t), p) for t in INPUT_TOPICS for p in range(self.settings.topic_partitions)]
        wm = await self.store.progress_watermark(parts)
        if wm is None or wm // DAY_MS <= through:
            return 0
        target = wm // DAY_MS
        pending = f"{self.settings.key_prefix}labels:pending"
        steps = 0
        while through < target and steps < max_steps:
            first = await self.redis.zrange(pending, 0, 0, withscores=True)
            # the first day whose checkpoint includes a label: the day after the earliest due
            day = int(first[0][1]) // DAY_MS + 1 if first else target
            day = min(max(day, through + 1), target)
            if not await self._complete(through, day):
                break
            through = day
            steps += 1
        return steps

    async def _complete(self, through: int, day: int) -> bool:
        """Days ``through+1 .. day``: learn every label due before the start of ``day``.
        False if another learner got there first (this one reloads from the checkpoint)."""
        try:
            return await self._complete_days(through, day)
        except WatchError:
            self.model = None
            return False
        except BaseException:
            # the in-memory model may have learnt examples the checkpoint does not record:
            # start again from the checkpoint, never learn anything twice
            self.model = None
            raise

    async def _complete_days(self, through: int, day: int) -> bool:
        model = await self._load(through)
        pending = f"{self.settings.key_prefix}labels:pending"
        due = await self.redis.zrangebyscore(pending, "-inf", f"({day * DAY_MS}")
        members = [m.decode() if isinstance(m, bytes) else m for m in due]
        examples = await self._resolve(members)
        for ex in examples:
            model.learn_one(ex["x"], bool(ex["y"]))
        self.learned += len(examples)
        # check-and-set on `through`: during a leadership hand-over two learners may briefly
        # run; only one completes a day, the other starts again from the checkpoint
        async with self.redis.pipeline(transaction=True) as tx:
            await tx.watch(self._k("through"))
            current = await tx.get(self._k("through"))
            if current is None or int(current) != through:
                self.model = None
                return False
            tx.multi()
            if examples:
                model.decide()  # the champion serving from this checkpoint on, stored with it
                tx.set(self._k(f"blob:{day}"), model.to_bytes())
                tx.zadd(self._k("days"), {str(day): day})
                tx.set(self._k("summary"), orjson.dumps(model.summary(), option=orjson.OPT_SERIALIZE_NUMPY))
                tx.set(self._k("version"), model.version)
            tx.set(self._k("through"), day)
            if members:
                tx.zrem(pending, *members)
            await tx.execute()  # WatchError: another learner moved on; the caller's except resets
        self._model_day = day
        await self._collect(day)
        if members:
            pipe = self.redis.pipeline(transaction=False)
            for m in members:
                cid, snap = m.rsplit("\x00", 1)  # a customer id may hold a NUL, the snapshot never
                pipe.hdel(self.store.keys(cid).snapshots, snap)
            await pipe.execute()
        if examples and self.outputs is not None:
            await self.outputs.examples(examples)
        return True

    async def _collect(self, day: int) -> None:
        """Drop checkpoints that serve only days older than KEEP_DAYS (keep the one serving
        the oldest kept day)."""
        old = await self.redis.zrangebyscore(self._k("days"), "-inf", day - self.KEEP_DAYS)
        for ref in old[:-1]:
            r = ref.decode() if isinstance(ref, bytes) else ref
            await self.redis.zrem(self._k("days"), r)
            await self.redis.delete(self._k(f"blob:{r}"))

    async def _resolve(self, members: list[str]) -> list[dict[str, Any]]:
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for m in members:
            cid, snap = m.rsplit("\x00", 1)
            k = self.store.keys(cid)
            pipe.hget(k.snapshots, snap)
            pipe.hget(k.main, "cts")
        got = await pipe.execute()
        horizon_ms = self.settings.label_horizon_days * DAY_MS
        out: list[dict[str, Any]] = []
        for i, m in enumerate(members):
            feats, cts = got[2 * i], got[2 * i + 1]
            if feats is None:
                continue
            cid, snap = m.rsplit("\x00", 1)
            d, second = snap.split(":")
            snap_ts = int(d) * DAY_MS + int(second) * 1000
            cancelled = cts is not None and snap_ts < int(cts) <= snap_ts + horizon_ms
            text = feats.decode() if isinstance(feats, bytes) else feats
            out.append({"id": m, "customer_id": cid, "ts": snap_ts, "y": cancelled, "x": decode_features(text)})
        return out

