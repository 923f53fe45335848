"""The segmentation model pinned to event-time days, shared through Redis (deterministic).

Segments are state shared across customers, so the order the model learns in must not depend
on how the input was batched, which worker scored what, or a restart. As with the churn model
(``scorer.ModelHolder``), learning is pinned to event-time days:

* each active customer's **first scoring of a day** is that day's observation of it, stored
  in ``pf:{pf}:obs:<day>`` (``HSETNX``: a replay or another worker writes the same one). It
  also rides in the customer's outbox, saved atomically with the score state, so a crash
  between the scoring and this store re-stores it from the outbox (``Scorer.process``);
* learning starts at the first day with an observation (``seg:obsdays``), a fact of the
  input: not when a worker happened to get there first;
* day ``D`` is learnt once it is complete: the churn learner's ``model:through`` passing
  ``D`` means every event before day ``D + 1`` was scored (its progress watermark), so
  every observation of ``D`` is stored. The day's observations are learnt in (event time,
  customer id) order and the result is checkpointed as ``pf:{pf}:seg:blob:<D>``; a worker
  finding the checkpoint loads it instead of learning again (every worker would compute
  the same model). A day without observations changes nothing and gets no checkpoint: the
  one before it serves it;
* a scoring on day ``d`` is assigned by the model through day ``d - model_lag_days - 1``:
  events of day ``d`` are only released once ``model:through >= d - model_lag_days``, so
  that day is complete and the assignment is the same however the input arrived.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterable
from typing import Any

from stream_app.core import DAY_MS, text
from stream_app.portfolio.segments import FEATURES, SegmentConfig, SegmentModel
from stream_app.state.layout import Keys, PortfolioKeys

log = logging.getLogger(__name__)

#: observations and checkpoints kept behind the newest learnt day (a restarted worker
#: resumes from a checkpoint and needs the observation days after it)
KEEP_DAYS = 14
#: in-memory snapshots (one per learnt day): enough to assign the days still being scored
_SNAPSHOTS = 64


def encode_observation(k: int, features: dict[str, float]) -> str:
    """``"<order time>,<f1>,...,<f8>"``, features rounded (what is learnt is what is stored)."""
    return f"{k}," + ",".join(f"{features.get(f, 0.5):.4f}" for f in FEATURES)


def decode_observation(text: str) -> tuple[int, dict[str, float]]:
    k, *vals = text.split(",")
    return int(k), {f: float(v) for f, v in zip(FEATURES, vals)}


class DailySegments:
    """Learns the segmentation day by day from Redis and assigns with the pinned model."""

    def __init__(self, names: Keys, keys: PortfolioKeys, cfg: SegmentConfig, lag_days: int) -> None:
        self.cfg = cfg
        self.lag = lag_days
        self.keys = keys
        self.k_through = names.model_through
        self.k_origin = keys.seg_origin
        self.k_days = keys.seg_days
        self.k_obs_days = keys.seg_obs_days  # days with observations (zset; the first fixes the origin)
        self.through: int | None = None  # last day learnt (in this process)
        self.model = SegmentModel(cfg)
        self._days: list[int] = []
        self._snapshots: dict[int, SegmentModel] = {}
        self._origin: int | None = None
        self._untrained: SegmentModel | None = None
        #: (day, customer) observations this process stored already (HSETNX would keep the first anyway)
        self._stored: dict[int, set[str]] = {}

    def k_obs(self, day: int) -> str:
        return self.keys.obs(day)

    def k_blob(self, day: int) -> str:
        return self.keys.seg_blob(day)

    async def observe(self, redis: Any, observations: Iterable[tuple[int, str, dict[str, float]]]) -> None:
        """Store ``(order time, customer id, features)`` of active customers' scorings; the
        first of each customer's day is kept."""
        first: dict[tuple[int, str], tuple[int, dict[str, float]]] = {}
        for k, cid, features in observations:
            key = (k // DAY_MS, cid)
            if cid in self._stored.get(key[0], ()):
                continue
            if key not in first or k < first[key][0]:
                first[key] = (k, features)
        if not first:
            return
        pipe = redis.pipeline(transaction=False)
        for (day, cid), (k, features) in first.items():
            pipe.hsetnx(self.k_obs(day), cid, encode_observation(k, features))
        pipe.zadd(self.k_obs_days, {str(day): day for day, _ in first}, nx=True)
        await pipe.execute()
        for day, cid in first:
            self._stored.setdefault(day, set()).add(cid)
        while len(self._stored) > 3:  # days still being scored
            self._stored.pop(min(self._stored))

    async def advance(self, redis: Any, max_days: int = 400) -> int:
        """Learn every complete day not learnt yet; returns how many days with observations
        it learnt (at most ``max_days``; the days without any pass in the same step)."""
        raw = await redis.get(self.k_through)
        if raw is None:
            return 0
        complete = int(raw) - 1  # through D: every event before day D is done
        if self._origin is None:
            # the day before the first observed day: a fact of the input, not of when a worker
            # first got here (every worker, restart and replay finds the same origin). No
            # observation can arrive any more for a complete day, so once the first observed
            # day is complete, it is final.
            origin = await redis.get(self.k_origin)
            if origin is None:
                first = await redis.zrange(self.k_obs_days, 0, 0)
                if not first or int(text(first[0])) > complete:
                    return 0
                await redis.set(self.k_origin, int(text(first[0])) - 1, nx=True)
                origin = await redis.get(self.k_origin)
            self._origin = int(text(origin))
        if self.through is None:
            # a (re)started worker: the newest checkpoints, oldest first, enough to assign the
            # days still being scored (day d needs the model through d - lag - 1)
            got = await redis.zrevrangebyscore(self.k_days, complete, "-inf", start=0, num=self.lag + 3)
            days = sorted(int(text(g)) for g in got)
            blobs = await redis.mget([self.k_blob(d) for d in days]) if days else []
            for day, blob in zip(days, blobs):
                if blob is not None:
                    self.through = day
                    self.model = SegmentModel.from_bytes(blob, self.cfg)
                    self._keep(day, blob)
            if self.through is None:
                self.through = self._origin
                self._keep(self.through)
        if self.through >= complete:
            return 0
        # a day without observations leaves the model as it is: no checkpoint, nothing to
        # learn (a stray event years old would otherwise make every worker walk those years
        # day by day); ``model_for`` serves such a day the checkpoint before it
        days = [int(text(d)) for d in await redis.zrangebyscore(
            self.k_obs_days, self.through + 1, complete, start=0, num=max_days)]
        pipe = redis.pipeline(transaction=False)
        for day in days:
            pipe.get(self.k_blob(day))
            pipe.hgetall(self.k_obs(day))
        got = await pipe.execute() if days else []
        writes = redis.pipeline(transaction=False)
        for i, day in enumerate(days):
            blob, obs = got[2 * i], got[2 * i + 1]
            if blob is not None:  # another worker learnt it: the same model
                self.model = SegmentModel.from_bytes(blob, self.cfg)
            else:
                decoded = sorted((decode_observation(text(v)) + (text(c),) for c, v in obs.items()),
                                 key=lambda o: (o[0], o[2]))
                for _, features, _ in decoded:
                    self.model.assign(features, learn=True)
                blob = self.model.to_bytes()
                writes.set(self.k_blob(day), blob)
                writes.zadd(self.k_days, {str(day): day})
            self.through = day
            self._keep(day, blob)
        if len(writes):
            await writes.execute()
        if len(days) < max_days:  # every observed day up to ``complete`` is learnt
            self.through = complete
        await self._collect(redis)
        return len(days)

    def _keep(self, day: int, blob: bytes | None = None) -> None:
        self._snapshots[day] = SegmentModel.from_bytes(blob or self.model.to_bytes(), self.cfg)
        self._days.append(day)
        while len(self._days) > _SNAPSHOTS:
            self._snapshots.pop(self._days.pop(0), None)

    async def _collect(self, redis: Any) -> None:
        """Drop checkpoints and observations older than KEEP_DAYS behind the newest learnt
        day, but keep the newest such checkpoint: it serves the days after it that had no
        observations, and a restarted worker resumes from it."""
        assert self.through is not None
        old = self.through - KEEP_DAYS
        reads = redis.pipeline(transaction=False)
        reads.zrangebyscore(self.k_days, "-inf", f"({old}")
        reads.zrangebyscore(self.k_obs_days, "-inf", f"({old}")
        stale, obs_days = await reads.execute()
        keys = [self.k_blob(int(text(d))) for d in stale[:-1]]
        keys += [self.k_obs(int(text(d))) for d in obs_days]
        if not keys:
            return
        pipe = redis.pipeline(transaction=False)
        # every key shares {pf} (one slot); as a plain command: a cluster pipeline's unlink() is a
        # coroutine taking one key
        pipe.execute_command("UNLINK", *keys)
        if len(stale) > 1:
            pipe.zrem(self.k_days, *stale[:-1])
        pipe.zremrangebyscore(self.k_obs_days, "-inf", f"({old}")
        await pipe.execute()

    def model_for(self, day: int) -> SegmentModel:
        """The model that assigns scorings of event-time ``day``: through ``day - lag - 1``."""
        target = day - self.lag - 1
        i = bisect_right(self._days, target) - 1
        if i >= 0:
            return self._snapshots[self._days[i]]
        if self._days and (self._origin is None or target > self._origin):
            # older than the snapshots kept in memory (a partition far behind): the oldest kept
            log.warning("segment model for day %d no longer in memory; using day %d's", target, self._days[0])
            return self._snapshots[self._days[0]]
        if self._untrained is None:
            self._untrained = SegmentModel(self.cfg)
        return self._untrained  # before the first day: the untrained model

    async def latest(self, redis: Any) -> SegmentModel:
        """The newest checkpoint (read side)."""
        got = await redis.zrevrange(self.k_days, 0, 0)
        blob = await redis.get(self.k_blob(int(text(got[0])))) if got else None
        return SegmentModel.from_bytes(blob, self.cfg) if blob is not None else SegmentModel(self.cfg)
