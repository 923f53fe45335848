"""The live dashboard: one page and its JSON/SSE API, as an aiohttp application.

Served two ways, the same app both times, under ``/dashboard/`` on ``WEB_PORT``:

* by the worker, through Faust's own aiohttp web server (``mount_dashboard`` in ``create_app``;
  needs ``WEB_ENABLED=true``), and
* standalone by ``stream-app dashboard`` (``run_dashboard``), against ``REDIS_URL`` and ``BROKER_URL``.

Read side only. Redis gives the at-risk ranking (the ``{prefix}risk`` sorted set: a page costs
O(log n + page), whatever the number of customers), the rows, a customer's state, the model
summary, and, through one cached background pass, the portfolio tiles and per-band rankings
(``stream_app.read.tiles``). Kafka gives the live alert feed, pushed to the page with
server-sent events, and churn-probability history (``stream_app.web.feeds``).

Endpoints (relative to ``/dashboard/``)::

    GET  /                      the page (static HTML + JS, Chart.js; no build step)
    GET  api/at-risk            ?band=red|yellow|green&offset=0&limit=25
    GET  api/portfolio          tiles and the health-score distribution
    GET  api/kpis               live portfolio KPIs: recent months, current quarter, cohorts
    GET  api/customer           ?id=<customer id>
    GET  api/alerts             ?limit=50[&customer_id=...]  newest first
    GET  api/stream             server-sent events: "alert" (id = sequence number; Last-Event-ID resumes)
    GET  api/model              the churn model's summary
    GET  api/customers/{id}     current health, band, churn probability, reasons, last change (``web.api``)
    GET  api/openapi.json       the OpenAPI 3 document of these JSON endpoints

``api/customers/{id}`` and ``api/openapi.json`` are also served at the root (``/api/...``).

Bad parameters get ``400 {"error": "<field>: <message> (<rule>)", "errors": [{field, rule, message}]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import field_error, format_errors, format_validation_error
from stream_app.ops.kpi_metrics import KpiCache
from stream_app.ops.security import install_token_auth
from stream_app.pipeline.clients import redis_client
from stream_app.read.queries import customer_detail, model_summary, risk_page
from stream_app.read.tiles import PortfolioCache
from stream_app.settings import Settings
from stream_app.state.store import StateStore
from stream_app.web.api import customer_handler, openapi_handler
from stream_app.web.feeds import LiveFeeds

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
STATIC_DIR = Path(str(resources.files("stream_app.web").joinpath("static")))

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
STORE: web.AppKey[StateStore] = web.AppKey("store", StateStore)
FEEDS: web.AppKey[LiveFeeds] = web.AppKey("feeds", LiveFeeds)
PORTFOLIO: web.AppKey[PortfolioCache] = web.AppKey("portfolio", PortfolioCache)
TASKS: web.AppKey[list[asyncio.Task[None]]] = web.AppKey("tasks", list)
KPIS: web.AppKey[KpiCache] = web.AppKey("kpis", KpiCache)


# --- request models ----------------------------------------------------------------------------
class AtRiskQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    band: Literal["red", "yellow", "green"] | None = None
    offset: int = Field(0, ge=0, le=10_000_000)
    limit: int = Field(25, ge=1, le=200)


class CustomerQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=512)


class AlertsQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(50, ge=1, le=1000)
    customer_id: str | None = Field(None, min_length=1, max_length=512)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS),
        status=status, content_type="application/json", headers={"Cache-Control": "no-store"},
    )


def error_response(status: int, errors: list[Any]) -> web.Response:
    return json_response({"error": format_errors(errors), "errors": errors}, status=status)


M = TypeVar("M", bound=BaseModel)


def parse_query(model: type[M], request: web.Request) -> M:
    """Validate the query string; a bad parameter raises a 400 naming the field and the rule."""
    try:
        return model.model_validate({k: v for k, v in request.query.items() if v != ""})
    except ValidationError as exc:
        _, errors = format_validation_error(exc)
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": format_errors(errors), "errors": errors}).decode(), content_type="application/json"
        ) from None


# --- handlers ----------------------------------------------------------------------------------
async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})


async def at_risk(request: web.Request) -> web.Response:
    q = parse_query(AtRiskQuery, request)
    settings, store = request.app[SETTINGS], request.app[STORE]
    band_ids = None
    band_age = None
    if q.band is not None:
        cache = request.app[PORTFOLIO]
        band_ids = (await cache.get()).band_ids.get(q.band, [])
        band_age = cache.age_s()
    page = await risk_page(store, settings, q.offset, q.limit, q.band, band_ids)
    data = page.model_dump()
    data["band_index_age_s"] = band_age
    return json_response(data)


async def portfolio(request: web.Request) -> web.Response:
    cache = request.app[PORTFOLIO]
    scan = await cache.get()
    data = scan.tiles.model_dump()
    data["age_s"] = cache.age_s()
    data["refresh_s"] = round(cache.interval_s(), 1)
    data["risk_threshold"] = request.app[SETTINGS].risk_alert_threshold
    return json_response(data)


async def kpis(request: web.Request) -> web.Response:
    """Live portfolio KPIs (issue 7): the last months and the current quarter, overall, with
    the cohort table; read from the per-period sums (O(1) in customers), cached a few seconds."""
    return json_response(await request.app[KPIS].get(request.app[STORE].redis))


async def customer(request: web.Request) -> web.Response:
    q = parse_query(CustomerQuery, request)
    settings, store, feeds = request.app[SETTINGS], request.app[STORE], request.app[FEEDS]
    detail = await customer_detail(store, settings, q.id)
    if detail is None:
        return error_response(404, [field_error("id", "not_found", f"no state for customer {q.id!r}")])
    data = detail.model_dump(mode="json")
    if not detail.churn_history:  # the scorer keeps no daily probability yet: what cs.scores showed us
        data["churn_history"] = feeds.churn.get(q.id)
        data["churn_history_source"] = "cs.scores (seen by this dashboard)"
    else:
        data["churn_history_source"] = "redis"
    data["alerts"] = sorted(feeds.alerts.latest(50, q.id), key=lambda a: str(a.get("ts")), reverse=True)
    data["risk_threshold"] = settings.risk_alert_threshold
    return json_response(data)


async def alerts(request: web.Request) -> web.Response:
    q = parse_query(AlertsQuery, request)
    feed = request.app[FEEDS].alerts
    items = sorted(feed.latest(max(q.limit, 1000), q.customer_id), key=lambda a: str(a.get("ts")), reverse=True)
    return json_response({"alerts": items[: q.limit], "total_seen": feed.seq})


async def model(request: web.Request) -> web.Response:
    summary = await model_summary(request.app[STORE], request.app[SETTINGS])
    return json_response(summary or {"serving": "prior-health-v1", "labels_seen": 0})


def _sse(seq: int, alert: dict[str, Any]) -> bytes:
    return b"id: %d\nevent: alert\ndata: %s\n\n" % (seq, orjson.dumps(alert))


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the recent alerts (or those after Last-Event-ID), then each new one."""
    feed = request.app[FEEDS].alerts
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
    })
    await resp.prepare(request)
    queue = feed.subscribe()  # before the backlog: nothing falls between the two
    try:
        last = request.headers.get("Last-Event-ID", "")
        if last.isdigit():
            backlog = feed.items_since(int(last))
        else:  # a fresh page: the latest 50 by event time, oldest first (the page prepends)
            backlog = sorted(feed.items_since(0), key=lambda it: (str(it[1].get("ts")), it[0]))[-50:]
        sent = 0
        await resp.write(b"retry: 2000\n\n")
        for seq, alert in backlog:
            await resp.write(_sse(seq, alert))
            sent = max(sent, seq)
        await resp.write(b"event: ready\ndata: {}\n\n")
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if item is None:  # shutting down
                break
            seq, alert = item
            if seq > sent:
                await resp.write(_sse(seq, alert))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.unsubscribe(queue)
    return resp


