"""Read-side queries for the CLI and the demo: riskiest customers, one customer's health, the model."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from stream_app.core import DAY_MS, text
from stream_app.scoring.aggregates import CustomerAggregates, compute_aggregates
from stream_app.scoring.alerts import trend
from stream_app.scoring.scorecard import Scorecard, ScorecardConfig
from stream_app.settings import Settings
from stream_app.state import layout
from stream_app.state.codec import health_score, last_alerts, load_last_change, load_previous, score_history, stored_reasons
from stream_app.state.store import StateStore


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
    score = health_score(main)
    today = max(hist) if hist else 0
    reasons = []
    for part in stored_reasons(main):
        factor, impact = part.rsplit(":", 1)
        reasons.append({"factor": factor, "impact": float(impact)})
    return HealthView(
        health_score=score,
        health_band=main.get(layout.HEALTH_BAND),
        churn_probability=float(main[layout.CHURN_P]) if layout.CHURN_P in main else None,
        model_version=main.get(layout.MODEL_VERSION_FIELD),
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
        now_ms = max(await store.watermark() or -1, int(raw.main.get(layout.LAST_EVENT, "-1")))
    agg = compute_aggregates(raw, now_ms, settings.windows_days)
    return CustomerView(customer_id=customer_id, health=health_of(raw.main), aggregates=agg)


async def riskiest(store: StateStore, settings: Settings, n: int) -> list[dict[str, Any]]:
    """The ``n`` customers with the highest churn probability, with what a list needs."""
    ranked = await store.redis.zrevrange(store.names.risk, 0, n - 1, withscores=True)
    ids = [text(c) for c, _ in ranked]
    pipe = store.redis.pipeline(transaction=False)
    for cid in ids:
        pipe.hmget(store.keys(cid).main, *_ROW_FIELDS)
    rows = []
    for (cid, p), (hs, hb, cp, mrr, r1, r2, r3, mv, st) in zip(zip(ids, (p for _, p in ranked)), await pipe.execute()):
        s = text
        rows.append({
            "customer_id": cid,
            # the ranking's own probability: the scorer updates the risk set before the hash
            "churn_probability": round(float(p), 4),
            "health_score": int(s(hs)) / 10 if hs else None,
            "health_band": s(hb),
            "mrr": int(s(mrr)) / 100 if mrr else None,
            "status": s(st),
            "reasons": [str(s(r)).rsplit(":", 1)[0] for r in (r1, r2, r3) if r],
            "model_version": s(mv),
        })
    return rows


async def model_summary(store: StateStore, settings: Settings) -> dict[str, Any] | None:
    raw = await store.redis.get(store.names.model_summary)
    if raw is None:
        return None
    summary: dict[str, Any] = orjson.loads(raw)
    version = await store.redis.get(store.names.model_version)
    summary["checkpoint_version"] = int(version) if version else None
    return summary


# --- dashboard read side (stream_app/web/dashboard.py) ---------------------------------------------
#: Main-hash fields a list row needs (the sparkline's ``h<day>`` fields are appended).
_ROW_FIELDS = (layout.HEALTH_SCORE, layout.HEALTH_BAND, layout.CHURN_P, layout.MRR, *layout.REASON_FIELDS,
               layout.MODEL_VERSION_FIELD, layout.STATUS)
#: Days of score history in a row's sparkline.
SPARK_DAYS = 30



class RiskRow(BaseModel):
    """One row of the at-risk list."""

    rank: int
    customer_id: str
    churn_probability: float | None
    health_score: float | None
    health_band: str | None
    mrr: float | None
    status: str | None
    reasons: list[str]
    model_version: str | None
    trend: list[tuple[int, float]]  # (event-time day, health score), oldest first


class RiskPage(BaseModel):
    """A page of the at-risk list, riskiest first."""

    total: int
    offset: int
    limit: int
    band: str | None
    as_of_day: int | None
    rows: list[RiskRow]


async def today(store: StateStore) -> int | None:
    """The read side's "today": the event-time day of the newest event applied anywhere."""
    wm = await store.watermark()
    return wm // DAY_MS if wm is not None and wm >= 0 else None


async def risk_rows(
    store: StateStore, settings: Settings, ids: list[str], first_rank: int, day: int | None,
    probabilities: list[float] | None = None,
) -> list[RiskRow]:
    """List rows for these customers (one pipelined round trip), with a 30-day sparkline
    read from the daily score history (``h<day>`` fields) ending at ``day``.

    The probability shown is the ranking's own (``probabilities``, else the customer's score
    in the ``risk`` set): the scorer updates that set before the customer's hash, so the
    hash's ``cp`` can be a moment behind and would disagree with the order."""
    spark_days = list(range(day - SPARK_DAYS + 1, day + 1)) if day is not None else []
    fields = [*_ROW_FIELDS, *(layout.history_field(d) for d in spark_days)]
    pipe = store.redis.pipeline(transaction=False)
    for cid in ids:
        pipe.hmget(store.keys(cid).main, fields)
        if probabilities is None:
            pipe.zscore(store.names.risk, cid)
    got = await pipe.execute()
    values_of = got if probabilities is not None else got[0::2]
    ranked = probabilities if probabilities is not None else got[1::2]
    rows: list[RiskRow] = []
    for i, (cid, values, rp) in enumerate(zip(ids, values_of, ranked)):
        hs, hb, cp, mrr, r1, r2, r3, mv, st = (text(v) for v in values[: len(_ROW_FIELDS)])
        hist = values[len(_ROW_FIELDS) :]
        rows.append(RiskRow(
            rank=first_rank + i,
            customer_id=cid,
            churn_probability=round(float(rp), 4) if rp is not None else float(cp) if cp else None,
            health_score=int(hs) / 10 if hs else None,
            health_band=hb or None,
            mrr=int(mrr) / 100 if mrr else None,
            status=st,
            reasons=[r.rsplit(":", 1)[0] for r in (r1, r2, r3) if r],
            model_version=mv,
            trend=[(d, int(v) / 10) for d, v in zip(spark_days, hist) if v is not None],
        ))
    return rows


