"""Change explanations: what moved between a customer's previous score and this one.

Standing reasons say what costs a customer points *now*; a change explanation says what
*moved* since the previous score that subscribers saw (the last one published on
``cs.scores``): which components and which raw factors, by how much, and what that is worth
in points of health score. :func:`explain_change` is pure; the rest encodes the previous
score compactly in the customer's Redis hash (every value under 64 bytes, so the hash
stays in Redis' compact listpack encoding) and decodes it again.

Stored fields (written whenever a score is published):

* ``pc``  ``<event time s>|<score x10>|<churn p x10^4>|<6 components in COMPONENTS order>``
* ``pr1`` .. ``pr3``  the raw signals, 5 per field, 3 significant digits ('' = unknown)

and, whenever an update carried an explanation, ``lc`` (``<time s>|<before>|<after>``) and
``lc1``, ``lc2`` (``name:impact;...``) for ``stream-app customer``.

>>> from stream_app.scoring.scorecard import Scorecard, ScorecardConfig
>>> card = Scorecard(ScorecardConfig())
>>> good = {"activity_vs_baseline": 1.0, "active_days_share_30d": 0.8, "days_since_last_activity": 1,
...         "features_30d": 9, "active_users_30d": 12, "tenure_days": 400}
>>> prev, curr = card.score_signals(good), card.score_signals({**good, "activity_vs_baseline": 0.2})
>>> [(c.kind, c.name, c.before, c.after, c.impact) for c in explain_change(prev, curr)]
[('component', 'engagement', 100.0, 60.0, -12.0), ('factor', 'activity_vs_baseline', 1.0, 0.2, -12.0)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from schemas import Alert, Change, ScoreChange

from stream_app.scoring.scorecard import COMPONENTS, HealthResult, Scorecard

#: The raw signals kept with the previous score (``scoring.signals_from`` keys), in order.
SIGNALS: tuple[str, ...] = (
    "activity_vs_baseline", "active_days_share_30d", "days_since_last_activity", "features_30d", "active_users_30d",
    "nps_mean_90d", "csat_90d", "open_ticket_load", "reopened_30d", "ticket_load_30d",
    "sentiment_30d", "mrr_change_pct_90d", "downgrades_90d", "tenure_days", "cancelled",
    "activity_percentile",
)
_PER_FIELD = 5
#: field names this module owns in the customer hash
FIELDS: tuple[str, ...] = ("pc", "pr1", "pr2", "pr3", "pr4", "lc", "lc1", "lc2")


def explain_change(prev: HealthResult, curr: HealthResult, min_points: float = 0.5, limit: int = 8) -> list[Change]:
    """Components and raw factors that moved, strongest first.

    A component's impact is the change of its contribution to the score (sub-score x its
    normalised weight); a factor's is the change of the points it contributes. Both sets add
    up to the score change. Moves worth less than ``min_points`` are left out.
    """
    out: list[Change] = []
    for c in COMPONENTS:
        before, after = prev.components.get(c), curr.components.get(c)
        if before is None and after is None:
            continue
        impact = (after or 0.0) * curr.weights.get(c, 0.0) - (before or 0.0) * prev.weights.get(c, 0.0)
        if abs(impact) >= min_points:
            out.append(Change(kind="component", name=c, before=before, after=after, impact=round(impact, 2)))
    for name in sorted(set(prev.factor_points) | set(curr.factor_points)):
        impact = curr.factor_points.get(name, 0.0) - prev.factor_points.get(name, 0.0)
        if abs(impact) >= min_points:
            out.append(Change(kind="factor", name=name, before=_finite(prev.signals.get(name)),
                              after=_finite(curr.signals.get(name)), impact=round(impact, 2)))
    out.sort(key=lambda ch: (-abs(ch.impact), ch.kind != "component", ch.name))
    return out[:limit]


def _finite(v: float | None) -> float | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return round(float(v), 4)


# --- the previous score in the customer's hash ------------------------------------------
def _num(v: float) -> str:
    """Shortest text of a number to 3 significant digits.

    >>> _num(12.0), _num(0.4567), _num(-1234.5), _num(100.0)
    ('12', '0.457', '-1.23e+03', '100')
    """
    return f"{v:.3g}"


def _comp(v: float) -> str:
    """A 0..100 sub-score with one decimal, trailing zeros dropped: '72.5', '100', '0'."""
    text = f"{v:.1f}"
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class Previous:
    """The previous published score, as stored."""

    ts_ms: int
    score: float
    churn_probability: float | None
    components: dict[str, float]
    signals: dict[str, float | None]


def previous_fields(health: HealthResult, churn_p: float, ts_ms: int) -> dict[str, str]:
    """Hash fields that remember this score as the previous one (each value < 64 bytes).

    >>> from stream_app.scoring.scorecard import Scorecard, ScorecardConfig
    >>> h = Scorecard(ScorecardConfig()).score_signals({"tenure_days": 20.0, "features_30d": 3.0})
    >>> f = previous_fields(h, 0.1234, 1_767_600_000_000)
    >>> f["pc"], f["pr1"]
    ('1767600000|636|1234|60|41.1|60|92|90|1.7', ',,,3,')
    >>> all(len(v) < 64 for v in f.values())
    True
    """
    comps = "|".join(_comp(health.components[c]) if c in health.components else "" for c in COMPONENTS)
    fields = {"pc": f"{ts_ms // 1000}|{int(round(health.score * 10))}|{int(round(churn_p * 10_000))}|{comps}"}
    for i in range(0, len(SIGNALS), _PER_FIELD):
        part = SIGNALS[i:i + _PER_FIELD]
        fields[f"pr{i // _PER_FIELD + 1}"] = ",".join(
            "" if (v := _finite(health.signals.get(s))) is None else _num(v) for s in part)
    return fields


def load_previous(main: dict[str, str]) -> Previous | None:
    """The previous score from the customer's hash, or None (never published, or unreadable)."""
    pc = main.get("pc")
    if not pc:
        return None
    try:
        ts_s, score, p, *comps = pc.split("|")
        components = {c: float(v) for c, v in zip(COMPONENTS, comps) if v != ""}
        signals: dict[str, float | None] = {}
        for i in range(0, len(SIGNALS), _PER_FIELD):
            values = main.get(f"pr{i // _PER_FIELD + 1}", "").split(",")
            for s, v in zip(SIGNALS[i:i + _PER_FIELD], values):
                signals[s] = float(v) if v != "" else None
        return Previous(int(ts_s) * 1000, int(score) / 10, int(p) / 10_000, components, signals)
    except ValueError:
        return None


