"""Scorecard profiles (by plan / lifecycle stage) and the missing-component policy (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_app.scoring.scorecard import COMPONENTS, Scorecard, ScorecardConfig

PERFECT = {
    "activity_vs_baseline": 1.0, "active_days_share_30d": 0.8, "days_since_last_activity": 0.5, "features_30d": 9,
    "active_users_30d": 12, "nps_mean_90d": 9.0, "csat_90d": 1.0, "open_ticket_load": 0, "reopened_30d": 0,
    "ticket_load_30d": 0, "sentiment_30d": 0.5, "mrr_change_pct_90d": 0.1, "downgrades_90d": 0,
    "tenure_days": 400, "cancelled": 0,
}
NO_SURVEYS = {**PERFECT, "nps_mean_90d": None, "csat_90d": None}
BASE_W = ScorecardConfig().weights


def test_defaults_are_unchanged_by_profiles_support() -> None:
    r = Scorecard(ScorecardConfig()).score_signals(NO_SURVEYS)
    # neutral policy (the default): satisfaction scores its factors' neutral values (0.6 each)
    assert r.components["satisfaction"] == 60.0 and r.profile is None
    assert r.score == pytest.approx(100 - 40 * BASE_W["satisfaction"] / sum(BASE_W.values()), abs=0.01)
    assert sum(r.factor_points.values()) == pytest.approx(r.score, abs=0.05)
    assert sum(r.weights.values()) == pytest.approx(1.0)


def test_reweight_drops_a_missing_component_and_scales_the_rest() -> None:
    card = Scorecard(ScorecardConfig(missing_components="reweight"))
    r = card.score_signals(NO_SURVEYS)
    assert "satisfaction" not in r.components and r.score == 100.0  # everything known is perfect
    assert r.weights["satisfaction"] == 0.0
    rest = sum(w for c, w in BASE_W.items() if c != "satisfaction")
    assert r.weights["engagement"] == pytest.approx(BASE_W["engagement"] / rest, abs=1e-6)
    # a component with at least one known factor is not missing (its unknown factors stay neutral)
    partial = card.score_signals({**PERFECT, "nps_mean_90d": None})
    assert partial.components["satisfaction"] == pytest.approx(80.0)  # (0.6 + 1.0) / 2
    # a bad known component weighs more once the unknown one is left out
    poor = {**NO_SURVEYS, "features_30d": 1, "active_users_30d": 1}  # adoption -> 0
    neutral = Scorecard(ScorecardConfig()).score_signals(poor)
    dropped = card.score_signals(poor)
    assert dropped.reasons[0].impact < neutral.reasons[0].impact  # costs more points
    assert dropped.score == pytest.approx(100 * (1 - BASE_W["adoption"] / rest), abs=0.01)


def test_nothing_known_falls_back_to_neutral() -> None:
    card = Scorecard(ScorecardConfig(missing_components="reweight"))
    r = card.score_signals({})
    assert set(r.components) == set(COMPONENTS) and 0 < r.score < 100


def test_profiles_by_plan_and_stage_first_match_wins(tmp_path: Path) -> None:
    path = tmp_path / "card.yaml"
    path.write_text(
        """
weights: {engagement: 0.3, adoption: 0.15, satisfaction: 0.2, support: 0.15, commercial: 0.15, lifecycle: 0.05}
profiles:
  new_accounts:
    match: {stages: [onboarding]}
    weights: {engagement: 1, support: 1}
    missing_components: reweight
  enterprise:
    match: {plans: [Enterprise]}
    green_min: 80
    yellow_min: 60
    factors:
      active_users_30d: {hi: 40}