async def risk_page(
    store: StateStore, settings: Settings, offset: int, limit: int,
    band: str | None = None, band_ids: list[str] | None = None,
) -> RiskPage:
    """One page of customers by churn probability, highest first.

    Unfiltered, the page comes straight from the ``{prefix}risk`` sorted set (O(log n +
    limit)). With a band, ``band_ids`` is that band's ranking from the last background
    portfolio pass (see ``stream_app.read.tiles``); the rows themselves are always read fresh.
    """
    if band is None:
        key = store.names.risk
        pipe = store.redis.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrevrange(key, offset, offset + limit - 1, withscores=True)
        total, members = await pipe.execute()
        ids = [str(text(m)) for m, _ in members]
        probabilities: list[float] | None = [float(p) for _, p in members]
    else:
        ranking = band_ids or []
        total, ids = len(ranking), ranking[offset : offset + limit]
        probabilities = None
    day = await today(store)
    rows = await risk_rows(store, settings, ids, offset + 1, day, probabilities)
    return RiskPage(total=int(total), offset=offset, limit=limit, band=band, as_of_day=day, rows=rows)


class TicketView(BaseModel):
    ticket: str  # the stored digest of the ticket id (state keeps no raw ids)
    state: str  # open | resolved
    priority: str | None
    opened: int | None  # epoch ms (event time)
    last_update: int


class SurveyDay(BaseModel):
    day: int
    nps_responses: int
    nps_mean: float | None
    csat_responses: int
    csat_mean: float | None
    ces_responses: int
    ces_mean: float | None


class CustomerDetail(BaseModel):
    """Everything the dashboard's customer page shows, from Redis."""

    view: CustomerView
    components: dict[str, float]
    scored_health: float | None  # what the worker last stored (components are recomputed as of the last event)
    health_history: list[tuple[int, float]]  # (day, score)
    churn_history: list[tuple[int, float]]  # (day, probability), from ``p<day>`` fields when the scorer keeps them
    tickets: list[TicketView]
    surveys: list[SurveyDay]
    last_nps: int | None
    last_alert_ms: dict[str, int]  # alert kind -> event time of the latest one (the scorer's alert memory)


async def customer_detail(store: StateStore, settings: Settings, customer_id: str, max_tickets: int = 20) -> CustomerDetail | None:
    """One customer for the dashboard: health, its components, history, tickets, surveys."""
    raw = await store.read(customer_id)
    if not raw.exists:
        return None
    main = raw.main
    # as of the customer's own newest event: what the worker scored when it last saw it
    now_ms = int(main.get(layout.LAST_EVENT, "0"))
    agg = compute_aggregates(raw, now_ms, settings.windows_days)
    view = CustomerView(customer_id=customer_id, health=health_of(main), aggregates=agg)
    # the population term as of the last published score (the read side has no model)
    prev = load_previous(main)
    result = Scorecard(ScorecardConfig.for_file(settings.scorecard_file)).score(
        agg, prev.signals.get("activity_percentile") if prev else None)
    weights = {v: k for k, v in settings.priority_weights.items()}
    tickets = []
    for field, value in raw.tickets.items():  # field "k<digest>", value "state,opened,last,weight"
        st, opened, last, w = value.split(",")
        tickets.append(TicketView(
            ticket=field[1:], state="open" if st == "o" else "resolved", priority=weights.get(int(w)),
            opened=int(opened) or None, last_update=int(last),
        ))
    tickets.sort(key=lambda t: t.last_update, reverse=True)
    surveys = []
    for f, v in main.items():
        if (bucket := layout.day_bucket(f, layout.SURVEY_DAY)) is not None:
            x = [int(n) for n in v.split(",")] + [0] * 10
            surveys.append(SurveyDay(
                day=bucket[1],
                nps_responses=x[0], nps_mean=round(x[1] / x[0], 2) if x[0] else None,
                csat_responses=x[5], csat_mean=round(x[6] / 1000 / x[5], 2) if x[5] else None,
                ces_responses=x[8], ces_mean=round(x[9] / 1000 / x[8], 2) if x[8] else None,
            ))
    surveys.sort(key=lambda s: s.day, reverse=True)
    return CustomerDetail(
        view=view,
        components={k: round(v, 1) for k, v in result.components.items()},
        scored_health=view.health.health_score,
        health_history=sorted(score_history(main).items()),
        churn_history=sorted(
            (day, int(v) / 10_000) for f, v in main.items() if (day := layout.churn_history_day(f)) is not None
        ),
        tickets=tickets[:max_tickets],
        surveys=surveys,
        last_nps=int(main[layout.LAST_NPS]) if layout.LAST_NPS in main else None,
        last_alert_ms=last_alerts(main),
    )
