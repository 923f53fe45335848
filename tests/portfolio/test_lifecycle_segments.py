"""Lifecycle stage rules, the portfolio config file, online segmentation (pure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream_app.portfolio.lifecycle import LifecycleConfig, StageInputs, stage_of
from stream_app.portfolio.config import PortfolioConfig, PortfolioConfigError
from stream_app.portfolio.segments import FEATURES, SegmentConfig, SegmentModel, alert_threshold

BASE = StageInputs(status="renewed", tenure_days=200, health=65, band="yellow", engagement=55, churn_probability=0.05)


def with_(**changes: object) -> StageInputs:
    return StageInputs(**{**BASE.__dict__, **changes})


@pytest.mark.parametrize(
    "changes, stage",
    [
        ({}, "established"),
        ({"status": "cancelled", "band": "red"}, "churned"),  # churned beats at-risk
        ({"band": "red", "tenure_days": 5}, "at_risk"),  # at-risk beats onboarding
        ({"churn_probability": 0.25}, "at_risk"),  # min is inclusive
        ({"churn_probability": 0.2499}, "established"),
        ({"tenure_days": 29.9}, "onboarding"),
        ({"tenure_days": 30}, "adopting"),  # max is exclusive
        ({"tenure_days": 89}, "adopting"),
        ({"tenure_days": 400, "health": 75, "engagement": 70}, "loyal"),
        ({"tenure_days": 400, "health": 75, "engagement": 50}, "established"),  # not engaged enough to be loyal
        ({"tenure_days": None}, "established"),  # unknown tenure: tenure rules do not hold
    ],
)
def test_default_stage_rules(changes: dict[str, object], stage: str) -> None:
    assert stage_of(with_(**changes), LifecycleConfig()) == stage


def test_stage_rules_from_yaml(tmp_path: Path) -> None:
    f = tmp_path / "portfolio.yaml"
    f.write_text(
        "gross_margin: 0.7\n"
        "lifecycle:\n"
        "  default: adopting\n"
        "  rules:\n"
        "    - {stage: churned, status: [cancelled]}\n"
        "    - {stage: loyal, tenure_days: {min: 180}, health: {min: 60}}\n"
        "segments: {k: 3, alert_thresholds: {seg2: 0.4}}\n"
    )
    cfg = PortfolioConfig.from_file(f)
    assert cfg.gross_margin == 0.7 and cfg.segments.k == 3
    assert stage_of(BASE, cfg.lifecycle) == "loyal"
    assert stage_of(with_(tenure_days=100), cfg.lifecycle) == "adopting"  # the default


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("lifecycle: {rules: [{stage: adopting, tenure_days: {min: 90, max: 30}}]}",
         "lifecycle.rules[0].tenure_days: min (90) must be below max (30)"),
        ("lifecycle: {rules: [{stage: dormant}]}", "lifecycle.rules[0].stage: Input should be"),
        ("lifecycle: {rules: [{stage: loyal, tenure: {min: 1}}]}", "lifecycle.rules[0].tenure: Extra inputs are not permitted"),
        ("lifecycle: {rules: [{stage: loyal, band: [purple]}]}", "lifecycle.rules[0].band[0]: Input should be"),
        ("lifecycle: {rules: [{stage: loyal}, {stage: churned, status: [cancelled]}]}",
         "lifecycle: rules[0] (loyal) has no condition, so the rules after it can never match"),
        ("lifecycle: {rules: [{stage: loyal, health: {}}]}", "lifecycle.rules[0].health: give min, max or both"),
        ("periods: [quarter]", "periods: must include 'month'"),
        ("gross_margin: 0", "gross_margin: Input should be greater than 0"),
        ("segments: {k: 3, alert_thresholds: {seg7: 0.3}}", "segments: alert_thresholds.seg7: unknown segment"),
        ("segments: {alert_thresholds: {seg1: 1.5}}", "segments: alert_thresholds.seg1: threshold must be in (0, 1)"),
    ],
)
def test_config_errors_name_the_field_and_rule(tmp_path: Path, yaml_text: str, message: str) -> None:
    f = tmp_path / "portfolio.yaml"
    f.write_text(yaml_text + "\n")
    with pytest.raises(PortfolioConfigError) as exc:
        PortfolioConfig.from_file(f)
    assert message in str(exc.value)


def test_lifecycle_config_validates_directly() -> None:
    with pytest.raises(ValidationError):
        LifecycleConfig(default="dormant")  # type: ignore[arg-type]


def point(level: float, noise: float = 0.0) -> dict[str, float]:
    return {f: min(1.0, max(0.0, level + noise * ((i % 3) - 1))) for i, f in enumerate(FEATURES)}


def test_segments_separate_distinct_behaviour_and_are_described_by_traits() -> None:
    m = SegmentModel(SegmentConfig(k=3, seed=1, halflife=0.1))
    for i in range(300):
        m.assign(point(0.9, 0.05 * (i % 2)))
        m.assign(point(0.5, 0.05 * (i % 2)))
        m.assign(point(0.1, 0.05 * (i % 2)))
    busy, mid, idle = (m.assign(point(v), learn=False) for v in (0.9, 0.5, 0.1))
    assert len({busy, mid, idle}) == 3
    info = {s.segment: s for s in m.describe()}
    assert info[busy].observations == info[mid].observations == info[idle].observations == 300
    assert all(t.text.startswith("high ") for t in info[busy].traits)
    assert all(t.text.startswith("low ") for t in info[idle].traits)
    assert len(info[busy].traits) == 3


def test_segments_are_deterministic_and_survive_a_checkpoint() -> None:
    cfg = SegmentConfig(k=4, seed=9)
    a, b = SegmentModel(cfg), SegmentModel(cfg)
    xs = [point(0.1 + 0.08 * (i % 10), 0.1) for i in range(200)]
    assert [a.assign(x) for x in xs] == [b.assign(x) for x in xs]
    restored = SegmentModel.from_bytes(a.to_bytes(), cfg)
    assert [restored.assign(x) for x in xs] == [a.assign(x) for x in xs]
    # a checkpoint of another k is not reused
    other = SegmentModel.from_bytes(a.to_bytes(), SegmentConfig(k=5, seed=9))
    assert other.n == 0


def test_segments_do_not_depend_on_the_hash_seed() -> None:
    code = (
        "import json; from stream_app.portfolio.segments import *\n"
        "m = SegmentModel(SegmentConfig(k=4, seed=2))\n"
        "xs = [{f: ((i * 7 + j * 3) % 10) / 10 for j, f in enumerate(FEATURES)} for i in range(60)]\n"
        "print(json.dumps([m.assign(x) for x in xs]))\n"
    )
    runs = []
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout))
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 1


def test_alert_threshold_per_segment() -> None:
    cfg = SegmentConfig(k=3, alert_thresholds={"seg1": 0.4})
    assert alert_threshold("seg1", cfg, default=0.25) == 0.4
    assert alert_threshold("seg0", cfg, default=0.25) == 0.25
    assert alert_threshold(None, cfg, default=0.25) == 0.25
