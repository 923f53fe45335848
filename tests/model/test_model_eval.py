"""Model evaluation: per-date AUC, the customer-clustered bootstrap, the backtest's comparison
with baselines, and the batch reference (bench/reference.py) and its command (bench/model_eval.py)."""

from __future__ import annotations

import doctest
import io
import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn  # noqa: F401  (in the test extra: the reference's tests must run, never skip)
from rich.console import Console

from stream_app.tools.backtest.run import CollectingOutputs, RunResult
from stream_app.tools.backtest.history import History, scan_history
from stream_app.tools.backtest.report import comparison, first_test_index, observation_dates, observation_rows, report
from stream_app.tools.backtest.render import render
from stream_app.model.evaluation import DAY_MS, clustered_bootstrap, per_date_auc, roc_auc
from stream_app.settings import Settings

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import reference  # noqa: E402

D = DAY_MS


# --- per-date AUC and the bootstrap ------------------------------------------------------------
def test_per_date_auc_by_hand() -> None:
    scores = [0.1, 0.4, 0.35, 0.8] + [0.3, 0.3, 0.3] + [0.9, 0.2]
    labels = [0, 0, 1, 1] + [1, 0, 0] + [0, 0]
    dates = [1, 1, 1, 1] + [2, 2, 2] + [3, 3]
    # date 1: 3 of 4 pairs ranked right (0.75); date 2: a constant score, 0.5; date 3: one class, skipped
    assert per_date_auc(scores, labels, dates) == 0.625
    order = np.random.default_rng(0).permutation(len(scores))
    assert per_date_auc(np.array(scores)[order], np.array(labels)[order], np.array(dates)[order]) == 0.625
    # cold start: a constant (high) prior on date 1, where the base rate is high, and a score
    # that ranks poorly on date 2. Pooled, the level difference between the dates looks like
    # skill (11.5 of 16 pairs); within dates it cannot: (0.5 + 1/3) / 2
    cold = [0.9] * 4 + [0.1, 0.2, 0.3, 0.4]
    y = [1, 1, 1, 0] + [0, 1, 0, 0]
    assert roc_auc(cold, y) == 11.5 / 16
    assert per_date_auc(cold, y, [1] * 4 + [2] * 4) == pytest.approx((0.5 + 1 / 3) / 2)
    assert per_date_auc([], [], []) is None


