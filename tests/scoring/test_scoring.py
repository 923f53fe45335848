"""Scorecard arithmetic, configuration validation, trends (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_app.state.codec import score_history
from stream_app.scoring.alerts import trend
from stream_app.scoring.scorecard import COMPONENTS, FactorSpec, Scorecard, ScorecardConfig

PERFECT = {
    "activity_vs_baseline": 1.0, "active_days_share_30d": 0.8, "days_since_last_activity": 0.5, "features_30d": 9,
    "active_users_30d": 12, "nps_mean_90d": 9.0, "csat_90d": 1.0, "open_ticket_load": 0, "reopened_30d": 0,
    "ticket_load_30d": 0, "sentiment_30d": 0.5, "mrr_change_pct_90d": 0.1, "downgrades_90d": 0,
    "tenure_days": 400, "cancelled": 0,
}


def test_factor_ramp_both_directions_and_neutral() -> None:
    up = FactorSpec(component="adoption", lo=1, hi=9)
    assert (up.value(1), up.value(5), up.value(9), up.value(20), up.value(-3)) == (0.0, 0.5, 1.0, 1.0, 0.0)
    down = FactorSpec(component="support", lo=20, hi=0, neutral=1.0)
    assert (down.value(0), down.value(10), down.value(30), down.value(None)) == (1.0, 0.5, 0.0, 1.0)


def test_weighted_total_is_the_weighted_mean_of_components() -> None:
    card = Scorecard(ScorecardConfig())
    r = card.score_signals({**PERFECT, "features_30d": 1, "active_users_30d": 1})  # adoption -> 0
    assert r.components["adoption"] == 0.0
    w = ScorecardConfig().weights
    assert r.score == pytest.approx(100 * (1 - w["adoption"] / sum(w.values())))
    assert r.reasons[0].factor == "features_30d" and r.reasons[0].impact < 0
    assert [x.impact for x in r.reasons] == sorted(x.impact for x in r.reasons)  # strongest (most negative) first
    assert sum(-x.impact for x in r.reasons) == pytest.approx(100 - r.score, abs=0.05)


def test_bands_follow_thresholds() -> None:
    cfg = ScorecardConfig(green_min=80, yellow_min=50)
    assert (cfg.band(80), cfg.band(79.9), cfg.band(50), cfg.band(49.9)) == ("green", "yellow", "yellow", "red")


def test_weights_change_the_score() -> None:
    signals = {**PERFECT, "nps_mean_90d": 4.0, "csat_90d": 0.4}  # satisfaction -> 0
    only_sat = Scorecard(ScorecardConfig(weights={c: (1.0 if c == "satisfaction" else 0.0) for c in COMPONENTS}))
    assert only_sat.score_signals(signals).score == 0.0
    no_sat = Scorecard(ScorecardConfig(weights={c: (0.0 if c == "satisfaction" else 1.0) for c in COMPONENTS}))
    assert no_sat.score_signals(signals).score == 100.0


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"weights": {"engagement": -1}}, "weights must be >= 0"),
        ({"weights": {"engagement": 0, "adoption": 0}}, "at least one weight"),
        ({"weights": {"happiness": 1}}, "unknown component(s) ['happiness']"),
        ({"green_min": 40, "yellow_min": 60}, "bands must be ordered"),
        ({"factors": {"x": {"component": "vibes", "lo": 0, "hi": 1}}}, "unknown component 'vibes'"),
        ({"factors": {"x": {"component": "support", "lo": 1, "hi": 1}}}, "lo and hi must differ"),
        ({"factors": {"x": {"component": "support", "lo": 0, "hi": 1, "weight": -1}}}, "greater than or equal to 0"),
    ],
)
def test_config_validation_names_the_problem(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ScorecardConfig(**kwargs)
    assert needle in str(exc.value)


def test_config_from_yaml_file_overrides_and_validates(tmp_path: Path) -> None:
    good = tmp_path / "card.yaml"
    good.write_text("weights: {engagement: 1, support: 1}\ngreen_min: 75\nfactors:\n  features_30d: {hi: 4}\n")
    cfg = ScorecardConfig.from_file(good)
    assert cfg.green_min == 75 and cfg.factors["features_30d"].hi == 4 and cfg.factors["features_30d"].lo == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("weights: {engagment: 1}\n")
    with pytest.raises(ValidationError, match="engagment"):
        ScorecardConfig.from_file(bad)


def test_trend_uses_the_latest_score_old_enough() -> None:
    history = score_history({"h100": "800", "h105": "700", "h110": "650", "lts": "1"})
    assert history == {100: 80.0, 105: 70.0, 110: 65.0}
    assert trend(history, today=112, score=60.0, days=7) == -10.0  # vs day 105
    assert trend(history, today=112, score=60.0, days=30) is None


def test_a_new_customer_is_not_at_risk_on_its_first_event() -> None:
    from stream_app.scoring.aggregates import compute_aggregates
    from stream_app.model.churn import HealthPrior, features_from
    from stream_app.scoring.scorecard import signals_from
    from stream_app.core import RawCustomerState

    # only a `started` subscription event: no activity, no surveys, no tickets yet
    raw = RawCustomerState("new", main={"lts": "1000", "fs": "1000", "start": "1000", "n": "1", "st": "started",
                                        "sts": "1000", "mrr": "50000", "m0": "1000,50000"})
    agg = compute_aggregates(raw, None, [7, 30, 90])
    health = Scorecard(ScorecardConfig()).score(agg)
    p = HealthPrior().predict_one(features_from(signals_from(agg), health.score))
    assert health.band != "red" and p < 0.1, (health.score, p)
    # the same silence after onboarding is a real warning sign
    later = compute_aggregates(raw, 40 * 86_400_000, [7, 30, 90])
    assert Scorecard(ScorecardConfig()).score(later).score < health.score
