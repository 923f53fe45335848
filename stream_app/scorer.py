"""After a batch is applied: refresh the touched customers' health, churn probability and alerts;
take label snapshots; resolve snapshots whose horizon the watermark has passed.

Per batch, for every customer with an applied event (one pipelined read for all of them):
aggregates -> scorecard -> model -> alert rules. Outputs (alerts, score snapshots, resolved
training examples) are published first and acknowledged by the broker; only then is the
customer's score state (daily score history, alert memory, snapshot) saved. A crash in
between re-derives the same alerts with the same ids (at-least-once, de-duplicable), never
loses one.

Delayed labels: a snapshot of the model's features is frozen at most once per
``snapshot_every_days`` of event time per active customer and indexed by its due time
(snapshot + horizon). When the event-time watermark (the minimum over all input partitions
of their newest event time) passes the due time, the label is known: positive if the
customer cancelled within the horizon after the snapshot. Positives wait for their horizon
like negatives do, so the learner sees examples in event-time order, not churners first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from schemas import Alert, DeadLetter, Reason, ScoreSnapshot, SurveyEvent, TicketEvent

from .aggregates import DAY_MS, compute_aggregates
from .alerts import AlertConfig, AlertState, Trigger, evaluate
from .model import ChurnModel, decode_features, encode_features, features_from
from .scoring import Scorecard
from .settings import INPUT_TOPICS, Settings
from .state import StateStore, digest

log = logging.getLogger(__name__)


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


_SAVE_SCRIPT = """
-- KEYS: 1 main hash, 2 snapshots hash.
-- ARGV: day, score*10, JSON object of main-hash fields to set, snapshot day or '', snapshot text,
-- history days kept
local H, L = KEYS[1], KEYS[2]
local day = tonumber(ARGV[1])
redis.call('HSET', H, 'h' .. day, ARGV[2], 'hs', ARGV[2])
for f, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSET', H, f, v) end
if ARGV[4] ~= '' then
  redis.call('HSET', L, ARGV[4], ARGV[5])
  redis.call('HSET', H, 'snd', string.match(ARGV[4], '^(%d+)'))
end
local keep = tonumber(ARGV[6])
if tonumber(redis.call('HGET', H, 'hpd') or '-1') < day then
  for _, f in ipairs(redis.call('HKEYS', H)) do
    local d = string.match(f, '^h(%d+)$')
    if d and tonumber(d) < day - keep then redis.call('HDEL', H, f) end
  end
  redis.call('HSET', H, 'hpd', day)
end
return 1
"""


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


class ModelHolder:
    """The scorers' copy of the model: reloaded when the learner publishes a new checkpoint."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = ChurnModel(settings.model_min_labels, settings.model_min_positives)
        self.loaded_version = -1
        self._checked = 0.0

    async def refresh(self, redis: Any, min_interval_s: float = 2.0) -> None:
        now = time.monotonic()
        if now - self._checked < min_interval_s:
            return
        self._checked = now
        version = await redis.get(f"{self.settings.key_prefix}model:version")
        if version is None or int(version) == self.loaded_version:
            return
        blob = await redis.get(f"{self.settings.key_prefix}model:blob")
        if blob is not None:
            self.model = ChurnModel.from_bytes(blob)
            self.loaded_version = int(version)


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


