"""The read API: ``/api/customers/{id}`` and the OpenAPI document, behind WEB_TOKEN, on state
written by the real ingestor and scorer."""

from __future__ import annotations

import orjson
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate
from pydantic import SecretStr
from support.harness import Harness

from stream_app.settings import Settings
from stream_app.tools.simulator import SimConfig, Simulator
from stream_app.web.dashboard import PREFIX, standalone_app


async def test_customer_health_and_openapi_behind_the_token(h: Harness, settings: Settings) -> None:
    batch = [(e.topic, orjson.dumps(e.event)) for e in Simulator(SimConfig(customers=3, days=12, seed=5, activity_scale=0.3)).events()]
    await h.feed(batch)
    cid = next(orjson.loads(b)["customer_id"] for _, b in batch)
    secured = settings.model_copy(update={"web_token": SecretStr("t0k3n")})
    auth = {"Authorization": "Bearer t0k3n"}
    async with TestClient(TestServer(standalone_app(secured))) as client:
        for path in ("/api/openapi.json", f"/api/customers/{cid}", f"{PREFIX}/api/customers/{cid}"):
            assert (await client.get(path)).status == 401, path
        doc = await (await client.get("/api/openapi.json", headers=auth)).json()
        validate(doc)  # a valid OpenAPI 3 document
        assert {f"{PREFIX}/api/customers/{{id}}", f"{PREFIX}/api/at-risk", f"{PREFIX}/api/customer"} <= set(doc["paths"])
        for path in (f"/api/customers/{cid}", f"{PREFIX}/api/customers/{cid}"):
            resp = await client.get(path, headers=auth)
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert body["customer_id"] == cid and body["health_band"] in ("green", "yellow", "red")
            assert 0 <= body["health_score"] <= 100 and 0 <= body["churn_probability"] <= 1
            assert set(body) >= {"reasons", "last_change", "model_version", "lifecycle_stage"}
            assert set(body) == set(doc["components"]["schemas"]["CustomerHealth"]["properties"])
        missing = await client.get("/api/customers/nobody", headers=auth)
        assert missing.status == 404 and (await missing.json())["errors"][0]["rule"] == "not_found"
