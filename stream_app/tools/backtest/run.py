"""Running a backtest: the history through ``Ingestor -> Scorer -> Learner`` on a real Redis
under a private key prefix (deleted afterwards), outputs collected in memory."""

from __future__ import annotations

import asyncio
import pickle
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from schemas import Alert, DeadLetter, ScoreSnapshot
from stream_app.core import Record
from stream_app.pipeline.clients import redis_client
from stream_app.pipeline.ingest import Ingestor
from stream_app.settings import Settings
from stream_app.state.store import StateStore, delete_prefix
from stream_app.tools.backtest.history import History, ordered_records, scan_history
from stream_app.tools.embedded import EmbeddedRedis, redis_reachable


class CollectingOutputs:
    """The pipeline's outputs, kept in memory (compactly) instead of published."""

    def __init__(self) -> None:
        #: (customer, event time ms, health score, served probability, raw probability)
        self.score_log: list[tuple[str, int, float, float, float]] = []
        self.alert_log: list[dict[str, Any]] = []
        self.dead = 0
        self.examples_learnt = 0

    async def dead_letters(self, letters: list[DeadLetter]) -> None:
        self.dead += len(letters)

    async def alerts(self, alerts: list[Alert]) -> None:
        for a in alerts:
            self.alert_log.append({"customer_id": a.customer_id, "kind": a.kind, "ts": int(a.ts.timestamp() * 1000),
                                "churn_probability": a.churn_probability, "severity": a.severity})

    async def scores(self, scores: list[ScoreSnapshot]) -> None:
        for s in scores:
            raw = s.churn_probability_raw if s.churn_probability_raw is not None else s.churn_probability
            self.score_log.append((s.customer_id, int(s.ts.timestamp() * 1000), s.health_score, s.churn_probability, raw))

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        self.examples_learnt += len(examples)  # the learner publishes what it learnt


@dataclass
class RunResult:
    """Everything a report is computed from (savable, to judge a run again without re-running it)."""

    history: History
    outputs: CollectingOutputs
    model_summary: dict[str, Any]
    events: int
    seconds: float
    settings: Settings

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    @staticmethod
    def load(path: str | Path) -> "RunResult":
        run = pickle.loads(Path(path).read_bytes())  # noqa: S301 - a file this command wrote
        if not isinstance(run, RunResult):
            raise TypeError(f"{path}: not a saved backtest run")
        return run


async def run_pipeline(path: str | Path, settings: Settings, redis: Any, history: History,
                       on_progress: Callable[[int], None] | None = None) -> RunResult:
    """Feed the history through Ingestor -> Scorer -> Learner on ``redis`` under ``settings.key_prefix``."""
    outputs = CollectingOutputs()
    clock = [0.0]
    # the wall clock of a live run is the newest event time (it only relaxes the future-ts
    # rule); the learner runs inline, completing event-time days as the watermark passes them
    ingestor = Ingestor(StateStore(redis, settings), settings, outputs, clock=lambda: clock[0], inline_learner=True)
    batch: list[Record] = []
    fed = 0
    started = time.monotonic()
    for ts, record in ordered_records(path, history, settings):
        batch.append(record)
        clock[0] = max(clock[0], ts / 1000)
        if len(batch) >= settings.batch_max:
            await ingestor.handle(batch)
            fed += len(batch)
            batch = []
            if on_progress:
                on_progress(fed)
    if batch:
        await ingestor.handle(batch)
        fed += len(batch)
    # the end of the log: release what still waits for the learner's checkpoints
    while ingestor.held() and await ingestor.pump():
        pass
    if on_progress:
        on_progress(fed)
    learner = ingestor.learner
    model = learner.model if learner is not None and learner.model is not None else ingestor.model.model
    return RunResult(history, outputs, model.summary(), fed, time.monotonic() - started, settings)


def backtest_settings(base: Settings, calibration: bool | None = None) -> Settings:
    """The run's settings: a private key prefix, optional calibration override."""
    update: dict[str, Any] = {"key_prefix": f"{base.key_prefix}backtest:{uuid.uuid4().hex[:10]}:"}
    if calibration is not None:
        update["model_calibration"] = calibration
    return base.model_copy(update=update)


async def run_backtest(path: str | Path, settings: Settings, redis: Any, *, customers_limit: int | None = None,
                       on_progress: Callable[[int], None] | None = None,
                       on_scanned: Callable[[History], None] | None = None) -> RunResult:
    """Scan, run and clean up (the private key prefix is deleted, also on failure)."""
    history = scan_history(path, settings, customers_limit)
    if on_scanned:
        on_scanned(history)
    try:
        return await run_pipeline(path, settings, redis, history, on_progress)
    finally:
        await delete_prefix(redis, settings.key_prefix)


# --- judging the scores -----------------------------------------------------------------------


def run_sync(path: str | Path, settings: Settings, *, customers_limit: int | None = None,
             on_progress: Callable[[int], None] | None = None,
             on_scanned: Callable[[History], None] | None = None) -> RunResult:
    """Run against the configured Redis (``REDIS_URL``; else the local server, else an embedded one)."""
    embedded = None
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    if not settings.redis_url and not redis_reachable(url):
        embedded = EmbeddedRedis().start()
        url = embedded.url
    settings = settings.model_copy(update={"redis_url": url})

    async def go() -> RunResult:
        client = redis_client(settings)
        try:
            return await run_backtest(path, settings, client, customers_limit=customers_limit,
                                      on_progress=on_progress, on_scanned=on_scanned)
        finally:
            await client.aclose()

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # asyncio.run cancels the run; its ``finally`` deletes the keys

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        return asyncio.run(go())
    finally:
        signal.signal(signal.SIGTERM, previous)
        if embedded is not None:
            embedded.stop()
