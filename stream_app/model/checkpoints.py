"""The scorers' view of the churn model: the checkpoint pinned to an event-time day.

Looked up before scoring (``pipeline.scorer``), so the scoring itself is a function of its inputs.
"""

from __future__ import annotations

import logging
from typing import Any

from stream_app.core import DAY_MS, text
from stream_app.model.churn import ChurnModel, new_model
from stream_app.settings import ModelSettings
from stream_app.state.layout import Keys

log = logging.getLogger(__name__)

#: the checkpoint reference of the untrained model (the health prior)
PRIOR = "prior"


class ModelHolder:
    """The scorers' view of the model: the checkpoint pinned to an event-time day.

    ``model:through`` is the last day the learner completed; the sorted set ``model:days``
    maps each day a checkpoint was written (score) to its blob (``model:blob:<day>``), which
    serves that day and the following ones up to the next checkpoint. Before the first, the
    untrained model (the health prior) serves.
    """

    def __init__(self, settings: ModelSettings, key_prefix: str) -> None:
        self.settings = settings
        self.keys = Keys(key_prefix)
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
        raw = await redis.get(self.keys.model_through)
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
            await redis.set(self.keys.model_through, first_k // DAY_MS - self.lag, nx=True)
            through = await self.load_through(redis)
            assert through is not None
        return (through + self.lag + 1) * DAY_MS

    async def for_day(self, redis: Any, day: int) -> ChurnModel:
        need = day - self.lag
        ref = self._refs.get(need)
        if ref is None:
            got = await redis.zrevrangebyscore(self.keys.model_days, need, "-inf", start=0, num=1)
            ref = text(got[0]) if got else PRIOR
            if self.through is not None and need <= self.through:  # final: cache it
                self._refs[need] = ref
                if len(self._refs) > 64:
                    self._refs.pop(next(iter(self._refs)))
        if ref == PRIOR:
            return self._prior
        model = self._models.get(ref)
        if model is None:
            blob = await redis.get(self.keys.model_blob(ref))
            if blob is None:  # collected already: only a replica far behind asks for it
                log.warning("model checkpoint %s is gone; scoring day %d with the newest loaded model", ref, day)
                return self.model
            model = self._models[ref] = ChurnModel.from_bytes(blob)
            model.calibrate = self.settings.model_calibration  # this deployment's choice
            while len(self._models) > 3:
                self._models.pop(next(iter(self._models)))
        return model
