"""The single learner: turns due label snapshots into labelled examples and model checkpoints.

Labels arrive later: a snapshot of the model's features is frozen at most once per
``snapshot_every_days`` of event time per active customer, indexed by its due time
(snapshot + horizon). The learner (one per deployment: the Faust leader) completes event-time
days in order: once the watermark passes the start of day D it resolves every snapshot due
before D (positive if the customer cancelled within the horizon), learns them in (due, id)
order and checkpoints "the model through day D", atomically with removing them from the
pending index (on Redis Cluster, where these keys sit in different slots: key by key, with a
check-and-set of ``model:through`` as the commit point, see ``_commit_by_key``). Scoring an event of day d uses the checkpoint of day ``d - model_lag_days``
(events wait until it exists), so which model scored an event is a function of event time,
not of how fast the learner happened to run: a replay gives the same probabilities.
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.exceptions import WatchError

from stream_app.core import DAY_MS, Outputs, text
from stream_app.model.churn import ChurnModel, new_model
from stream_app.model.features import decode_features
from stream_app.settings import INPUT_TOPICS, Settings
from stream_app.state import layout
from stream_app.state.cluster import CHECK_AND_SET, is_cluster
from stream_app.state.layout import Keys
from stream_app.state.store import StateStore


class Learner:
    """The single learner: completes event-time days in order (see the module docstring)."""

    #: checkpoints kept (days of event time); scorers need only the last few
    KEEP_DAYS = 60

    def __init__(self, store: StateStore, settings: Settings, outputs: Outputs | None = None) -> None:
        self.store = store
        self.redis = store.redis
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.outputs = outputs
        self.model: ChurnModel | None = None
        self._model_day: int | None = None
        self.learned = 0

    async def _load(self, through: int) -> ChurnModel:
        """The model as of the end of day ``through`` (from memory unless another learner
        moved on meanwhile, e.g. after a leader change)."""
        if self.model is None or self._model_day != through:
            got = await self.redis.zrevrangebyscore(self.keys.model_days, through, "-inf", start=0, num=1)
            ref = text(got[0]) if got else None
            blob = await self.redis.get(self.keys.model_blob(ref)) if ref else None
            self.model = ChurnModel.from_bytes(blob) if blob is not None else new_model(self.settings.sections.model)
            self.model.calibrate = self.settings.model_calibration
            self._model_day = through
        return self.model

    async def advance(self, max_steps: int = 31) -> int:
        """Complete the days the watermark has passed; returns how many steps it took.
        Days without any label due are completed together in one step."""
        raw = await self.redis.get(self.keys.model_through)
        if raw is None:
            return 0
        through = int(raw)
        parts = [(self.settings.topic(t), p) for t in INPUT_TOPICS for p in range(self.settings.topic_partitions)]
        wm = await self.store.progress_watermark(parts)
        if wm is None or wm // DAY_MS <= through:
            return 0
        target = wm // DAY_MS
        pending = self.keys.labels_pending
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
        pending = self.keys.labels_pending
        cluster = is_cluster(self.redis)
        # on a cluster a commit is not atomic (below): what is left due before `through` is a
        # crashed commit's, already learnt, and is only removed
        low = f"{through * DAY_MS}" if cluster else "-inf"
        due = await self.redis.zrangebyscore(pending, low, f"({day * DAY_MS}")
        members = [text(m) for m in due]
        examples = await self._resolve(members)
        for ex in examples:
            model.learn_one(ex["x"], bool(ex["y"]))
        self.learned += len(examples)
        commit = self._commit_by_key if cluster else self._commit
        done = await commit(model, through, day, bool(examples), members)
        if done is None:
            return False
        self._model_day = day
        await self._collect(day)
        if done:
            pipe = self.redis.pipeline(transaction=False)
            for m in done:
                cid, snap = m.rsplit("\x00", 1)  # a customer id may hold a NUL, the snapshot never
                pipe.hdel(self.store.keys(cid).snapshots, snap)
            await pipe.execute()
        if examples and self.outputs is not None:
            await self.outputs.examples(examples)
        return True

    async def _commit(self, model: ChurnModel, through: int, day: int, learnt: bool,
                      members: list[str]) -> list[str] | None:
        """The day's checkpoint, ``through`` and the pending index in one transaction; returns
        the labels it removed from the index, None if another learner moved on."""
        pending = self.keys.labels_pending
        # check-and-set on `through`: during a leadership hand-over two learners may briefly
        # run; only one completes a day, the other starts again from the checkpoint
        async with self.redis.pipeline(transaction=True) as tx:
            await tx.watch(self.keys.model_through)
            current = await tx.get(self.keys.model_through)
            if current is None or int(current) != through:
                self.model = None
                return None
            tx.multi()
            if learnt:
                model.decide()  # the champion serving from this checkpoint on, stored with it
                tx.set(self.keys.model_blob(day), model.to_bytes())
                tx.zadd(self.keys.model_days, {str(day): day})
                tx.set(self.keys.model_summary, orjson.dumps(model.summary(), option=orjson.OPT_SERIALIZE_NUMPY))
                tx.set(self.keys.model_version, model.version)
            tx.set(self.keys.model_through, day)
            if members:
                tx.zrem(pending, *members)
            await tx.execute()  # WatchError: another learner moved on; the caller's except resets
        return members

    async def _commit_by_key(self, model: ChurnModel, through: int, day: int, learnt: bool,
                             members: list[str]) -> list[str] | None:
        """The same commit on Redis Cluster, where these keys sit in different slots: one key
        at a time, with the check-and-set of ``through`` as the commit point. The checkpoint
        of ``day`` is written first (no scorer reads a day beyond ``through``; a retry writes
        it again), the pending labels are removed after (a crash in between leaves them due
        before ``through``, where the next step only removes them: learnt once)."""
        if learnt:
            model.decide()
            await self.redis.set(self.keys.model_blob(day), model.to_bytes())
            await self.redis.zadd(self.keys.model_days, {str(day): day})
            await self.redis.set(self.keys.model_summary,
                                 orjson.dumps(model.summary(), option=orjson.OPT_SERIALIZE_NUMPY))
            await self.redis.set(self.keys.model_version, model.version)
        moved = await self.redis.eval(CHECK_AND_SET, 1, self.keys.model_through, through, day)
        if not int(moved):  # another learner moved on: start again from the checkpoint
            self.model = None
            return None
        stale = await self.redis.zrangebyscore(self.keys.labels_pending, "-inf", f"({through * DAY_MS}")
        gone = members + [text(m) for m in stale]
        if gone:
            await self.redis.zrem(self.keys.labels_pending, *gone)
        return gone

    async def _collect(self, day: int) -> None:
        """Drop checkpoints that serve only days older than KEEP_DAYS (keep the one serving
        the oldest kept day)."""
        old = await self.redis.zrangebyscore(self.keys.model_days, "-inf", day - self.KEEP_DAYS)
        for ref in old[:-1]:
            r = text(ref)
            await self.redis.zrem(self.keys.model_days, r)
            await self.redis.delete(self.keys.model_blob(r))

    async def _resolve(self, members: list[str]) -> list[dict[str, Any]]:
        if not members:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for m in members:
            cid, snap = m.rsplit("\x00", 1)
            k = self.store.keys(cid)
            pipe.hget(k.snapshots, snap)
            pipe.hget(k.main, layout.CANCELLED_AT)
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
            out.append({"id": m, "customer_id": cid, "ts": snap_ts, "y": cancelled, "x": decode_features(text(feats))})
        return out