class Scorer:
    """Health, churn probability, alerts and label snapshots for touched customers."""

    def __init__(self, store: StateStore, settings: Settings, outputs: Outputs, model: ModelHolder) -> None:
        self.store = store
        self.settings = settings
        self.outputs = outputs
        self.model = model
        self.scorecard = Scorecard(settings.scorecard())
        self.alert_cfg = AlertConfig(risk_enter=settings.risk_alert_threshold, risk_exit=settings.risk_alert_exit)
        self.stats = ScoringStats()
        self._save_sha: str | None = None

    def risk_key(self) -> str:
        return f"{self.settings.key_prefix}risk"

    def pending_key(self) -> str:
        return f"{self.settings.key_prefix}labels:pending"

    async def refresh(
        self, touched: dict[str, list[Trigger]], batch: dict[tuple[str, int], tuple[int, bool]] | None = None
    ) -> None:
        """Score the touched customers. ``batch``: this batch's (newest event time, caught up)
        per partition, for the watermark."""
        if not touched:
            return
        await self.model.refresh(self.store.redis)
        # Score as of the cross-topic watermark, capped by the customer's own last event: the
        # four topics are consumed independently, and during a backlog (a replay) a sparse
        # topic runs far ahead of a dense one. Judged at its latest billing event, a customer
        # whose activity is still queued would look idle for months.
        watermark = await self.watermark(batch)
        ids = list(touched)
        raws = await self.store.read_many(ids)
        alerts: list[Alert] = []
        scores: list[ScoreSnapshot] = []
        saves: list[tuple[str, list[Any]]] = []
        pending: dict[str, int] = {}
        risk: dict[str, float | None] = {}
        green, yellow = self.scorecard.config.green_min, self.scorecard.config.yellow_min
        horizon_ms = self.settings.label_horizon_days * DAY_MS
        for cid, raw in zip(ids, raws):
            if not raw.exists:
                continue
            now_ms = int(raw.main["lts"]) if watermark is None else min(int(raw.main["lts"]), watermark)
            today = now_ms // DAY_MS
            agg = compute_aggregates(raw, now_ms, self.settings.windows_days)
            health = self.scorecard.score(agg)
            x = features_from(health.signals, health.score)
            p, version = self.model.model.predict_one(x)
            model_reasons = [
                Reason(factor=f"model:{f}", value=round(v, 4), impact=round(c, 4))
                for f, v, c in self.model.model.explain(x)
            ]
            history = score_history(raw.main)
            state = load_alert_state(raw.main)
            new_alerts, state = evaluate(
                self.alert_cfg, state, cid, now_ms, score=health.score, band=health.band, history=history,
                churn_p=p, model_version=version, reasons=model_reasons + health.reasons[:4], triggers=touched[cid],
                green_min=green, yellow_min=yellow,
            )
            # a customer who already cancelled is not "at risk": the state moves on, nobody is paged
            if agg.subscription_status != "cancelled":
                alerts.extend(new_alerts)
            else:
                new_alerts = []
            # cs.scores: on a material change, and at least once per customer per event-time day
            last_pub = int(raw.main["sp"]) / 10 if "sp" in raw.main else None
            last_day = int(raw.main.get("spd", "-1"))
            publish = last_pub is None or abs(health.score - last_pub) >= self.settings.score_publish_delta or today > last_day
            publish = publish or any(a.kind == "band_change" for a in new_alerts)
            if publish:
                scores.append(ScoreSnapshot(
                    customer_id=cid, ts=agg.as_of, health_score=health.score, health_band=health.band,  # type: ignore[arg-type]
                    churn_probability=min(1.0, max(0.0, p)), model_version=version, components=health.components,
                ))
            # label snapshot: at most one per customer per snapshot_every_days, never after a cancellation
            snap_day = ""
            snap_text = ""
            last_snap = int(raw.main.get("snd", "-100000"))
            if agg.subscription_status != "cancelled" and today - last_snap >= self.settings.snapshot_every_days:
                # field "<day>:<second of day>", value the features: short enough (< 64 bytes)
                # for Redis to keep the hash compact
                snap_day, snap_text = f"{today}:{(now_ms % DAY_MS) // 1000}", encode_features(x)
                pending[f"{cid}\x00{snap_day}"] = now_ms + horizon_ms
            fields = alert_state_fields(state)
            fields.update({"cp": f"{p:.4f}", "hb": health.band, "mv": version})
            fields.update({f"r{i}": f"{r.factor}:{r.impact:g}" for i, r in enumerate(health.reasons[:3], start=1)})
            for i in range(len(health.reasons[:3]) + 1, 4):
                fields[f"r{i}"] = ""
            if publish:
                fields.update({"sp": str(int(round(health.score * 10))), "spd": str(today)})
            saves.append((cid, [today, int(round(health.score * 10)), orjson.dumps(fields), snap_day, snap_text, 35]))
            risk[cid] = None if agg.subscription_status == "cancelled" else round(p, 4)
            self.stats.scored += 1
        if alerts:
            await self.outputs.alerts(alerts)
            for a in alerts:
                self.stats.alerts[a.kind] = self.stats.alerts.get(a.kind, 0) + 1
        if scores:
            await self.outputs.scores(scores)
            self.stats.scores_published += len(scores)
        if pending:
            # index before the snapshot itself: an index entry without a snapshot is skipped
            await self.store.redis.zadd(self.pending_key(), pending)
            self.stats.snapshots += len(pending)
        if self._save_sha is None:
            self._save_sha = await self.store.redis.script_load(_SAVE_SCRIPT)
        pipe = self.store.redis.pipeline(transaction=False)
        for cid, argv in saves:
            k = self.store.keys(cid)
            pipe.evalsha(self._save_sha, 2, k.main, k.snapshots, *argv)
        # the portfolio's risk ranking (a global index: "top N riskiest" without a scan)
        ranked = {cid: p for cid, p in risk.items() if p is not None}
        if ranked:
            pipe.zadd(self.risk_key(), ranked)
        gone = [cid for cid, p in risk.items() if p is None]
        if gone:
            pipe.zrem(self.risk_key(), *gone)
        await pipe.execute()

    async def watermark(self, batch: dict[tuple[str, int], tuple[int, bool]] | None = None) -> int | None:
        """Event-time watermark over all input partitions: the minimum of their newest event
        times, leaving out idle partitions (all their records handled) so that a sparse topic
        (billing) does not stall it; if every partition is idle, the newest event time.
        ``batch`` overlays the current batch's (newest event time, caught up) per partition,
        which is not in Redis yet (progress is saved after the batch's effects)."""
        parts = [(self.settings.topic(t), p) for t in INPUT_TOPICS for p in range(self.settings.topic_partitions)]
        pipe = self.store.redis.pipeline(transaction=False)
        for topic, p in parts:
            pipe.hmget(self.store._progress_key(topic, p), "wm", "idle")
        busy: list[int] = []
        idle: list[int] = []
        for tp, (wm, is_idle) in zip(parts, await pipe.execute()):
            newest = int(wm) if wm is not None else -1
            caught_up = is_idle in (b"1", "1")
            if batch and tp in batch:
                newest = max(newest, batch[tp][0])
                caught_up = batch[tp][1]
            if newest < 0:
                continue
            (idle if caught_up else busy).append(newest)
        if busy:
            return min(busy)
        return max(idle) if idle else None

    async def resolve_labels(self, limit: int = 2000) -> int:
        """Turn due snapshots into labelled examples for the learner; returns how many."""
        wm = await self.watermark()
        if wm is None:
            return 0
        due = await self.store.redis.zrangebyscore(self.pending_key(), "-inf", wm, start=0, num=limit)
        if not due:
            return 0
        members = [m.decode() if isinstance(m, bytes) else m for m in due]
        pipe = self.store.redis.pipeline(transaction=False)
        for m in members:
            cid, day = m.split("\x00")
            k = self.store.keys(cid)
            pipe.hget(k.snapshots, day)
            pipe.hget(k.main, "cts")
        got = await pipe.execute()
        horizon_ms = self.settings.label_horizon_days * DAY_MS
        examples: list[dict[str, Any]] = []
        for i, m in enumerate(members):
            snap, cts = got[2 * i], got[2 * i + 1]
            if snap is None:
                continue
            feats = snap.decode() if isinstance(snap, bytes) else snap
            cid, day = m.split("\x00")
            d, second = day.split(":")
            snap_ts = int(d) * DAY_MS + int(second) * 1000
            cancelled = cts is not None and snap_ts < int(cts) <= snap_ts + horizon_ms
            examples.append({"id": f"{cid}\x00{day}", "customer_id": cid, "ts": snap_ts, "y": cancelled,
                             "x": decode_features(feats)})
        if examples:
            await self.outputs.examples(examples)
            self.stats.examples += len(examples)
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.zrem(self.pending_key(), *members)
        for m in members:
            cid, day = m.split("\x00")
            pipe.hdel(self.store.keys(cid).snapshots, day)
        await pipe.execute()
        return len(examples)


