"""The portfolio's pure side: what one scoring says about a customer's place in the portfolio
(lifecycle stage, at risk or not, segmentation input) and the month facts it contributes.

No I/O: the scorer calls it per scored event (``pipeline.score``); the write side
(``portfolio.tracker``) stores what it produces, the read side (``portfolio.reports``) reports it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from stream_app.core import RawCustomerState
from stream_app.portfolio.config import PortfolioConfig
from stream_app.portfolio.contributions import ScoreFacts
from stream_app.portfolio.lifecycle import StageInputs, stage_of
from stream_app.portfolio.periods import month_of
from stream_app.portfolio.segments import segment_features
from stream_app.scoring.aggregates import CustomerAggregates
from stream_app.scoring.scorecard import HealthResult


@dataclass(frozen=True)
class Assessment:
    """What one scoring says about the customer's place in the portfolio: its lifecycle
    stage, whether it is at risk, and its behaviour features (for the segmentation)."""

    stage: str
    risky: bool
    features: dict[str, float]
    learn: bool  # an active customer: its behaviour teaches the segmentation

    def snapshot_fields(self) -> dict[str, Any]:
        """The optional ``cs.scores`` fields."""
        return {"lifecycle_stage": self.stage}


#: one scoring's segmentation input: (order time, customer id, month, features, learn)
Observation = tuple[int, str, int, dict[str, float], bool]
#: an observation recovered from an outbox after a crash: (order time, customer id, features)
ReplayedObservation = tuple[int, str, dict[str, float]]


def encode_scoring(as_of_ms: int, score: ScoreFacts, features: dict[str, float]) -> bytes:
    """One scoring's month facts, as an outbox entry (without its ``f`` tag): order time,
    score facts, segmentation features (JSON floats round-trip exactly, so a segment assigned
    from a recovered scoring is the one the clean run assigned).

    >>> decode_scoring(encode_scoring(86_400_000, ScoreFacts(655, "yellow", False, "adopting"), {"usage": 0.25}))
    (86400000, ScoreFacts(health10=655, band='yellow', risky=False, stage='adopting', segment=None), {'usage': 0.25})
    """
    return orjson.dumps([as_of_ms, score.encode(), features])


def decode_scoring(raw: bytes) -> tuple[int, ScoreFacts, dict[str, float]]:
    k, score, features = orjson.loads(raw)
    return int(k), ScoreFacts.decode(score), {str(f): float(v) for f, v in features.items()}


@dataclass(frozen=True)
class PortfolioItem:
    """One scored customer, as the portfolio needs it: its state after its latest scored
    event, the score facts of its latest scoring in each month (always including the month
    of ``as_of_ms``), and every scoring's segmentation input (``collect`` merges a batch's
    scorings of one customer).

    ``recovered``: only scorings recovered from the customer's outbox (``from_outbox``): months
    it carries no facts for keep the stored ones (a later scoring may have written them).
    """

    customer_id: str
    as_of_ms: int
    raw: RawCustomerState
    scores: dict[int, ScoreFacts] = field(default_factory=dict)
    observations: tuple[Observation, ...] = ()
    recovered: bool = False


class PortfolioAssessor:
    """Per customer, in the scoring loop (no I/O): stage, risk, segmentation input, month facts."""

    def __init__(self, config: PortfolioConfig, risk_threshold: float) -> None:
        self.cfg = config
        self.risk_threshold = risk_threshold

    def assess(self, agg: CustomerAggregates, health: HealthResult, churn_p: float) -> Assessment:
        """Stage (config rules: a pure function) and the segmentation input (pure too: the
        segment itself is assigned in ``update``, in event-time order)."""
        stage = stage_of(StageInputs(
            status=agg.subscription_status, tenure_days=agg.tenure_days, health=health.score, band=health.band,
            engagement=health.components.get("engagement"), churn_probability=churn_p,
        ), self.cfg.lifecycle)
        return Assessment(stage, health.band == "red" or churn_p >= self.risk_threshold,
                          segment_features(agg), agg.subscription_status != "cancelled")

    def item(self, customer_id: str, as_of_ms: int, raw: RawCustomerState, health: HealthResult,
             assessment: Assessment) -> PortfolioItem:
        """One scoring as of event time ``as_of_ms`` (the scored event's order time)."""
        m = month_of(as_of_ms)
        score = ScoreFacts(health10=int(round(health.score * 10)), band=health.band, risky=assessment.risky,
                           stage=assessment.stage)
        obs = (as_of_ms, customer_id, m, assessment.features, assessment.learn)
        return PortfolioItem(customer_id, as_of_ms, raw, {m: score}, (obs,))

    @staticmethod
    def from_outbox(customer_id: str, raw: RawCustomerState,
                    scorings: Sequence[tuple[int, ScoreFacts, dict[str, float]]]) -> PortfolioItem:
        """Scorings whose state was saved before a crash but whose month facts never reached
        the portfolio (they rode in the outbox, see ``pipeline.score.score_one``), in scoring order;
        ``raw``: the customer's current state. Merged ahead of the customer's re-scorings."""
        scores = {month_of(k): sf for k, sf, _ in scorings}
        obs = tuple((k, customer_id, month_of(k), f, False) for k, _, f in scorings)
        return PortfolioItem(customer_id, scorings[-1][0], raw, scores, obs, recovered=True)

    @staticmethod
    def collect(acc: dict[str, PortfolioItem], item: PortfolioItem | None) -> None:
        """Add a customer's scoring to ``acc`` (scorings of one batch, in event order): one
        update per customer with its latest state, keeping each month's latest score facts
        and every scoring's segmentation input."""
        if item is None:
            return
        prev = acc.get(item.customer_id)
        if prev is not None:
            item = replace(item, scores={**prev.scores, **item.scores},
                           observations=prev.observations + item.observations)
        acc[item.customer_id] = item