def rescore_previous(prev: Previous, scorecard: Scorecard, plan: str | None) -> HealthResult:
    """The previous score re-derived from its signals (for its factors' points), showing the
    components as they were published. Its profile is the one its tenure had (on today's plan)."""
    profile = scorecard.profile_for(plan, prev.signals.get("tenure_days"))
    health = scorecard.score_signals(prev.signals, profile)
    return health.model_copy(update={"components": prev.components or health.components, "score": prev.score})


def score_change(prev: Previous, prev_health: HealthResult, curr: HealthResult, min_points: float = 0.5) -> ScoreChange:
    """The ``since_previous`` block of an alert or a score snapshot."""
    return ScoreChange(
        since=datetime.fromtimestamp(prev.ts_ms / 1000, tz=timezone.utc),
        health_score_before=min(100.0, max(0.0, prev.score)),
        churn_probability_before=None if prev.churn_probability is None else min(1.0, max(0.0, prev.churn_probability)),
        changes=explain_change(prev_health, curr, min_points=min_points),
    )


def last_change_fields(change: ScoreChange, score_after: float) -> dict[str, str]:
    """``lc``, ``lc1``, ``lc2``: the latest explained change, compact, for ``stream-app customer``.

    >>> ch = ScoreChange(since=0, health_score_before=80, changes=[
    ...     Change(kind="component", name="engagement", before=90, after=50, impact=-12.0),
    ...     Change(kind="factor", name="activity_vs_baseline", before=1, after=0.2, impact=-12.0)])
    >>> last_change_fields(ch, 68.0)
    {'lc': '0|80|68', 'lc1': 'engagement:-12;activity_vs_baseline:-12', 'lc2': ''}
    """
    fields = {"lc": f"{int(change.since.timestamp())}|{change.health_score_before:g}|{score_after:g}", "lc1": "", "lc2": ""}
    slot = 1
    for ch in change.changes:
        item = f"{ch.name[:40]}:{ch.impact:g}"
        key = f"lc{slot}"
        joined = f"{fields[key]};{item}" if fields[key] else item
        if len(joined) < 64:
            fields[key] = joined
        elif slot < 2:
            slot += 1
            fields[f"lc{slot}"] = item
        else:
            break
    return fields


def load_last_change(main: dict[str, str]) -> dict[str, object] | None:
    """The latest explained change as stored (for ``stream-app customer``), or None."""
    lc = main.get("lc")
    if not lc:
        return None
    try:
        since_s, before, after = lc.split("|")
        items = []
        for part in ";".join(filter(None, (main.get("lc1", ""), main.get("lc2", "")))).split(";"):
            if part:
                name, impact = part.rsplit(":", 1)
                items.append({"name": name, "impact": float(impact)})
        return {"since": datetime.fromtimestamp(int(since_s), tz=timezone.utc).isoformat(),
                "health_score_before": float(before), "health_score_after": float(after), "changes": items}
    except ValueError:
        return None


class ChangeTracker:
    """One customer's scoring: the change since its previous published score, computed at
    most once and only when something carries it (an alert, or a snapshot that moved)."""

    def __init__(self, main: dict[str, str], scorecard: Scorecard, plan: str | None, health: HealthResult) -> None:
        self._main, self._scorecard, self._plan, self.health = main, scorecard, plan, health
        self._prev: Previous | None | bool = False  # False: not loaded yet
        self._change: ScoreChange | None = None
        self.used = False

    def previous(self) -> Previous | None:
        if self._prev is False:
            self._prev = load_previous(self._main)
        return self._prev  # type: ignore[return-value]

    def get(self) -> ScoreChange | None:
        prev = self.previous()
        if prev is None:
            return None
        if self._change is None:
            self._change = score_change(prev, rescore_previous(prev, self._scorecard, self._plan), self.health)
        self.used = True
        return self._change

    def attach(self, alerts: list[Alert]) -> list[Alert]:
        """Every alert carries the change (when there is a previous score)."""
        if not alerts or self.get() is None:
            return alerts
        return [a.model_copy(update={"since_previous": self._change}) for a in alerts]

    def for_snapshot(self, threshold: float) -> ScoreChange | None:
        """The change, for a score snapshot that moved at least ``threshold`` points."""
        prev = self.previous()
        if prev is None or abs(self.health.score - prev.score) < threshold:
            return None
        return self.get()

    def fields(self, published: bool, churn_p: float, ts_ms: int) -> dict[str, str]:
        """Hash fields to save: this score as the previous one (when published), and the
        latest explained change (when one was carried)."""
        out = previous_fields(self.health, churn_p, ts_ms) if published else {}
        if self.used and self._change is not None:
            out.update(last_change_fields(self._change, self.health.score))
        return out
