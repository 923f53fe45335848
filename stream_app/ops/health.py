"""Operations inside the worker: ``/metrics``, ``/health``, the watchdog, the HTTP token.

``mount_ops(app, settings, runtime)`` (one call in ``create_app``) wires it all on Faust's own
aiohttp web server (``WEB_ENABLED``, ``WEB_PORT``):

* it becomes the ingestor's :class:`~stream_app.pipeline.observer.PipelineObserver` (records consumed,
  the latency histogram, per-partition progress for the watchdog) and counts published alerts
  by kind and severity by wrapping the outputs;
* ``GET /metrics``: Prometheus text (:mod:`stream_app.ops.metrics`);
* ``GET /health``: 200 when the watchdog finds the worker ok, 503 otherwise, JSON details
  (to anonymous callers only ``{"status": ...}`` when ``WEB_TOKEN`` is set);
* a Faust timer runs the watchdog (:mod:`stream_app.ops.watchdog`) every ``WATCHDOG_INTERVAL_S``:
  it logs a stall or crash at ERROR and, ``WATCHDOG_GRACE_S`` later, exits the process with
  ``WATCHDOG_EXIT_CODE`` for the supervisor to restart it (a hard exit, like a SIGKILL: nothing
  un-applied was acknowledged, so Kafka redelivers it);
* every route of the web server requires ``WEB_TOKEN`` when set (:mod:`stream_app.ops.security`).

After an agent crash, ingestion is held (each new batch waits in the observer) until the
process exits: Faust would restart the crashed agent and carry on after the failed batch, and
the partition progress of later batches would then make the failed batch look handled when
Kafka redelivers it after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web

from stream_app.core import Record, RecordKey
from stream_app.ops.kpi_metrics import KpiCache, PortfolioCollector
from stream_app.ops.metrics import (
    CONTENT_TYPE,
    STAGE_PROCESSED,
    STAGE_RECEIVED,
    PipelineMetrics,
    Sources,
)
from stream_app.ops.security import install_token_auth, is_authenticated
from stream_app.ops.watchdog import Report, Watchdog
from stream_app.pipeline.clients import redis_client
from stream_app.read.queries import model_summary
from stream_app.settings import Settings
from stream_app.state.store import StateStore
from stream_app.testing.faults import faults_for

if TYPE_CHECKING:
    import faust

    from stream_app.pipeline.ingest import Ingestor
    from stream_app.pipeline.runtime import Runtime

log = logging.getLogger(__name__)

#: how often a persisting stall or crash is logged again (seconds)
LOG_EVERY_S = 10.0
#: the model summary is read from Redis at most this often, at scrape time (seconds)
MODEL_SUMMARY_TTL_S = 5.0
#: the portfolio KPI gauges are re-read from Redis at most this often (they move per event)
KPI_TTL_S = 15.0
#: the broker is asked for the input partitions' end offsets at most this often (seconds)
OFFSETS_EVERY_S = 2.0


class CountingOutputs:
    """Wraps the pipeline's outputs; counts alerts by (kind, severity) once acknowledged."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.alert_counts: Tally[tuple[str, str]] = Tally()

    async def dead_letters(self, letters: list[Any]) -> None:
        await self.inner.dead_letters(letters)

    async def alerts(self, alerts: list[Any]) -> None:
        await self.inner.alerts(alerts)
        for a in alerts:
            self.alert_counts[(a.kind, a.severity)] += 1

    async def scores(self, scores: list[Any]) -> None:
        await self.inner.scores(scores)

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        await self.inner.examples(examples)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _hard_exit(code: int) -> None:
    for handler in logging.getLogger().handlers:
        try:
            handler.flush()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Ops:
    """Metrics, watchdog and fault injection of one worker process; the ingestor's observer."""

    def __init__(
        self,
        settings: Settings,
        ingestor: Callable[[], Ingestor | None] = lambda: None,
        *,
        mono: Callable[[], float] = time.monotonic,
        exit_fn: Callable[[int], None] = _hard_exit,
        redis: Any = None,
    ) -> None:
        self.settings = settings
        self._ingestor = ingestor
        self.mono = mono
        self.exit = exit_fn
        self.app: faust.App | None = None
        self.watchdog = Watchdog(settings.stall_after_s, settings.watchdog_grace_s)
        #: test-only fault injection: built only when a FAULT_* setting is set (else inert)
        self.faults = faults_for(settings.sections.ops)
        self.outputs: CountingOutputs | None = None
        self.errors: Tally[str] = Tally()
        self._redis = redis
        self._model: Mapping[str, Any] | None = None
        self._model_read_at = -1e18
        self._held = asyncio.Event()  # never set: ingestion waits here after an agent crash
        self._last_status = "ok"
        self._last_logged = -1e18
        self._offsets_task: asyncio.Future[None] | None = None
        #: Kafka timestamps of records received and not done yet, for the latency histogram
        self._timestamps: dict[RecordKey, int | None] = {}
        self._assigned: frozenset[tuple[str, int]] = frozenset()
        self._offsets_at = -1e18
        self.metrics = PipelineMetrics(
            Sources(
                ingest=lambda: self.ingestor.stats if self.ingestor is not None else None,
                scoring=lambda: self.ingestor.scorer.stats if self.ingestor is not None else None,
                alerts=lambda: dict(self.outputs.alert_counts) if self.outputs is not None else {},
                model=lambda: self._model,
                watchdog=self.report,
                errors=lambda: dict(self.errors),
            )
        )
        # issue 7: the live portfolio KPIs as gauges (current month and quarter, overall and per
        # segment, cohorts); read from the per-period sums at most every KPI_TTL_S, on scrape
        self.kpis: KpiCache | None = KpiCache(settings, ttl_s=KPI_TTL_S, clock=self.mono) if settings.portfolio_enabled else None
        if self.kpis is not None:
            self.metrics.registry.register(PortfolioCollector(self.kpis, namespace="churnstream"))

    @property
    def ingestor(self) -> Ingestor | None:
        """The worker's ingestor (None until the first ingest agent created it)."""
        return self._ingestor()

    # --- PipelineObserver ----------------------------------------------------------------
    async def received(self, records: Sequence[Record], now: float) -> None:
        self.metrics.received(records)
        self.metrics.stage(STAGE_RECEIVED, (r.timestamp_ms for r in records), now)
        ts = self._timestamps
        for r in records:  # until done (held records wait for event-time order)
            ts[(r.topic, r.partition, r.offset)] = r.timestamp_ms
        self.watchdog.received(records, self.mono())
        if self.watchdog.crashes:
            r = records[0]
            log.error("ingestion held after an agent crash: batch from %s[%d]@%d waits for the restart",
                      r.topic, r.partition, r.offset)
            await self._held.wait()
        if self.faults.enabled:
            await self.faults.before_batch(records)

    def handled(self, records: Sequence[Record], done: Sequence[RecordKey], now: float) -> None:
        self.done(done, now)
        self.watchdog.handled(records, self.mono())

    def done(self, keys: Sequence[RecordKey], now: float) -> None:
        pop = self._timestamps.pop
        items = [(t, p, o, pop((t, p, o), None)) for t, p, o in keys]
        self.metrics.stage(STAGE_PROCESSED, (i[3] for i in items), now)
        self.watchdog.done(items, self.mono())

    # --- agent crashes ---------------------------------------------------------------------
    async def on_agent_error(self, agent: Any, exc: BaseException) -> None:
        name = str(getattr(agent, "name", agent))
        self.metrics.crashes.labels(name).inc()
        self.watchdog.agent_crashed(name, f"{type(exc).__name__}: {exc}", self.mono())
        log.error("watchdog: agent %s crashed (%s: %s); ingestion is held and the worker exits in %.0fs "
                  "so the failed batch is redelivered after the restart",
                  name, type(exc).__name__, exc, self.settings.watchdog_grace_s)

    # --- health --------------------------------------------------------------------------
    def report(self) -> Report:
        return self.watchdog.check(self.mono())

    async def tick(self) -> Report:
        """One watchdog round: refresh offsets from the consumer, judge, log, maybe exit."""
        if self.app is not None:
            await self._sync_consumer(self.app)
        ingestor = self.ingestor
        if ingestor is not None:
            st = ingestor.stats
            self.watchdog.dependency_errors(st.redis_retries, self.mono())
            # work moves these inside a long batch too (scored: per event), before anything is done
            self.watchdog.activity(
                ingestor.scorer.stats.scored + st.batches + st.total("applied") + st.total("dead_lettered")
                + st.total("redelivered"),
                self.mono(),
            )
        rep = self.report()
        self._log(rep)
        if rep.exit_now and self.settings.watchdog_exit:
            log.critical(
                "watchdog: exiting with status %d so the supervisor restarts the worker (%s for %.0fs): %s",
                self.settings.watchdog_exit_code, rep.status, rep.unhealthy_for_s, "; ".join(rep.reasons),
            )
            self.exit(self.settings.watchdog_exit_code)
        return rep

    async def _sync_consumer(self, app: faust.App) -> None:
        topics = self.settings.input_topics
        try:
            consumer = app.consumer
            assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
        except Exception:  # noqa: BLE001 - consumer not started yet (or rebalancing)
            return
        now = self.mono()
        owned = frozenset((tp.topic, tp.partition) for tp in assigned)
        self.watchdog.assignment(owned, now)
        if owned != self._assigned:  # revoked partitions' held records are re-fetched elsewhere
            self._assigned = owned
            self._timestamps = {k: v for k, v in self._timestamps.items() if (k[0], k[1]) in owned}
        if not assigned:
            return
        cached: dict[tuple[str, int], int] = {}
        for tp in assigned:  # the end offsets of the last fetch responses (no request)
            try:
                hw = consumer.highwater(tp)
            except Exception:  # noqa: BLE001
                continue
            if hw is not None:
                cached[(tp.topic, tp.partition)] = hw
        committed = getattr(consumer, "_committed_offset", {})  # Faust's view of the group's commits
        self.watchdog.offsets(cached, {(tp.topic, tp.partition): committed.get(tp) for tp in assigned}, now)
        # Fetch responses stop when fetching is stuck (the silent stall), so the end offsets are
        # also asked of the broker, in the background: a ListOffsets request waits behind the
        # consumer's long-polling fetch (~1 s here), longer than a watchdog tick should take.
        if (self._offsets_task is None or self._offsets_task.done()) and now - self._offsets_at >= OFFSETS_EVERY_S:
            self._offsets_at = now
            self._offsets_task = asyncio.ensure_future(self._refresh_offsets(consumer, assigned))

    async def _refresh_offsets(self, consumer: Any, assigned: list[Any]) -> None:
        try:
            hw = await asyncio.wait_for(consumer.highwaters(*assigned), timeout=10.0)
            self.watchdog.offsets({(tp.topic, tp.partition): v for tp, v in hw.items() if v is not None}, {},
                                  self.mono())
            unknown = [tp for tp in assigned
                       if (st := self.watchdog.partitions.get((tp.topic, tp.partition))) is not None
                       and st.needs_start()]
            if unknown:  # never committed, nothing received: the group starts at the log's first offset
                first = await asyncio.wait_for(consumer.earliest_offsets(*unknown), timeout=10.0)
                self.watchdog.offsets({}, {}, self.mono(),
                                      earliest={(tp.topic, tp.partition): v for tp, v in first.items() if v is not None})
        except Exception as exc:  # noqa: BLE001 - the broker may be away; judge on what we know
            log.debug("watchdog: offsets unavailable: %s", exc)

    def _log(self, rep: Report) -> None:
        now = self.mono()
        if rep.status in ("stalled", "crashed"):
            if self._last_status != rep.status or now - self._last_logged >= LOG_EVERY_S:
                exiting = (f"exiting in {rep.exit_in_s:.0f}s unless it recovers" if self.settings.watchdog_exit
                           else "WATCHDOG_EXIT is off: not exiting")
                log.error("watchdog: worker %s: %s; %s", rep.status.upper(), "; ".join(rep.reasons), exiting)
                self._last_logged = now
        elif rep.status == "degraded" and self._last_status != "degraded":
            log.warning("watchdog: worker degraded: %s", "; ".join(rep.reasons))
        elif rep.status == "ok" and self._last_status in ("stalled", "crashed"):
            log.warning("watchdog: worker recovered")
        self._last_status = rep.status

    # --- model summary and portfolio KPIs (read at scrape time) ----------------------------
    def _client(self) -> Any:
        """The Redis client for scrape-time reads (created on first use)."""
        if self._redis is None:
            self._redis = redis_client(self.settings)
        return self._redis

    async def refresh_model(self) -> None:
        if self.mono() - self._model_read_at < MODEL_SUMMARY_TTL_S:
            return
        self._model_read_at = self.mono()
        try:
            self._model = await asyncio.wait_for(
                model_summary(StateStore(self._client(), self.settings), self.settings), timeout=2.0
            )
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis is away
            self.errors["metrics"] += 1
            log.warning("metrics: model summary unavailable (%s)", type(exc).__name__)

    # --- HTTP ------------------------------------------------------------------------------
    async def refresh_kpis(self) -> None:
        if self.kpis is None:
            return
        try:
            await asyncio.wait_for(self.kpis.get(self._client()), timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Redis is away
            self.errors["metrics"] += 1
            log.warning("metrics: portfolio KPIs unavailable (%s)", type(exc).__name__)

    async def metrics_view(self, request: web.Request) -> web.Response:
        await self.refresh_model()
        await self.refresh_kpis()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def health_view(self, request: web.Request) -> web.Response:
        rep = self.report()
        code = 200 if rep.healthy else 503
        if not is_authenticated(request):
            return web.json_response({"status": rep.status}, status=code)
        body: dict[str, Any] = rep.as_dict()
        body["settings"] = {"stall_after_s": self.settings.stall_after_s,
                            "watchdog_grace_s": self.settings.watchdog_grace_s,
                            "watchdog_exit": self.settings.watchdog_exit}
        return web.json_response(body, status=code)

    def routes(self, web_app: web.Application) -> None:
        install_token_auth(web_app, self.settings)
        web_app.router.add_get("/metrics", self.metrics_view)
        web_app.router.add_get("/health", self.health_view)


def mount_ops(app: faust.App, settings: Settings, runtime: Runtime) -> Ops:
    """Wire metrics, health, the watchdog and the HTTP token into a Faust app (see the module)."""
    ops = Ops(settings, ingestor=lambda: runtime.current_ingestor)  # created by the first agent
    ops.app = app
    ops.outputs = CountingOutputs(runtime.outputs)
    runtime.outputs = ops.outputs  # the ingestor is created lazily, from these
    runtime.observer = ops
    ops.routes(app.web.web_app)
    for agent in app.agents.values():
        # faust-streaming 0.15 calls ``agent._on_error(agent, exc)`` before restarting a crashed
        # actor; create_app passes no on_error, so this is the only handler (kept chained anyway)
        previous = getattr(agent, "_on_error", None)

        async def on_error(a: Any, exc: BaseException, previous: Any = previous) -> None:
            await ops.on_agent_error(a, exc)
            if previous is not None:
                await previous(a, exc)

        agent._on_error = on_error

    @app.timer(settings.watchdog_interval_s, name="stream_app.watchdog")
    async def watchdog() -> None:
        try:
            await ops.tick()
        except Exception:
            log.exception("watchdog: check failed")

    if ops.faults.enabled:
        log.warning("FAULT INJECTION IS ON (FAULT_FREEZE_MARKER / FAULT_CRASH_MARKER): test use only")
    return ops