class Learner:
    """The single learner: de-duplicates examples, learns, checkpoints to Redis (versioned)."""

    def __init__(self, redis: Any, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.prefix = settings.key_prefix
        self.model: ChurnModel | None = None
        self._last_checkpoint = 0.0
        self._since_checkpoint = 0

    async def load(self) -> ChurnModel:
        if self.model is None:
            blob = await self.redis.get(f"{self.prefix}model:blob")
            self.model = (
                ChurnModel.from_bytes(blob)
                if blob is not None
                else ChurnModel(self.settings.model_min_labels, self.settings.model_min_positives)
            )
        return self.model

    async def learn(self, examples: list[dict[str, Any]]) -> int:
        model = await self.load()
        pipe = self.redis.pipeline(transaction=False)
        for ex in examples:
            # a digest keeps the key printable whatever the customer id holds
            pipe.set(f"{self.prefix}model:seen:{digest(ex['id'], 12)}", 1, nx=True, ex=90 * 86400)
        fresh = await pipe.execute()
        learned = 0
        for ex, is_new in sorted(zip(examples, fresh), key=lambda t: t[0]["ts"]):
            if is_new:
                model.learn_one(ex["x"], bool(ex["y"]))
                learned += 1
        self._since_checkpoint += learned
        if self._since_checkpoint and (
            self._since_checkpoint >= 500 or time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s
        ):
            await self.checkpoint()
        return learned

    async def checkpoint(self) -> None:
        model = await self.load()
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(f"{self.prefix}model:blob", model.to_bytes())
        pipe.set(f"{self.prefix}model:summary", orjson.dumps(model.summary(), option=orjson.OPT_SERIALIZE_NUMPY))
        pipe.set(f"{self.prefix}model:version", model.version)
        await pipe.execute()
        self._since_checkpoint = 0
        self._last_checkpoint = time.monotonic()

