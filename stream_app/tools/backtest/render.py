"""The backtest report for people: tables on the console, and a plot (reliability curve, AUC over time)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.table import Table


# --- presenting -------------------------------------------------------------------------------
def render(rep: dict[str, Any], console: Any) -> None:
    """The report as readable rich tables."""
    i, r, p = rep["input"], rep["run"], rep["points"]
    console.print(f"[bold]backtest[/bold] {i['file']}: {i['events_fed']:,} events, {i['customers']:,} customers, "
                  f"{i['days']} days ({i['start'][:10] if i['start'] else '?'} .. {i['end'][:10] if i['end'] else '?'}), "
                  f"{i['cancellations']} cancellations, {i['dead_lettered']} dead-lettered")
    console.print(f"ran in {r['seconds']} s ({r['events_per_s']:,.0f} events/s); served probability: "
                  f"{r['served_probability']}; model at the end: {rep['model'].get('serving')} "
                  f"({rep['model'].get('labels_seen')} labels, {rep['model'].get('positives')} positives)")
    console.print(f"evaluation points: {p['n']:,} ({p['positives']:,} positive, base rate {p['base_rate']}); {p['rule']}")

    def f(v: Any, fmt: str = "{:.3f}") -> str:
        return "-" if v is None else fmt.format(v)

    t = Table(title="ranking", show_lines=False)
    for col in ("score", "ROC AUC", "top-decile lift", "AUC, shuffled labels"):
        t.add_column(col, justify="right" if col != "score" else "left")
    c = rep["control_shuffled_labels"]
    t.add_row("churn probability", f(rep["churn_probability"]["roc_auc"]), f(rep["churn_probability"]["top_decile_lift"], "{:.2f}x"),
              f(c["churn_probability_auc"]))
    t.add_row("health score alone", f(rep["health_score"]["roc_auc"]), f(rep["health_score"]["top_decile_lift"], "{:.2f}x"),
              f(c["health_auc"]))
    console.print(t)

    cal = rep["calibration"]
    served = "calibrated (served)" if r["served_probability"] == "calibrated" else "served (raw)"
    t = Table(title="calibration: before (raw model output) / after (" + served + ")")
    for col in ("", "log loss", "Brier", "mean p", "ECE"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("raw", f(cal["raw"]["log_loss"], "{:.4f}"), f(cal["raw"]["brier"], "{:.5f}"), f(cal["raw"]["mean_p"], "{:.4f}"),
              f(cal["raw"]["ece"], "{:.4f}"))
    t.add_row(served, f(cal["served"]["log_loss"], "{:.4f}"), f(cal["served"]["brier"], "{:.5f}"),
              f(cal["served"]["mean_p"], "{:.4f}"), f(cal["served"]["ece"], "{:.4f}"))
    t.add_row("observed rate", "", "", f(p["base_rate"], "{:.4f}"), "")
    console.print(t)

    t = Table(title="reliability by decile (mean predicted -> observed churn within the horizon)")
    for col in ("decile", "n", "raw: mean p", "observed", served + ": mean p", "observed "):
        t.add_column(col, justify="right")
    for a, b in zip(cal["raw"]["reliability"], cal["served"]["reliability"]):
        t.add_row(str(a["bin"]), f"{a['n']:,}", f"{a['mean_p']:.4f}", f"{a['observed']:.4f}",
                  f"{b['mean_p']:.4f}", f"{b['observed']:.4f}")
    console.print(t)

    t = Table(title="the probability as a flag, per evaluation point: share flagged, precision, recall")
    for col in ("p >=", "raw: flagged", "precision", "recall", served + ": flagged", "precision ", "recall "):
        t.add_column(col, justify="right")
    for a, b in zip(cal["raw"].get("thresholds", []), cal["served"].get("thresholds", [])):
        t.add_row(f"{a['threshold']:g}", f(a["flagged_share"], "{:.2%}"), f(a["precision"], "{:.1%}"), f(a["recall"], "{:.1%}"),
                  f(b["flagged_share"], "{:.2%}"), f(b["precision"], "{:.1%}"), f(b["recall"], "{:.1%}"))
    console.print(t)

    al = rep["alerts"]
    cr = al["churn_risk"]
    t = Table(title="alerts")
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_row("churn_risk alerts (customers)", f"{cr['alerts']:,} ({cr['customers_alerted']:,})")
    t.add_row(f"churn_risk precision (cancelled within {r['label_horizon_days']} d; {cr['alerts_judged']:,} judged)",
              f(cr["precision_within_horizon"], "{:.1%}"))
    t.add_row(f"churn_risk recall (cancellations alerted in the {al['recall_lookback_days']:g} d before)",
              f"{f(cr['recall_share'], '{:.1%}')} ({cr['cancellations_with_alert_before']} of {cr['cancellations']})")
    t.add_row("median lead time, first alert -> cancellation", f(cr["median_lead_days"], "{:.1f} days"))
    for k, v in al["per_1000_customers_per_week"].items():
        t.add_row(f"alerts per 1,000 customers per week: {k}", f(v, "{:.1f}"))
    console.print(t)
    if rep.get("comparison"):
        render_comparison(rep["comparison"], console)


def _auc_cell(v: Mapping[str, Any] | None, sep: str = " ") -> str:
    """``0.812 [0.77, 0.85]``: a value and its interval (two decimals: a few hundred
    resamples do not pin the bounds any closer)."""
    if not v or v.get("value") is None:
        return "-"
    ci = v.get("ci")
    return f"{v['value']:.3f}" + (f"{sep}[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def comparison_table(comp: Mapping[str, Any], title: str, width: int = 160) -> Any:
    """A rich table of one comparison: a row per score, the test period first (what a batch
    model can be judged on), then all dates; extra scores' tables have the test columns only.
    Narrower than 130 columns, each interval goes under its value instead of beside it."""
    wide = width >= 130
    sep = " " if wide else "\n"
    scores: Mapping[str, Any] = comp["scores"]
    has_all = any("auc_all" in v for v in scores.values())
    t = (Table(title=title) if wide
         else Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True))
    cols = ["score", "AUC test", "per-date AUC test"] + (["AUC all", "per-date AUC all"] if has_all else [])
    for col in [*cols, "top-decile lift test"]:
        if col == "score":
            t.add_column(col, min_width=11, ratio=1)
        else:  # figures never wrap: the names do (in narrow mode, at a chosen place)
            t.add_column(col if wide else col.replace(" AUC", "\nAUC").replace(" lift", "\nlift"),
                         justify="right", no_wrap=True)
    for v in scores.values():
        cells = [v["label"], _auc_cell(v["auc_test"], sep), _auc_cell(v["per_date_auc_test"], sep)]
        if has_all:
            cells += [_auc_cell(v.get("auc_all"), sep), _auc_cell(v.get("per_date_auc_all"), sep)]
        lift = v.get("top_decile_lift_test")
        t.add_row(*cells, "-" if lift is None else f"{lift:.2f}x")
    return t


def render_comparison(comp: Mapping[str, Any], console: Any) -> None:
    """The comparison's tables: built-in scores on all observations, then each extra score
    against the built-in ones on exactly its rows."""
    a, te = comp["all"], comp["test"]
    boot = f"customer-clustered bootstrap 95 % intervals, {comp['n_boot']} resamples" if comp["n_boot"] else "no intervals"
    console.print(f"comparison on weekly observations: {a['n']:,} ({a['positives']:,} positive) on {a['dates']} dates "
                  f"from {(comp['first_date'] or '?')[:10]}; test from {(comp['test_from'] or '?')[:10]}: "
                  f"{te['n']:,} ({te['positives']:,} positive) on {te['dates']} dates; {boot}")
    width = console.width
    console.print(comparison_table(comp, "comparison: served probability against baselines", width))
    for name, ex in comp.get("extra", {}).items():
        console.print(comparison_table(ex, f"comparison with {name}, like for like on its {ex['n']:,} test rows "
                                           f"({ex['positives']:,} positive, {ex['missing_test_rows']:,} test rows "
                                           "without a value)", width))
    diffs = {**comp.get("served_minus", {}),
             **{name: ex["served_minus"] for name, ex in comp.get("extra", {}).items() if "served_minus" in ex}}
    labels = {name: v["label"] for name, v in comp["scores"].items()}
    for name, d in diffs.items():
        console.print(f"served minus {labels.get(name, name)}, test: AUC {_diff_cell(d['auc_test'])}, "
                      f"per-date AUC {_diff_cell(d['per_date_auc_test'])} (paired intervals)")


def _diff_cell(v: Mapping[str, Any] | None) -> str:
    """``+0.012 [+0.003, +0.021]``: a difference and its paired interval."""
    if not v or v.get("value") is None:
        return "-"
    ci = v.get("ci")
    return f"{v['value']:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def plot(rep: dict[str, Any], out: str | Path) -> None:
    """PNG: the reliability curve (raw and served) and the weekly AUC."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 5))
    cal = rep["calibration"]
    top = 0.0
    for name, style in (("raw", "o--"), ("served", "s-")):
        rows = cal[name]["reliability"]
        xs, ys = [r["mean_p"] for r in rows], [r["observed"] for r in rows]
        top = max(top, *xs, *ys) if rows else top
        label = "raw model output" if name == "raw" else f"served ({rep['run']['served_probability']})"
        a1.plot(xs, ys, style, label=f"{label}, ECE {cal[name]['ece']}")
    top = min(1.0, top * 1.05) if top else 1.0
    a1.plot([0, top], [0, top], color="grey", linewidth=1, label="perfect calibration")
    a1.set_xlim(0, top)
    a1.set_ylim(0, top)
    a1.set_xlabel("mean predicted churn probability (decile)")
    a1.set_ylabel(f"observed churn within {rep['run']['label_horizon_days']} days")
    a1.set_title("reliability")
    a1.legend(loc="upper left", fontsize=8)
    weeks = rep["auc_over_time"]
    xs = [w["week_start"] for w in weeks]
    a2.plot(xs, [w["churn_probability_auc"] for w in weeks], "o-", label="churn probability")
    a2.plot(xs, [w["health_auc"] for w in weeks], "s--", label="health score alone")
    a2.axhline(0.5, color="grey", linewidth=1)
    a2.set_ylim(0.3, 1.0)
    a2.set_ylabel("ROC AUC (points of that week)")
    a2.set_title("AUC over time (event time)")
    a2.tick_params(axis="x", rotation=60, labelsize=7)
    a2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