# --- application -------------------------------------------------------------------------------
async def _startup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[STORE] = StateStore(redis_client(settings), settings)
    app[PORTFOLIO] = PortfolioCache(app[STORE], settings)
    app[KPIS] = KpiCache(settings)
    app[FEEDS].start()
    app[TASKS] = [asyncio.create_task(app[PORTFOLIO].run())]


async def _shutdown(app: web.Application) -> None:
    app[FEEDS].alerts.close()  # end open SSE streams so the server can stop promptly


async def _cleanup(app: web.Application) -> None:
    for t in app.get(TASKS, []):
        t.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
    await app[FEEDS].stop()
    if STORE in app:
        await app[STORE].redis.aclose()


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unexpected failures of the API become JSON (Redis away, ...), never an HTML page."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001
        if not request.path.startswith(f"{PREFIX}/api/"):
            raise
        log.warning("dashboard %s failed", request.path, exc_info=True)
        return error_response(503, [field_error("", "unavailable", f"{type(exc).__name__}: {exc}")])


def create_dashboard_app(settings: Settings) -> web.Application:
    """The dashboard as an aiohttp application (mount it under ``/dashboard``)."""
    app = web.Application(middlewares=[_errors])
    app[SETTINGS] = settings
    app[FEEDS] = LiveFeeds(settings)
    app.router.add_get("/", index)
    app.router.add_get("/api/at-risk", at_risk)
    app.router.add_get("/api/portfolio", portfolio)
    app.router.add_get("/api/kpis", kpis)
    app.router.add_get("/api/customer", customer)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/model", model)
    app.router.add_get("/api/customers/{id}", customer_handler(lambda request: request.app[STORE]))
    app.router.add_get("/api/openapi.json", openapi_handler(f"{PREFIX}/api"))
    app.router.add_static("/static/", STATIC_DIR, append_version=True)
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(f"{PREFIX}/")


