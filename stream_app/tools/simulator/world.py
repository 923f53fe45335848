"""The simulated world: its vocabulary (topics, features, plans), the model's constants, the
configuration, the records it emits and the ground truth it keeps, and small helpers."""

from __future__ import annotations

import random
from array import array
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from stream_app.core import MINUTE_MS

#: Logical topic names (the Kafka topics are ``cs.<name>`` by default).
TOPICS: tuple[str, ...] = ("activity", "tickets", "surveys", "subscriptions")

#: Product feature vocabulary; the first three are "core" features every account uses first.
FEATURES: tuple[str, ...] = (
    "dashboard", "reports", "search", "integrations", "api", "automation", "alerts",
    "sharing", "comments", "calendar", "mobile_app", "analytics", "workflows",
    "admin_console", "billing_portal",
)
CORE = 3

#: Plans, cheapest first.
PLANS: tuple[str, ...] = ("starter", "growth", "enterprise")
PLAN_SEATS = {"starter": (2, 8), "growth": (5, 25), "enterprise": (15, 50)}
_PLAN_SEAT_PRICE = {"starter": 15.0, "growth": 39.0, "enterprise": 79.0}
_PLAN_BASE = {"starter": 0.0, "growth": 49.0, "enterprise": 499.0}
MIN_SEATS, MAX_SEATS = 2, 50

# Region of the account: UTC offset in hours of its working day, with weights.
SHIFTS = (-8.0, -7.0, -6.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 8.0, 9.0, 10.0)
SHIFT_W = (6, 3, 6, 12, 3, 14, 20, 8, 2, 6, 6, 5, 3)

PRIORITIES = ("low", "normal", "high", "urgent")
PRIO_RESOLVE_H = {"low": 40.0, "normal": 20.0, "high": 8.0, "urgent": 3.0}
SHOCK_KINDS = ("champion_left", "outage", "price_increase")

_COMMENTS_GOOD = (
    "Great product, the team loves it.", "Saves us hours every week.",
    "Support was quick and helpful.", "Reports are exactly what we needed.",
    "Very easy to roll out to new people.",
)
_COMMENTS_MID = (
    "Does the job.", "Fine, but the UI could be faster.", "Some features are hard to find.",
    "OK overall, pricing is a bit high.", "Works, onboarding took a while.",
)
_COMMENTS_BAD = (
    "Too slow and keeps breaking.", "We are evaluating alternatives.",
    "Support took days to answer.", "Too expensive for what we use.",
    "Nobody on our team uses it anymore.", "The last outage hurt us badly.",
)

# Latent dynamics.
THETA = 0.12          # mean-reversion speed of h toward the customer's level
SIGMA = 0.035         # daily noise of h
EMA_ALPHA = 1.0 / 21  # the slow "how has it been lately" average that drives churn
P_SHOCK = 1.0 / 200   # per customer-day
P_DECLINING = 0.15    # share of customers on a slow decline
# Churn hazard per day: base + peak / (1 + exp((ema - mid) / width)).
HAZ_BASE = 0.0001
HAZ_PEAK = 0.03
HAZ_MID = 0.33
HAZ_WIDTH = 0.055
HAZ_PLAN = {"starter": 1.3, "growth": 0.9, "enterprise": 0.5}  # small accounts churn more easily
P_REACTIVATE = 0.0015  # per day for 90 days after a cancellation
INITIAL_COHORT = 0.7   # share of customers already there on day 0


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulation run (the output is a pure function of them).

    >>> SimConfig().customers, SimConfig(days=30).days
    (300, 30)
    """

    customers: int = 300
    days: int = 90
    start: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    seed: int = 7
    activity_scale: float = 1.0  # multiplies activity volume


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One generated event: logical topic, event time in epoch ms, contract payload.

    >>> e = SimEvent("activity", 0, {"event_id": "c00000-1", "customer_id": "c00000",
    ...                              "ts": "1970-01-01T00:00:00.000+00:00", "action": "login"})
    >>> e.topic, e.event["action"]
    ('activity', 'login')
    """

    topic: str
    ts_ms: int
    event: dict[str, Any]


@dataclass
class CustomerTruth:
    """Ground truth about one customer, for evaluating a scorer offline.

    ``latent_health_daily`` has one value per simulated day the customer was a
    subscriber (from the onboarding day through the cancellation day; for a
    reactivated customer also from the reactivation day to the end).
    ``cancelled_ts`` is the (first) cancellation, ``final_mrr`` the last MRR the
    customer paid (before the cancellation, if any), ``shocks`` the ISO dates of
    shocks.  A reactivated customer has ``reactivated_ts`` set and does not
    cancel a second time within the run.

    >>> t = CustomerTruth("c00001", "2026-01-01T09:00:00.000+00:00", None, "growth", 439.0,
    ...                   [0.71, 0.7], [])
    >>> t.cancelled_ts is None, t.reactivated_ts
    (True, None)
    """

    customer_id: str
    start_ts: str
    cancelled_ts: str | None
    plan: str
    final_mrr: float
    latent_health_daily: list[float]
    shocks: list[str]
    reactivated_ts: str | None = None


def mrr_of(plan: str, seats: int) -> float:
    return round(_PLAN_BASE[plan] + _PLAN_SEAT_PRICE[plan] * seats, 2)


def iso_ms(ms: int) -> str:
    """Epoch ms -> ISO-8601 UTC with millisecond precision.

    >>> iso_ms(1767261600123)
    '2026-01-01T10:00:00.123+00:00'
    """
    dt = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    return dt.isoformat(timespec="milliseconds")


class Account:
    """Mutable state of one simulated account (internal)."""

    __slots__ = (
        "idx", "cid", "onboard_day", "shift_ms", "plan", "seats", "mrr", "paid_mrr",
        "mu", "h", "ema", "declining", "decline_start", "decline_rate", "floor",
        "breadth", "features", "users", "has_api", "term", "anchor",
        "active", "cancel_day", "cancel_ts", "reactivated", "react_ts", "start_ts",
        "start_tod", "pending", "tickets", "health", "shocks",
    )

    def __init__(self) -> None:
        self.pending: list[tuple[int, int, tuple[Any, ...]]] = []
        self.health = array("H")
        self.shocks: list[str] = []
        self.tickets = 0
        self.active = False
        self.cancel_day = -1
        self.cancel_ts = -1
        self.reactivated = False
        self.react_ts = -1
        self.start_ts = -1


_TIME_TABLES: tuple[list[str], list[str]] | None = None


def time_tables() -> tuple[list[str], list[str]]:
    """Lookup tables for fast timestamp formatting (built once, ~60k short strings)."""
    global _TIME_TABLES
    if _TIME_TABLES is None:
        hm = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
        ss = [f"{x // 1000:02d}.{x % 1000:03d}+00:00" for x in range(MINUTE_MS)]
        _TIME_TABLES = (hm, ss)
    return _TIME_TABLES


def clip1(x: float) -> float:
    return round(-1.0 if x < -1.0 else (1.0 if x > 1.0 else x), 3)


def clamp_int(x: float, lo: int, hi: int) -> int:
    v = int(round(x))
    return lo if v < lo else (hi if v > hi else v)


def comment_for(rng: random.Random, score: int, lo: int, hi: int) -> str:
    frac = (score - lo) / (hi - lo)
    pool = _COMMENTS_GOOD if frac >= 0.8 else (_COMMENTS_MID if frac >= 0.5 else _COMMENTS_BAD)
    return pool[int(rng.random() * len(pool))]
