"""Change explanations: what moved between a customer's previous score and this one.

Standing reasons say what costs a customer points *now*; a change explanation says what
*moved* since the previous score that subscribers saw (the last one published on
``cs.scores``): which components and which raw factors, by how much, and what that is worth
in points of health score. :func:`explain_change` is pure; the previous score is stored
compactly in the customer's Redis hash by :mod:`stream_app.state.codec` (``previous_fields``,
``load_previous``; the latest explained change: ``last_change_fields``).

>>> from stream_app.scoring.scorecard import Scorecard, ScorecardConfig
>>> card = Scorecard(ScorecardConfig())
>>> good = {"activity_vs_baseline": 1.0, "active_days_share_30d": 0.8, "days_since_last_activity": 1,
...         "features_30d": 9, "active_users_30d": 12, "tenure_days": 400}
>>> prev, curr = card.score_signals(good), card.score_signals({**good, "activity_vs_baseline": 0.2})
>>> [(c.kind, c.name, c.before, c.after, c.impact) for c in explain_change(prev, curr)]
[('component', 'engagement', 100.0, 60.0, -12.0), ('factor', 'activity_vs_baseline', 1.0, 0.2, -12.0)]
"""

from __future__ import annotations

from datetime import datetime, timezone

from schemas import Alert, Change, ScoreChange
from stream_app.scoring.scorecard import COMPONENTS, Health, HealthResult, Scorecard
from stream_app.state.codec import Previous, finite, last_change_fields, load_previous, previous_fields


def explain_change(prev: HealthResult | Health, curr: HealthResult | Health, min_points: float = 0.5,
                   limit: int = 8) -> list[Change]:
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
            out.append(Change(kind="factor", name=name, before=finite(prev.signals.get(name)),
                              after=finite(curr.signals.get(name)), impact=round(impact, 2)))
    out.sort(key=lambda ch: (-abs(ch.impact), ch.kind != "component", ch.name))
    return out[:limit]


def rescore_previous(prev: Previous, scorecard: Scorecard, plan: str | None) -> HealthResult:
    """The previous score re-derived from its signals (for its factors' points), showing the
    components as they were published. Its profile is the one its tenure had (on today's plan)."""
    profile = scorecard.profile_for(plan, prev.signals.get("tenure_days"))
    health = scorecard.score_signals(prev.signals, profile)
    return health.model_copy(update={"components": prev.components or health.components, "score": prev.score})


def _rescore_plain(prev: Previous, scorecard: Scorecard, plan: str | None) -> Health:
    """:func:`rescore_previous` as plain attributes (the scoring path)."""
    health = scorecard.score_plain(prev.signals, scorecard.profile_for(plan, prev.signals.get("tenure_days")))
    health.components, health.score = prev.components or health.components, prev.score
    return health


def score_change(prev: Previous, prev_health: HealthResult | Health, curr: HealthResult | Health,
                 min_points: float = 0.5) -> ScoreChange:
    """The ``since_previous`` block of an alert or a score snapshot."""
    return ScoreChange(
        since=datetime.fromtimestamp(prev.ts_ms / 1000, tz=timezone.utc),
        health_score_before=min(100.0, max(0.0, prev.score)),
        churn_probability_before=None if prev.churn_probability is None else min(1.0, max(0.0, prev.churn_probability)),
        changes=explain_change(prev_health, curr, min_points=min_points),
    )


class ChangeTracker:
    """One customer's scoring: the change since its previous published score, computed at
    most once and only when something carries it (an alert, or a snapshot that moved)."""

    def __init__(self, main: dict[str, str], scorecard: Scorecard, plan: str | None,
                 health: HealthResult | Health) -> None:
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
            self._change = score_change(prev, _rescore_plain(prev, self._scorecard, self._plan), self.health)
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
