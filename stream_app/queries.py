"""Read-side queries for the CLI and the demo: riskiest customers, one customer's health, the model."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from .aggregates import CustomerAggregates, compute_aggregates
from .changes import load_last_change
from .scorer import score_history, trend
from .settings import Settings
from .state import StateStore


class HealthView(BaseModel):
    """A customer's latest health as the worker last scored it."""

    health_score: float | None
    health_band: str | None
    churn_probability: float | None
    model_version: str | None
    reasons: list[dict[str, Any]]
    trend_7d: float | None
    trend_30d: float | None
    history: dict[str, float]
    last_change: dict[str, Any] | None = None  # the latest explained change (issue 8)


class CustomerView(BaseModel):
    customer_id: str
    health: HealthView
    aggregates: CustomerAggregates


def health_of(main: dict[str, str]) -> HealthView:
    hist = score_history(main)
    score = int(main["hs"]) / 10 if "hs" in main else None
    today = max(hist) if hist else 0
    reasons = []
    for part in filter(None, (main.get(f"r{i}", "") for i in (1, 2, 3))):
        factor, impact = part.rsplit(":", 1)
        reasons.append({"factor": factor, "impact": float(impact)})
    return HealthView(
        health_score=score,
        health_band=main.get("hb"),
        churn_probability=float(main["cp"]) if "cp" in main else None,
        model_version=main.get("mv"),
        reasons=reasons,
        trend_7d=trend(hist, today, score, 7) if score is not None else None,
        trend_30d=trend(hist, today, score, 30) if score is not None else None,
        history={str(d): v for d, v in sorted(hist.items())},
        last_change=load_last_change(main),
    )


async def customer_view(store: StateStore, settings: Settings, customer_id: str, now_ms: int | None) -> CustomerView | None:
    raw = await store.read(customer_id)
    if not raw.exists:
        return None
    if now_ms is None:
        now_ms = max(await store.watermark() or -1, int(raw.main.get("lts", "-1")))
    agg = compute_aggregates(raw, now_ms, settings.windows_days)
    return CustomerView(customer_id=customer_id, health=health_of(raw.main), aggregates=agg)


async def riskiest(store: StateStore, settings: Settings, n: int) -> list[dict[str, Any]]:
    """The ``n`` customers with the highest churn probability, with what a list needs."""
    ranked = await store.redis.zrevrange(f"{settings.key_prefix}risk", 0, n - 1, withscores=True)
    ids = [(c.decode() if isinstance(c, bytes) else c) for c, _ in ranked]
    pipe = store.redis.pipeline(transaction=False)
    for cid in ids:
        pipe.hmget(store.keys(cid).main, "hs", "hb", "cp", "mrr", "r1", "r2", "r3", "mv", "st")
    rows = []
    for cid, (hs, hb, cp, mrr, r1, r2, r3, mv, st) in zip(ids, await pipe.execute()):
        def s(v: Any) -> str | None:
            return v.decode() if isinstance(v, bytes) else v

        rows.append({
            "customer_id": cid,
            "churn_probability": float(s(cp)) if cp else None,
            "health_score": int(s(hs)) / 10 if hs else None,
            "health_band": s(hb),
            "mrr": int(s(mrr)) / 100 if mrr else None,
            "status": s(st),
            "reasons": [str(s(r)).rsplit(":", 1)[0] for r in (r1, r2, r3) if r],
            "model_version": s(mv),
        })
    return rows


async def model_summary(store: StateStore, settings: Settings) -> dict[str, Any] | None:
    raw = await store.redis.get(f"{settings.key_prefix}model:summary")
    if raw is None:
        return None
    summary: dict[str, Any] = orjson.loads(raw)
    version = await store.redis.get(f"{settings.key_prefix}model:version")
    summary["checkpoint_version"] = int(version) if version else None
    return summary
