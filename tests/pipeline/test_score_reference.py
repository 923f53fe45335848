"""``score_one`` (plain objects inside, incremental window sums kept with the state) computes
byte for byte what the straightforward reference below computes (the pydantic aggregates summed
afresh, the validated health result, the codec's readers, alert reasons made up front), on
every scoring of a simulated history, with the state read afresh per event and with one state
per customer kept across events (its dicts updated in place, as ``state.customer`` does)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from schemas import Reason, ScoreSnapshot
from stream_app.core import DAY_MS, RawCustomerState
from stream_app.model.features import LEVEL_FEATURE, behaviour_features, encode_features, features_from
from stream_app.pipeline import scorer as scorer_module
from stream_app.pipeline.score import Scored, ScoreRules, score_one
from stream_app.portfolio.segment_days import encode_observation
from stream_app.scoring.aggregates import compute_aggregates_full
from stream_app.scoring.alerts import evaluate
from stream_app.scoring.changes import ChangeTracker
from stream_app.scoring.scorecard import COMPONENTS, HealthResult, Scorecard, _known, signals_from
from stream_app.settings import Settings
from stream_app.state import layout
from stream_app.state.codec import (OutboxEntry, ScoreSave, alert_state_fields, load_alert_state, order_text,
                                    reasons_fields, score_history)
from support.harness import Harness
from support.sim import run, sim_records


def reference_health(card: Scorecard, signals: dict[str, Any], profile: str | None) -> HealthResult:
    """The scorecard as first written: validated factors and results, every step per call."""
    c = card._profiles[profile][1] if profile is not None else card._base
    present = {comp: bool(f) for comp, f in c.by_component.items()}
    if c.missing == "reweight":
        present = {comp: any(_known(signals.get(n)) for n, _ in f) for comp, f in c.by_component.items()}
        if not any(present[comp] and c.weights[comp] > 0 for comp in COMPONENTS):
            present = {comp: True for comp in COMPONENTS}
    total_w = sum(w for comp, w in c.weights.items() if present[comp] or not c.by_component[comp])
    cw = {comp: (c.weights[comp] / total_w if (present[comp] or not c.by_component[comp]) else 0.0)
          for comp in COMPONENTS}
    components, points, losses, total = {}, {}, [], 0.0
    for comp, all_factors in c.by_component.items():
        factors = [(n, spec) for n, spec in all_factors if spec.neutral is not None or _known(signals.get(n))]
        fw = sum(spec.weight for _, spec in factors)
        if not factors or fw <= 0:
            components[comp] = 100.0
            total += cw[comp] * 100.0
            continue
        if not present[comp]:
            continue
        acc = 0.0
        for name, spec in factors:
            raw = signals.get(name)
            v = spec.value(raw)
            acc += spec.weight * v
            share = spec.weight / fw * cw[comp] * 100.0
            points[name] = round(v * share, 4)
            loss = (1.0 - v) * share
            if loss > 0.05:
                losses.append((loss, name, float(raw) if raw is not None else float("nan")))
        value = 100.0 * acc / fw
        components[comp] = round(value, 2)
        total += cw[comp] * value
    total = round(min(100.0, max(0.0, total)), 2)
    losses.sort(key=lambda t: (-t[0], t[1]))
    reasons = [Reason(factor=name, value=0.0 if math.isnan(raw) else round(raw, 4), impact=-round(loss, 2))
               for loss, name, raw in losses[:6]]
    return HealthResult(score=total, band=c.band(total), components=components, reasons=reasons, signals=signals,
                        profile=profile, green_min=c.green_min, yellow_min=c.yellow_min,
                        weights={comp: round(w, 6) for comp, w in cw.items()}, factor_points=points)


def reference_score_one(rules: ScoreRules, raw: RawCustomerState, now_ms: int, key: Any, triggers: Any,
                        model: Any) -> Scored:
    cid, main, today = raw.customer_id, raw.main, now_ms // DAY_MS
    agg = compute_aggregates_full(raw, now_ms, rules.windows_days)
    behaviour = behaviour_features(agg, main)
    signals = signals_from(agg, model.population_percentile(behaviour.get(LEVEL_FEATURE)))
    health = reference_health(rules.scorecard, signals, rules.scorecard.profile_for(agg.plan, agg.tenure_days))
    x = features_from(health.signals, health.score, behaviour)
    p, p_raw, version = model.predict_detail(x)
    pf = rules.portfolio.assess(agg, health, p)
    model_reasons = [Reason(factor=f"model:{f}", value=round(v, 4), impact=round(c, 4)) for f, v, c in model.explain(x)]
    new_alerts, state = evaluate(
        rules.alerts, load_alert_state(main), cid, now_ms, score=health.score, band=health.band,
        history=score_history(main), churn_p=p, model_version=version, reasons=model_reasons + health.reasons[:4],
        triggers=triggers, green_min=health.green_min, yellow_min=health.yellow_min)
    cancelled = agg.subscription_status == "cancelled"
    changes = ChangeTracker(main, rules.scorecard, agg.plan, health)
    new_alerts = changes.attach([] if cancelled else new_alerts)
    last_pub = int(main[layout.PUBLISHED_SCORE]) / 10 if layout.PUBLISHED_SCORE in main else None
    last_day = int(main.get(layout.PUBLISHED_DAY, "-1"))
    publish = (last_pub is None or abs(health.score - last_pub) >= rules.score_publish_delta or today > last_day
               or any(a.kind == "band_change" for a in new_alerts) or pf.stage != main.get(layout.STAGE))
    score = None
    if publish:
        score = ScoreSnapshot(
            customer_id=cid, ts=agg.as_of, health_score=health.score, health_band=health.band,
            churn_probability=min(1.0, max(0.0, p)), model_version=version, components=health.components,
            **pf.snapshot_fields(), churn_probability_raw=min(1.0, max(0.0, p_raw)),
            since_previous=changes.for_snapshot(rules.change_explain_delta))
    snap_day, snap_text, pending = "", "", None
    if not cancelled and today - int(main.get(layout.SNAPSHOT_DAY, "-100000")) >= rules.snapshot_every_days:
        snap_day, snap_text = f"{today}:{(now_ms % DAY_MS) // 1000}", encode_features(x)
        pending = (f"{cid}\x00{snap_day}", now_ms + rules.label_horizon_days * DAY_MS)
    fields = alert_state_fields(state)
    fields.update({layout.CHURN_P: f"{p:.4f}", layout.HEALTH_BAND: health.band, layout.MODEL_VERSION_FIELD: version,
                   layout.SORT_KEY: order_text(key), layout.STAGE: pf.stage})
    fields.update(reasons_fields(health.reasons[:layout.REASONS]))
    if publish:
        fields.update({layout.PUBLISHED_SCORE: str(int(round(health.score * 10))), layout.PUBLISHED_DAY: str(today)})
    fields.update(changes.fields(publish, p, now_ms))
    box = ([OutboxEntry.ALERT.entry(a.model_dump_json()) for a in new_alerts]
           + ([OutboxEntry.SCORE.entry(score.model_dump_json())] if score else []))
    if today > last_day and pf.learn and rules.portfolio_enabled:
        box.append(OutboxEntry.OBSERVATION.entry(encode_observation(now_ms, pf.features)))
    item = rules.portfolio.item(cid, now_ms, raw, health, pf)
    save = ScoreSave(today, int(round(health.score * 10)), fields, snap_day, snap_text, outbox=box)
    return Scored(new_alerts, score, pending, save, None if cancelled else round(p, 4), item)


def as_bytes(out: Scored) -> tuple[Any, ...]:
    item = out.portfolio
    return ([a.model_dump_json() for a in out.alerts], out.score.model_dump_json() if out.score else None,
            out.pending, out.save.encode(), repr(out.risk),
            None if item is None else (item.as_of_ms, repr(item.scores), repr(item.observations)))


def copy_of(raw: RawCustomerState) -> RawCustomerState:
    return RawCustomerState(raw.customer_id, dict(raw.main), dict(raw.days), dict(raw.seen), dict(raw.tickets),
                            raw.dedupe_days)


def sync_into(target: RawCustomerState, source: RawCustomerState) -> None:
    """``target``'s dicts made equal to ``source``'s in place; unchanged values keep their objects."""
    for mine, theirs in ((target.main, source.main), (target.days, source.days), (target.seen, source.seen)):
        for f in [f for f in mine if f not in theirs]:
            del mine[f]
        for f, v in theirs.items():
            if mine.get(f) != v:
                mine[f] = str(v)


async def test_score_one_equals_the_reference_on_every_scoring(settings: Settings, redis_client: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # a model that starts serving within the history, so model reasons and explanations show
    s = settings.model_copy(update={"model_min_labels": 20, "model_min_positives": 1, "model_champion_margin": 0.0})
    compared = {"calls": 0, "alerts": 0, "published": 0}
    kept: dict[str, RawCustomerState] = {}

    def checked(rules: ScoreRules, raw: RawCustomerState, now_ms: int, key: Any, triggers: Any, model: Any) -> Scored:
        want = as_bytes(reference_score_one(rules, copy_of(raw), now_ms, key, triggers, model))
        live = kept.setdefault(raw.customer_id, RawCustomerState(raw.customer_id))
        sync_into(live, raw)
        assert as_bytes(score_one(rules, live, now_ms, key, triggers, model)) == want
        out = score_one(rules, raw, now_ms, key, triggers, model)
        assert as_bytes(out) == want
        compared["calls"] += 1
        compared["alerts"] += len(out.alerts)
        compared["published"] += out.score is not None
        return out

    monkeypatch.setattr(scorer_module, "score_one", checked)
    await run(Harness(s, redis_client), sim_records(customers=12, days=60, seed=4), random.Random(1))
    assert compared["calls"] > 1000 and compared["alerts"] > 0 and compared["published"] > 100, compared