"""
    )
    cfg = ScorecardConfig.from_file(path)
    card = Scorecard(cfg)
    assert card.profile_for("starter", 5) == "new_accounts"
    assert card.profile_for("enterprise", 5) == "new_accounts"      # file order: first match wins
    assert card.profile_for("ENTERPRISE", 200) == "enterprise"      # plans match case-insensitively
    assert card.profile_for("growth", 200) is None
    assert card.profile_for(None, None) is None
    # the enterprise profile: own bands, own factor range (12 users of 40 is weak adoption)
    ent = card.score_signals(PERFECT, "enterprise")
    base = card.score_signals(PERFECT)
    assert base.score == 100.0 and ent.score < 100.0 and ent.profile == "enterprise"
    assert ent.components["adoption"] < 100 and (ent.green_min, ent.yellow_min) == (80.0, 60.0)
    unhappy = card.score_signals({**PERFECT, "features_30d": 4, "nps_mean_90d": 4.0, "csat_90d": 0.4}, "enterprise")
    assert 70 <= unhappy.score < 80 and unhappy.band == "yellow" and cfg.band(unhappy.score) == "green"
    # the onboarding profile: only engagement and support count
    new = card.score_signals({**PERFECT, "nps_mean_90d": 0.0, "csat_90d": 0.0}, "new_accounts")
    assert new.score == 100.0 and new.weights["satisfaction"] == 0.0


def test_profile_inherits_what_it_does_not_set() -> None:
    cfg = ScorecardConfig(green_min=75, profiles={"starter": {"match": {"plans": ["starter"]}, "yellow_min": 30}})
    r = Scorecard(cfg).score_signals(PERFECT, "starter")
    assert (r.green_min, r.yellow_min) == (75.0, 30.0) and r.weights == Scorecard(cfg).score_signals(PERFECT).weights


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"missing_components": "ignore"}, ["missing_components", "'neutral' or 'reweight'"]),
        ({"profiles": {"p": {"weights": {"engagement": 1}}}}, ["profiles.p.match", "Field required"]),
        ({"profiles": {"p": {"match": {}}}}, ["profiles.p.match", "at least one plan or stage"]),
        ({"profiles": {"p": {"match": {"stages": ["teen"]}}}}, ["profiles.p.match.stages", "unknown stage(s) ['teen']",
                                                               "onboarding, adoption, mature"]),
        ({"profiles": {"p": {"match": {"plans": ["x"]}, "weights": {"mood": 1}}}},
         ["profiles.p.weights", "unknown component(s) ['mood']"]),
        ({"profiles": {"p": {"match": {"plans": ["x"]}, "weights": {"engagement": -1}}}},
         ["profiles.p.weights", "weights must be >= 0"]),
        ({"profiles": {"p": {"match": {"plans": ["x"]}, "green_min": 40}}},
         ["profiles.p: bands must be ordered: yellow_min (45.0) < green_min (40.0)"]),
        ({"profiles": {"p": {"match": {"plans": ["x"]}, "factors": {"features_30d": {"hi": 1}}}}},
         ["profiles.p.factors.features_30d", "lo and hi must differ"]),
        ({"profiles": {"p": {"match": {"plans": ["x"]}, "factors": {"new": {"component": "vibes", "lo": 0, "hi": 1}}}}},
         ["profiles.p.factors.new.component", "unknown component 'vibes'"]),
        ({"profiles": {"p": {"match": {"plans": ["x"]}, "colour": "red"}}}, ["profiles.p.colour", "Extra inputs"]),
        ({"lifecycle_stages": {"early": 5}}, ["lifecycle_stages", "one stage must start at day 0"]),
        ({"lifecycle_stages": {"a": 0, "b": -3}}, ["lifecycle_stages", "must be >= 0"]),
    ],
)
def test_profile_validation_names_the_field_and_the_rule(data: dict, needles: list[str]) -> None:
    with pytest.raises(ValidationError) as exc:
        ScorecardConfig.model_validate(data)
    text = str(exc.value)
    for needle in needles:
        # pydantic prints nested locations as "profiles.p.match"
        assert needle in text, text


def test_yaml_errors_name_the_file_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  big:\n    match: {plans: [enterprise]}\n    weights: {engagment: 1}\n")
    with pytest.raises(ValidationError, match=r"(?s)profiles\.big\.weights.*engagment"):
        ScorecardConfig.from_file(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        ScorecardConfig.from_file(listy)
