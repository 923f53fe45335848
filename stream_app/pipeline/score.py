"""Scoring one customer, as a function of its inputs: its state as read back after the event
was applied, the event's order key, the triggers its events raise, and the model checkpoint
of its day (looked up before, by ``model.checkpoints.ModelHolder``).

The chain: aggregates -> scorecard -> churn model -> alert rules -> what to save (a
``state.codec.ScoreSave``: the score state and the outbox entries) and what to publish.
No I/O: ``pipeline.scorer`` applies, reads, saves and publishes around it.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas import Alert, Reason, ScoreSnapshot
from stream_app.core import DAY_MS, RawCustomerState
from stream_app.model.churn import ChurnModel
from stream_app.model.features import LEVEL_FEATURE, behaviour_features, encode_features, features_from
from stream_app.portfolio.assess import PortfolioAssessor, PortfolioItem
from stream_app.portfolio.segment_days import encode_observation
from stream_app.scoring.aggregates import aggregates_of
from stream_app.scoring.alerts import AlertConfig, AlertState, Trigger, evaluate
from stream_app.scoring.changes import ChangeTracker
from stream_app.scoring.scorecard import Scorecard, ScorecardConfig
from stream_app.scoring.windows import WindowCache
from stream_app.settings import ScoringSettings
from stream_app.state import layout
from stream_app.state.codec import (
    OutboxEntry,
    ScoreSave,
    alert_state_fields,
    last_alerts,
    order_text,
    reasons_fields,
    score_history,
)


@dataclass(frozen=True)
class ScoreRules:
    """Everything scoring needs besides the customer and the model: fixed for a deployment."""

    scorecard: Scorecard
    alerts: AlertConfig
    #: the portfolio's pure side (lifecycle stage, segmentation input, month facts)
    portfolio: PortfolioAssessor
    windows_days: list[int]
    score_publish_delta: float
    change_explain_delta: float
    snapshot_every_days: int
    label_horizon_days: int
    portfolio_enabled: bool

    @classmethod
    def of(cls, settings: ScoringSettings, portfolio: PortfolioAssessor, portfolio_enabled: bool) -> ScoreRules:
        return cls(
            scorecard=Scorecard(ScorecardConfig.for_file(settings.scorecard_file)),
            alerts=AlertConfig(risk_enter=settings.risk_alert_threshold, risk_exit=settings.risk_alert_exit),
            portfolio=portfolio,
            windows_days=settings.windows_days,
            score_publish_delta=settings.score_publish_delta,
            change_explain_delta=settings.change_explain_delta,
            snapshot_every_days=settings.snapshot_every_days,
            label_horizon_days=settings.label_horizon_days,
            portfolio_enabled=portfolio_enabled,
        )


@dataclass
class Scored:
    """What scoring one event produced."""

    alerts: list[Alert]
    score: ScoreSnapshot | None
    #: a label snapshot to index: (member of ``labels:pending``, due time)
    pending: tuple[str, int] | None
    save: ScoreSave
    risk: float | None
    portfolio: PortfolioItem | None = None  # portfolio (issue 7)


def score_one(rules: ScoreRules, raw: RawCustomerState, now_ms: int, key: tuple[int, int, int, int],
              triggers: list[Trigger], model: ChurnModel) -> Scored:
    """Score one customer as of ``now_ms`` (the event's order key time) with ``model`` (the
    checkpoint of its day)."""
    cid = raw.customer_id
    main = raw.main
    today = now_ms // DAY_MS
    # plain objects inside (``aggregates_of``, ``Scorecard.health``: the same numbers as the
    # pydantic ``compute_aggregates``/``score``), output models built only when published
    agg = aggregates_of(raw, now_ms, rules.windows_days)
    behaviour = behaviour_features(agg, main)
    health = rules.scorecard.health(agg, model.population_percentile(behaviour.get(LEVEL_FEATURE)))
    x = features_from(health.signals, health.score, behaviour)
    p, p_raw, version = model.predict_detail(x)
    pf = rules.portfolio.assess(agg, health, p)  # portfolio (issue 7): lifecycle stage + segment input

    def alert_reasons() -> list[Reason]:  # what every alert carries: made only when one is raised
        return ([Reason(factor=f"model:{f}", value=round(v, 4), impact=round(c, 4)) for f, v, c in model.explain(x)]
                + [r.model() for r in health.reasons[:4]])

    cache = raw.derived  # the history and alert memory, read with the window sums
    if isinstance(cache, WindowCache):
        history, last = cache.history, dict(cache.alerts)
    else:
        history, last = score_history(main), last_alerts(main)
    state = AlertState(band=main.get(layout.ALERT_BAND), in_risk=main.get(layout.ALERT_IN_RISK) == "1", last=last)
    new_alerts, state = evaluate(
        rules.alerts, state, cid, now_ms, score=health.score, band=health.band, history=history,
        churn_p=p, model_version=version, reasons=alert_reasons, triggers=triggers,
        green_min=health.green_min, yellow_min=health.yellow_min,  # the customer's profile's bands
        owned=True,
    )
    cancelled = agg.subscription_status == "cancelled"
    # issue 8, change explanations: alerts (and snapshots that moved) carry what changed
    # since the previous published score (``scoring.changes``; computed only when carried)
    changes = ChangeTracker(main, rules.scorecard, agg.plan, health)
    # a customer who already cancelled is not "at risk": the state moves on, nobody is paged
    if cancelled:
        new_alerts = []
    new_alerts = changes.attach(new_alerts)
    # cs.scores: on a material change, and at least once per customer per event-time day
    last_pub = int(main[layout.PUBLISHED_SCORE]) / 10 if layout.PUBLISHED_SCORE in main else None
    last_day = int(main.get(layout.PUBLISHED_DAY, "-1"))
    publish = (last_pub is None or abs(health.score - last_pub) >= rules.score_publish_delta
               or today > last_day or any(a.kind == "band_change" for a in new_alerts)
               or pf.stage != main.get(layout.STAGE))  # portfolio (issue 7): stage changes
    score = None
    if publish:
        score = ScoreSnapshot(
            customer_id=cid, ts=agg.as_of, health_score=health.score, health_band=health.band,  # type: ignore[arg-type]
            churn_probability=min(1.0, max(0.0, p)), model_version=version, components=health.components,
            **pf.snapshot_fields(),  # portfolio (issue 7)
            churn_probability_raw=min(1.0, max(0.0, p_raw)),
            since_previous=changes.for_snapshot(rules.change_explain_delta),
        )
    # label snapshot: at most one per customer per snapshot_every_days, never after a cancellation
    snap_day, snap_text, pending = "", "", None
    last_snap = int(main.get(layout.SNAPSHOT_DAY, "-100000"))
    if not cancelled and today - last_snap >= rules.snapshot_every_days:
        # field "<day>:<second of day>", value the features: short enough (< 64 bytes)
        # for Redis to keep the hash compact
        snap_day, snap_text = f"{today}:{(now_ms % DAY_MS) // 1000}", encode_features(x)
        pending = (f"{cid}\x00{snap_day}", now_ms + rules.label_horizon_days * DAY_MS)
    fields = alert_state_fields(state)
    fields.update({layout.CHURN_P: f"{p:.4f}", layout.HEALTH_BAND: health.band, layout.MODEL_VERSION_FIELD: version,
                   layout.SORT_KEY: order_text(key), layout.STAGE: pf.stage})
    fields.update(reasons_fields(health.reasons[:layout.REASONS]))
    if publish:
        fields.update({layout.PUBLISHED_SCORE: str(int(round(health.score * 10))), layout.PUBLISHED_DAY: str(today)})
    fields.update(changes.fields(publish, p, now_ms))  # issue 8: previous score, last change
    box = ([OutboxEntry.ALERT.entry(a.model_dump_json()) for a in new_alerts]
           + ([OutboxEntry.SCORE.entry(score.model_dump_json())] if score else []))
    if today > last_day and pf.learn and rules.portfolio_enabled:
        # the customer's first scoring of the day is that day's segmentation observation
        # (segment_days): it rides in the outbox, saved atomically with this score state,
        # so a crash before it reaches pf:obs cannot lose it to a later scoring
        box.append(OutboxEntry.OBSERVATION.entry(encode_observation(now_ms, pf.features)))
    item = rules.portfolio.item(cid, now_ms, raw, health, pf)  # portfolio (issue 7)
    save = ScoreSave(today, int(round(health.score * 10)), fields, snap_day, snap_text, outbox=box)
    return Scored(new_alerts, score, pending, save, None if cancelled else round(p, 4), item)
