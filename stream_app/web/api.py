"""The read API for other systems: ``GET /api/customers/{id}`` (a customer's current health)
and the OpenAPI 3 document of the JSON endpoints, ``GET /api/openapi.json``.

Served under the dashboard (``/dashboard/api/...``) and, on the same server, at the root
(``/api/...``); behind ``WEB_TOKEN`` like everything else (``stream_app.ops.security``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from schemas.errors import field_error
from stream_app.read.queries import health_of
from stream_app.state import layout
from stream_app.state.store import StateStore


class CustomerHealth(BaseModel):
    """``GET /api/customers/{id}``: the customer's current health as the worker last scored it."""

    customer_id: str
    health_score: float | None
    health_band: str | None
    churn_probability: float | None
    model_version: str | None
    lifecycle_stage: str | None
    reasons: list[dict[str, Any]]
    last_change: dict[str, Any] | None
    last_event_ms: int | None


async def customer_health(store: StateStore, customer_id: str) -> CustomerHealth | None:
    raw = await store.read(customer_id)
    if not raw.exists:
        return None
    h = health_of(raw.main)
    last = raw.main.get(layout.LAST_EVENT)
    return CustomerHealth(customer_id=customer_id, health_score=h.health_score, health_band=h.health_band,
                          churn_probability=h.churn_probability, model_version=h.model_version,
                          lifecycle_stage=raw.main.get(layout.STAGE), reasons=h.reasons, last_change=h.last_change,
                          last_event_ms=int(last) if last else None)


def _get(summary: str, params: list[dict[str, Any]] | None = None, schema: dict[str, Any] | None = None,
         not_found: bool = False) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": schema or {"type": "object"}}}},
        "400": {"$ref": "#/components/responses/BadRequest"},
        "401": {"$ref": "#/components/responses/Unauthorized"},
    }
    if not_found:
        responses["404"] = {"$ref": "#/components/responses/NotFound"}
    return {"get": {"summary": summary, "parameters": params or [], "responses": responses}}


def _q(name: str, schema: dict[str, Any], required: bool = False, doc: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": doc}


def openapi_document(base: str = "/api") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the JSON endpoints under ``base``."""
    error = {"type": "object", "required": ["error", "errors"], "properties": {
        "error": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string"}, "rule": {"type": "string"}, "message": {"type": "string"}}}}}}
    customer_schema = CustomerHealth.model_json_schema(ref_template="#/components/schemas/{model}")
    paths = {
        f"{base}/customers/{{id}}": _get(
            "A customer's current health, band, churn probability, reasons and last change",
            [{"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}],
            {"$ref": "#/components/schemas/CustomerHealth"}, not_found=True),
        f"{base}/customer": _get("Everything the dashboard's customer page shows",
                                 [_q("id", {"type": "string", "minLength": 1, "maxLength": 512}, True)], not_found=True),
        f"{base}/at-risk": _get("A page of the at-risk list, riskiest first", [
            _q("band", {"type": "string", "enum": ["red", "yellow", "green"]}),
            _q("offset", {"type": "integer", "minimum": 0, "default": 0}),
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 25})]),
        f"{base}/portfolio": _get("Portfolio tiles and the health-score distribution"),
        f"{base}/kpis": _get("Live portfolio KPIs: recent months, current quarter, cohorts"),
        f"{base}/alerts": _get("Recent alerts, newest first (as on cs.alerts)", [
            _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}),
            _q("customer_id", {"type": "string", "minLength": 1})]),
        f"{base}/model": _get("The churn model's summary"),
    }
    return {
        "openapi": "3.1.0",  # JSON Schema 2020-12: pydantic's schemas (nullable as type null) as they are
        "info": {"title": "churn-stream read API", "version": "1",
                 "description": "Read-only JSON endpoints of the worker (and of `stream-app dashboard`). "
                                "Every endpoint requires WEB_TOKEN when it is set."},
        "paths": paths,
        "components": {
            "schemas": {"CustomerHealth": customer_schema, "Error": error},
            "responses": {
                "BadRequest": {"description": "a parameter broke a rule (field and rule named)",
                               "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "NotFound": {"description": "no state for that customer",
                             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "Unauthorized": {"description": "WEB_TOKEN required (Authorization: Bearer <token> or ?token=)"},
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "token": {"type": "apiKey", "in": "query", "name": "token"}},
        },
        "security": [{"bearer": []}, {"token": []}],
    }


def customer_handler(store_of: Any) -> Any:
    """``GET /api/customers/{id}``; ``store_of(request)`` gives the ``StateStore``."""

    async def handler(request: web.Request) -> web.Response:
        cid = request.match_info["id"]
        if not 1 <= len(cid) <= 512:
            return web.json_response({"error": "id: 1..512 characters (string_length)",
                                      "errors": [field_error("id", "string_length", "1..512 characters")]}, status=400)
        health = await customer_health(store_of(request), cid)
        if health is None:
            return web.json_response({"error": f"id: no state for customer {cid!r} (not_found)",
                                      "errors": [field_error("id", "not_found", f"no state for customer {cid!r}")]},
                                     status=404)
        return web.json_response(health.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    return handler


def openapi_handler(base: str) -> Any:
    document = openapi_document(base)

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document)

    return handler