def _clustered_data(customers: int, rows_each: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An informative score whose signal sits in a per-customer effect (rows of a customer agree)."""
    rng = np.random.default_rng(seed)
    cust = np.repeat(np.arange(customers), rows_each)
    risk = rng.normal(size=customers)
    y = (rng.random(customers) < 1 / (1 + np.exp(-(risk * 1.5 - 1.5))))[cust]
    score = risk[cust] + rng.normal(scale=0.5, size=len(cust))
    return score, y, cust.astype(str)


def test_clustered_bootstrap_contains_estimate_deterministic_and_widens_with_fewer_customers() -> None:
    score, y, cust = _clustered_data(200, 6)

    def auc(s: np.ndarray, yy: np.ndarray) -> Any:
        return lambda idx: roc_auc(s[idx], yy[idx])

    point = roc_auc(score, y)
    ci = clustered_bootstrap(auc(score, y), cust, n_boot=200, seed=1)
    assert ci is not None and ci[0] < point < ci[1]  # type: ignore[operator]
    assert clustered_bootstrap(auc(score, y), cust, n_boot=200, seed=1) == ci
    assert clustered_bootstrap(auc(score, y), cust, n_boot=200, seed=2) != ci
    few = np.isin(cust, [str(i) for i in range(25)])
    ci_few = clustered_bootstrap(auc(score[few], y[few]), cust[few], n_boot=200, seed=1)
    assert ci_few is not None and ci_few[1] - ci_few[0] > 1.5 * (ci[1] - ci[0])
    assert clustered_bootstrap(auc(score, y), cust, n_boot=0) is None


def test_clustered_bootstrap_draws_whole_customers() -> None:
    cust = np.array(["a", "b", "a", "c", "b", "a"])  # a: 3 rows, b: 2, c: 1 (interleaved)
    sizes = {"a": 3, "b": 2, "c": 1}
    seen: list[np.ndarray] = []

    def stat(idx: np.ndarray) -> float:
        seen.append(idx)
        got = cust[idx]
        for c, n in sizes.items():
            assert (got == c).sum() % n == 0  # a customer comes with all of its rows, or not at all
        assert len(np.unique(idx[got == "a"])) in (0, 3)
        return float(len(idx))

    clustered_bootstrap(stat, cust, n_boot=30, seed=0)
    assert len(seen) == 30 and len({len(i) for i in seen}) > 1


# --- the comparison on a hand-built run ---------------------------------------------------------
def hand_run() -> RunResult:
    """Four customers over 70 days (horizon 30: observation dates 7, 14, 21, 28, 35; test: 35).

    a: cancels day 50 (positive from day 21); its score jumps on day 20; a later score (day 36)
       must not leak into date 35;
    b: never cancels, scored high throughout;
    c: joins (and starts) on day 16;
    d: seen from day 0 but first scored on day 10, cancels day 30 (positive 14..28, gone at 35).
    """
    h = History(path="hand", start_ms=0, end_ms=70 * D, first_seen={"a": 0, "b": 0, "c": 16 * D, "d": 0},
                billing={"a": [(0, "started"), (50 * D, "cancelled")], "c": [(16 * D, "started")],
                         "d": [(0, "started"), (30 * D, "cancelled")]})
    out = CollectingOutputs()
    out.score_log = [("a", 1 * D, 80.0, 0.3, 0.3), ("b", 1 * D, 60.0, 0.5, 0.5), ("d", 10 * D, 30.0, 0.4, 0.4),
                     ("c", 16 * D, 90.0, 0.2, 0.2), ("a", 20 * D, 20.0, 0.6, 0.6), ("a", 36 * D, 5.0, 0.99, 0.99)]
    return RunResult(h, out, {}, events=6, seconds=1.0, settings=Settings(_env_file=None, label_horizon_days=30))


def test_observation_dates_population_and_tenure() -> None:
    run = hand_run()
    assert observation_dates(run.history, 30) == [7 * D, 14 * D, 21 * D, 28 * D, 35 * D]
    assert first_test_index([1, 2, 3, 4, 5]) == 4 and first_test_index([1, 2, 3]) == 2 and first_test_index([1]) == 1
    rows = list(observation_rows(run.history, 30))
    assert len(rows) == 17  # a 5, b 5, c 3, d 4 (gone once cancelled)
    scored = list(observation_rows(run.history, 30, {"a": D, "b": D, "c": 16 * D, "d": 10 * D}))
    assert len(scored) == 16  # d is not scored yet on day 7
    tenure = {(r.customer, r.date_ms // D): r.tenure_days for r in scored}
    assert tenure[("c", 21)] == 5.0 and tenure[("b", 35)] == 35.0  # c from its start; b (no start event) from first seen
    assert [r.date_ms // D for r in scored if r.label] == [14, 21, 21, 28, 28, 35]


def test_comparison_by_hand() -> None:
    comp = comparison(hand_run(), n_boot=30)
    assert comp["all"] == {"n": 16, "positives": 6, "dates": 5, "customers": 4}
    assert comp["test"] == {"n": 3, "positives": 1, "dates": 1, "customers": 3}
    assert comp["test_from"].startswith("1970-02-05")  # day 35
    s = comp["scores"]
    # served: positives a (0.6) x3 beat all 10 negatives; d (0.4) x3 beat 5 (a early 0.3, c 0.2) and lose to b (0.5)
    assert s["served"]["auc_all"]["value"] == 45 / 60
    # per date: 7 has no positive, 14: 0.5, 21: 0.75, 28: 0.75, 35: 1.0
    assert s["served"]["per_date_auc_all"]["value"] == 0.75
    assert s["served"]["auc_test"]["value"] == 1.0 and s["served"]["per_date_auc_test"]["value"] == 1.0
    assert s["health"]["auc_all"]["value"] == 1.0  # every positive's health is below every negative's
    # tenure alone (shorter = riskier), ties half: (2.5 + 1.5 + 0.5 + 5 + 2.5 + 1.5) / 60
    assert s["tenure"]["auc_all"]["value"] == 0.225
    for v in s.values():
        lo, hi = v["auc_all"]["ci"]
        assert lo <= v["auc_all"]["value"] <= hi
    assert comparison(hand_run(), n_boot=30) == comp  # deterministic
    # paired differences on the test rows: served 1.0 against tenure's own test AUC
    diff = comp["served_minus"]["tenure"]["auc_test"]
    assert diff["value"] == round(1.0 - s["tenure"]["auc_test"]["value"], 4)
    assert set(comp["served_minus"]) == {"health", "tenure"}


def test_comparison_with_an_extra_score_is_like_for_like() -> None:
    extra = {"ref": {("a", 35 * D): 0.1, ("b", 35 * D): 0.9, ("a", 28 * D): 0.5}}  # c missing; day 28 is not test
    ex = comparison(hand_run(), extra, n_boot=20)["extra"]["ref"]
    assert (ex["n"], ex["positives"], ex["missing_test_rows"]) == (2, 1, 1)
    assert ex["scores"]["ref"]["auc_test"]["value"] == 0.0      # ranks b above a, who cancels
    assert ex["scores"]["served"]["auc_test"]["value"] == 1.0   # the served score on the same two rows
    assert set(ex["scores"]) == {"ref", "served", "health", "tenure"}
    assert ex["served_minus"]["auc_test"]["value"] == 1.0     # 1.0 - 0.0 on the same rows


def test_report_includes_and_renders_the_comparison() -> None:
    rep = report(hand_run(), n_boot=10)
    json.dumps(rep)
    assert rep["comparison"]["scores"]["served"]["auc_all"]["value"] == 0.75
    buf = io.StringIO()
    render(rep, Console(file=buf, width=160))
    text = buf.getvalue()
    assert "comparison: served probability against baselines" in text and "tenure alone" in text
    assert "0.750 [" in text


# --- the batch reference ------------------------------------------------------------------------
def _line(topic: str, cid: str, ts: int, **fields: Any) -> str:
    return json.dumps({"topic": topic, "event_id": f"{cid}-{ts}-{topic}", "customer_id": cid, "ts": ts, **fields})


def tiny_history(path: Path) -> Path:
    """100 days: four active customers (50 logins a week), x barely active and cancelling on
    day 40, y active until day 28 then silent and cancelling on day 75. Observation dates
    7..70; test dates 56, 63, 70, where y is the only churner."""
    rows = []
    for cid in ("k1", "k2", "k3", "k4", "x", "y"):
        rows.append(_line("subscriptions", cid, D // 4, status="started", mrr=10))
    for week in range(15):
        for cid in ("k1", "k2", "k3", "k4"):
            rows.append(_line("activity", cid, week * 7 * D + D // 2, action="login", count=50))
        if week <= 4:
            rows.append(_line("activity", "y", week * 7 * D + D // 2, action="login", count=50))
    rows.append(_line("activity", "x", D // 2, action="login", count=1))
    rows.append(_line("subscriptions", "x", 40 * D, status="cancelled", mrr=0))
    rows.append(_line("activity", "y", 60 * D, action="export_rare", count=3))  # only in the test period
    rows.append(_line("subscriptions", "y", 75 * D, status="cancelled", mrr=0))
    rows.append(_line("activity", "k1", 100 * D, action="login"))
    rows.sort(key=lambda r: json.loads(r)["ts"])
    path.write_text("\n".join(rows) + "\n")
    return path


def test_reference_separates_an_inactive_churner(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, label_horizon_days=30)
    path = tiny_history(tmp_path / "tiny.jsonl")
    history = scan_history(path, settings)
    fit = reference.fit_reference(path, history, settings)
    assert fit.features == ["log1p_login_28d", "tenure_days"]  # actions of the training dates only
    assert fit.coefficients["log1p_login_28d"] < 0
    assert fit.test_from_ms == 56 * D and fit.test == {"rows": 15, "positives": 3, "dates": 3}
    rows = [r for r in observation_rows(history, 30) if r.date_ms >= 56 * D]
    assert {(r.customer, r.date_ms) for r in rows} == set(fit.predictions)
    p = [fit.predictions[(r.customer, r.date_ms)] for r in rows]
    assert roc_auc(p, [r.label for r in rows]) == 1.0 == fit.test_auc
    assert reference.batch_reference(path, history, settings) == fit.predictions


def test_reference_doctests() -> None:
    assert doctest.testmod(reference).failed == 0


def test_model_eval_judges_a_saved_run(tmp_path: Path) -> None:
    """The bench command end to end on a saved run (no replay): the reference and the
    comparison on the same rows, printed and written."""
    settings = Settings(_env_file=None, label_horizon_days=30)
    path = tiny_history(tmp_path / "tiny.jsonl")
    history = scan_history(path, settings)
    out = CollectingOutputs()
    for cid in ("k1", "k2", "k3", "k4", "x", "y"):  # a served score that knows y only late
        out.score_log.append((cid, D // 4, 70.0, 0.05, 0.05))
    out.score_log.append(("y", 62 * D, 30.0, 0.4, 0.4))
    saved = tmp_path / "run.pkl"
    saved.write_bytes(pickle.dumps(RunResult(history, out, {"serving": "hand"}, 0, 1.0, settings)))
    got = subprocess.run([sys.executable, str(BENCH / "model_eval.py"), "--from-run", str(saved), "--boot", "20",
                          "--out", str(tmp_path / "me.json")], capture_output=True, text=True, timeout=120)
    assert got.returncode == 0, got.stderr + got.stdout
    assert "batch reference" in got.stdout and "tenure alone" in got.stdout and "time:" in got.stdout
    res = json.loads((tmp_path / "me.json").read_text())
    ex = res["comparison"]["extra"]["batch reference"]
    assert (ex["n"], ex["positives"], ex["missing_test_rows"]) == (15, 3, 0)
    assert ex["scores"]["batch reference"]["auc_test"]["value"] == 1.0
    # served: y (the 3 positives) ties the 12 negatives on day 56 and beats them on 63 and 70
    assert ex["scores"]["served"]["auc_test"]["value"] == round((6 + 12 + 12) / 36, 4)
    assert res["reference"]["features"] == ["log1p_login_28d", "tenure_days"]