def add_dashboard(parent: web.Application, settings: Settings, redirect_root: bool = False) -> web.Application:
    """Mount the dashboard under ``/dashboard/`` of ``parent`` (``/dashboard`` redirects there)."""
    sub = create_dashboard_app(settings)
    parent.router.add_get(PREFIX, _to_dashboard)
    if redirect_root:
        parent.router.add_get("/", _to_dashboard)
    parent.add_subapp(f"{PREFIX}/", sub)
    parent.router.add_get("/api/customers/{id}", customer_handler(lambda request: sub[STORE]))
    parent.router.add_get("/api/openapi.json", openapi_handler(f"{PREFIX}/api"))
    return sub


def mount_dashboard(faust_app: Any, settings: Settings) -> None:
    """Serve the dashboard from the worker's own (Faust, aiohttp) web server, when it runs one."""
    if not (settings.web_enabled and settings.dashboard_enabled):
        return
    add_dashboard(faust_app.web.web_app, settings)


def dashboard_url(settings: Settings, host: str = "localhost") -> str:
    return f"http://{host}:{settings.web_port}{PREFIX}/"


def standalone_app(settings: Settings) -> web.Application:
    """The dashboard alone (``stream-app dashboard``): ``/`` redirects to it."""
    root = web.Application()
    install_token_auth(root, settings)  # the worker's server installs it in ops.health
    add_dashboard(root, settings, redirect_root=True)
    return root


def run_dashboard(settings: Settings, host: str = "0.0.0.0") -> None:
    """Serve the dashboard standalone until interrupted."""
    web.run_app(standalone_app(settings), host=host, port=settings.web_port, print=None, access_log=None)


async def start_dashboard(settings: Settings, host: str = "127.0.0.1") -> web.AppRunner:
    """Start the standalone dashboard in the running event loop (the demo, tests); stop it with
    ``await runner.cleanup()``."""
    runner = web.AppRunner(standalone_app(settings), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, host, settings.web_port).start()
    return runner
