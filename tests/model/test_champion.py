"""The churn model's champion rule and inputs (pure: no Redis, no broker)."""

from __future__ import annotations

import pickle
import random

from stream_app.scoring.aggregates import DAY_MS, compute_aggregates
from stream_app.model.features import behaviour_features, decode_features, encode_features
from stream_app.model.churn import ChurnModel
from stream_app.core import RawCustomerState


class _FixedScorer:
    """Stands in for the learnt candidate so the champion rule is tested on rankings we
    choose: its probability is a fixed function of the inputs (learn_one does nothing)."""

    def __init__(self, fn: object) -> None:
        self.fn = fn

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        p = self.fn(x)  # type: ignore[operator]
        return {True: p, False: 1.0 - p}

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        pass


def _stream(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    """Labels that a hidden signal ``s`` explains well and health explains weakly."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = rng.random()
        y = rng.random() < 0.02 + 0.3 * s ** 4
        health = 60.0 + 10 * rng.random() - 8 * s * rng.random()
        out.append(({"health_score": health, "s": s}, y))
    return out


def test_a_better_model_on_a_compressed_scale_takes_over() -> None:
    # the learnt candidate's probabilities sit in 0.001..0.002, far below the prior's; a
    # threshold-binned AUC would call it ~0.5, the exact rank AUC sees its ranking
    m = ChurnModel(min_labels=100, min_positives=10, warmup=0, window=3000, margin=0.01)
    m.candidates = {"logreg": _FixedScorer(lambda x: 0.001 + 0.001 * x["s"])}
    for x, y in _stream(3000, seed=1):
        m.learn_one(x, y)
    auc = m.window_auc()
    assert auc["logreg"] is not None and auc["prior"] is not None and auc["logreg"] > auc["prior"] + 0.05
    assert m.decide() == "logreg"
    assert m.predict_one({"health_score": 60.0, "s": 0.9})[1].startswith("online-logreg")


def test_a_near_tie_does_not_flip_back_and_forth() -> None:
    # the learnt candidate is the prior plus a small jitter: in some windows it ranks a hair
    # better, in others a hair worse. Without a margin the serving model flips; with one,
    # whoever serves keeps serving, checkpoint after checkpoint
    def jittered(x: dict[str, float]) -> float:
        return 1.0 / (1.0 + 2.718281828 ** ((x["health_score"] - 44.0) / 7.0)) + 1e-4 * ((x["s"] * 1e6) % 1)

    served: dict[float, list[str]] = {}
    gaps = []
    for margin in (0.0, 0.05):
        m = ChurnModel(min_labels=100, min_positives=10, warmup=0, window=1200, margin=margin)
        m.candidates = {"logreg": _FixedScorer(jittered)}
        served[margin] = []
        for chunk in range(12):
            for x, y in _stream(600, seed=100 + chunk):
                m.learn_one(x, y)
            served[margin].append(m.decide())
            auc = m.window_auc()
            assert auc["prior"] is not None and auc["logreg"] is not None
            gaps.append(auc["logreg"] - auc["prior"])
    assert max(abs(g) for g in gaps) < 0.05  # a near tie throughout (within the margin)
    assert served[0.0].count("logreg") >= 1 and served[0.0].count("prior") >= 1 and len(
        [1 for a, b in zip(served[0.0], served[0.0][1:]) if a != b]) >= 2  # flips without a margin
    assert served[0.05] == ["prior"] * 12


def test_an_untrained_period_does_not_hold_a_good_model_back() -> None:
    # weeks of a useless (constant) candidate, then it becomes good: once the window rolls
    # past the bad period, the good model serves; a cumulative AUC would still hold it at ~0.5
    m = ChurnModel(min_labels=100, min_positives=10, warmup=0, window=1500, margin=0.01)
    state = {"good": False}
    m.candidates = {"logreg": _FixedScorer(lambda x: (0.01 + 0.5 * x["s"]) if state["good"] else 0.05)}
    for x, y in _stream(5000, seed=3):
        m.learn_one(x, y)
    assert m.decide() == "prior"
    state["good"] = True
    for x, y in _stream(1500, seed=4):
        m.learn_one(x, y)
    assert m.decide() == "logreg"


def test_predictions_before_warmup_do_not_count() -> None:
    m = ChurnModel(min_labels=10, min_positives=2, warmup=50)
    for x, y in _stream(49, seed=5):
        m.learn_one(x, y)
    assert len(m.recent) == 0
    for x, y in _stream(10, seed=6):
        m.learn_one(x, y)
    assert len(m.recent) == 9  # recorded once the learnt candidate had seen 50 labels


def test_the_champion_travels_with_the_checkpoint() -> None:
    m = ChurnModel(min_labels=10, min_positives=2, warmup=10)
    for i in range(300):
        sick = i % 5 == 0
        m.learn_one({"health_score": 60.0 + i % 3, "tenure_days": 10.0 if sick else 300.0}, y=sick)
    m.decide()
    restored = ChurnModel.from_bytes(m.to_bytes())
    assert restored.champion == m.champion == "logreg"
    x = {"health_score": 61.0, "tenure_days": 12.0}
    assert restored.predict_detail(x) == m.predict_detail(x)


def test_a_checkpoint_from_before_behaviour_features_loads_and_starts_learning_again() -> None:
    old = ChurnModel(min_labels=5, min_positives=1)
    old.labels_seen, old.positives, old.version = 1234, 56, 1234
    state = dict(old.__dict__)
    for new in ("recent", "learnt", "serving", "decided", "levels", "warmup", "window", "margin",
                "learning_rate", "seed"):
        state.pop(new)
    blob = pickle.dumps(state)
    restored = ChurnModel.__new__(ChurnModel)
    restored.__setstate__(pickle.loads(blob))
    assert (restored.labels_seen, restored.positives, restored.version) == (1234, 56, 1234)
    assert restored.champion == "prior" and restored.predict_one({"health_score": 50.0})[1] == "prior-health-v1"


def _raw(slots: list[tuple[str, int]], days: dict[str, str]) -> RawCustomerState:
    main = {"lts": str(100 * DAY_MS), "fs": "0", "n": "1", "na": str(len(slots))}
    for i, (name, n) in enumerate(slots):
        main[f"a{i}"], main[f"n{i}"] = name, str(n)
    return RawCustomerState("c", main=main, days=days)


def test_features_are_keyed_by_action_name_not_slot() -> None:
    # the same behaviour in swapped slots gives the same features
    a = _raw([("login", 30), ("export", 3)], {"95": "0,0,10,1", "99": "0,0,5,2"})
    b = _raw([("export", 3), ("login", 30)], {"95": "0,0,1,10", "99": "0,0,2,5"})
    fa = behaviour_features(compute_aggregates(a, 100 * DAY_MS, [7, 30, 90]), a.main)
    fb = behaviour_features(compute_aggregates(b, 100 * DAY_MS, [7, 30, 90]), b.main)
    assert fa == fb
    assert fa["act90:login"] == 15 / 90 and fa["actlt:export"] == 3 / 100
    # an action the customer's state does not track is missing, not zero
    assert "act90:share" not in fa and "actlt:share" not in fa
    assert decode_features(encode_features(fa)) == {k: float(f"{v:.3g}") for k, v in fa.items()}


def test_population_percentile_is_unknown_until_learnt_then_ranks() -> None:
    m = ChurnModel(min_labels=20, min_positives=1)
    assert m.population_percentile(5.0) is None
    for i in range(40):
        m.learn_one({"health_score": 60.0, "activity_rate_90d": float(i)}, y=i == 0)
    low, high = m.population_percentile(1.0), m.population_percentile(30.0)
    assert low is not None and high is not None and low < 0.1 < 0.7 < high
