"""Synthetic SaaS customer base: a generative model that emits contract-valid events.

Every account has a *latent health* ``h`` in ``[0, 1]`` that nobody observes.
It follows a mean-reverting random walk around a customer-specific level, takes
occasional sudden *shocks* (champion leaves, outage, price increase: a drop
that mean-reverts only partly, because the level itself is lowered too), and a
minority of accounts is on a slow decline toward churn.  The health drives,
day by day (weekends are much quieter):

* ``activity``: active users (share of the 2..50 seats rises with ``h``),
  logins with session ``duration_s``, ``feature_used`` over a ~15-feature
  vocabulary (healthier accounts use more of it), ``post``/``message``/``export``
  and a long open tail of rare ``action_<k>``; integrations send a
  pre-aggregated ``api_call`` with ``count`` > 1 and no ``user_id``;
* ``tickets``: rate rises as ``h`` falls; lifecycle opened -> (updated) ->
  resolved -> sometimes reopened -> resolved -> sometimes closed, priority
  skewed to high/urgent and sentiment lower for unhealthy accounts;
* ``surveys``: occasional NPS (0..10), CSAT (1..5, often after a ticket is
  resolved), rare CES (1..7, higher = easier), some with short comments;
* ``subscriptions``: ``started`` at onboarding, ``renewed`` on billing
  anniversaries (monthly; annual contracts for accounts that start on
  enterprise), ``upgraded``/``downgraded`` with health, ``cancelled`` with a
  daily hazard that rises sharply while a slow (3-week) average of ``h`` stays
  low -- so churn is visible in the signals weeks ahead, but noisy -- and
  rarely ``reactivated``.

All events of all customers come out in global event-time order, generated
lazily one simulated day at a time (only one day of compact records is held in
memory).  The output is a pure function of :class:`SimConfig`.

Example:

>>> sim = Simulator(SimConfig(customers=5, days=3, seed=1))
>>> evs = list(sim.events())
>>> evs[0].topic, evs[0].event["status"]
('subscriptions', 'started')
>>> all(a.ts_ms <= b.ts_ms for a, b in zip(evs, evs[1:]))
True
>>> len(sim.truth())
5
"""

from __future__ import annotations

import argparse
import gzip
import heapq
import io
import json
import math
import random
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterable, Iterator

from stream_app.core import DAY_MS, HOUR_MS, MINUTE_MS

__all__ = [
    "TOPICS",
    "FEATURES",
    "PLANS",
    "SimConfig",
    "SimEvent",
    "CustomerTruth",
    "Simulator",
    "write_jsonl",
    "write_truth",
    "main",
]


#: Logical topic names (the Kafka topics are ``cs.<name>`` by default).
TOPICS: tuple[str, ...] = ("activity", "tickets", "surveys", "subscriptions")

#: Product feature vocabulary; the first three are "core" features every account uses first.
FEATURES: tuple[str, ...] = (
    "dashboard", "reports", "search", "integrations", "api", "automation", "alerts",
    "sharing", "comments", "calendar", "mobile_app", "analytics", "workflows",
    "admin_console", "billing_portal",
)
_CORE = 3

#: Plans, cheapest first.
PLANS: tuple[str, ...] = ("starter", "growth", "enterprise")
_PLAN_SEATS = {"starter": (2, 8), "growth": (5, 25), "enterprise": (15, 50)}
_PLAN_SEAT_PRICE = {"starter": 15.0, "growth": 39.0, "enterprise": 79.0}
_PLAN_BASE = {"starter": 0.0, "growth": 49.0, "enterprise": 499.0}
_MIN_SEATS, _MAX_SEATS = 2, 50

# Region of the account: UTC offset in hours of its working day, with weights.
_SHIFTS = (-8.0, -7.0, -6.0, -5.0, -3.0, 0.0, 1.0, 2.0, 3.0, 5.5, 8.0, 9.0, 10.0)
_SHIFT_W = (6, 3, 6, 12, 3, 14, 20, 8, 2, 6, 6, 5, 3)

_PRIORITIES = ("low", "normal", "high", "urgent")
_PRIO_RESOLVE_H = {"low": 40.0, "normal": 20.0, "high": 8.0, "urgent": 3.0}
_SHOCK_KINDS = ("champion_left", "outage", "price_increase")

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
_THETA = 0.12          # mean-reversion speed of h toward the customer's level
_SIGMA = 0.035         # daily noise of h
_EMA_ALPHA = 1.0 / 21  # the slow "how has it been lately" average that drives churn
_P_SHOCK = 1.0 / 200   # per customer-day
_P_DECLINING = 0.15    # share of customers on a slow decline
# Churn hazard per day: base + peak / (1 + exp((ema - mid) / width)).
_HAZ_BASE = 0.0001
_HAZ_PEAK = 0.03
_HAZ_MID = 0.33
_HAZ_WIDTH = 0.055
_HAZ_PLAN = {"starter": 1.3, "growth": 0.9, "enterprise": 0.5}  # small accounts churn more easily
_P_REACTIVATE = 0.0015  # per day for 90 days after a cancellation
_INITIAL_COHORT = 0.7   # share of customers already there on day 0


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


def _mrr(plan: str, seats: int) -> float:
    return round(_PLAN_BASE[plan] + _PLAN_SEAT_PRICE[plan] * seats, 2)


def _iso(ms: int) -> str:
    """Epoch ms -> ISO-8601 UTC with millisecond precision.

    >>> _iso(1767261600123)
    '2026-01-01T10:00:00.123+00:00'
    """
    dt = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    return dt.isoformat(timespec="milliseconds")


class _Cust:
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


class Simulator:
    """Generates a customer base and its event streams (see the module docstring).

    ``events()`` restarts the simulation from scratch on every call and yields
    all events in non-decreasing ``ts_ms`` order; ``truth()`` describes the
    customers of the last run that was consumed to the end.

    >>> sim = Simulator(SimConfig(customers=20, days=14, seed=3))
    >>> n = sum(1 for _ in sim.events())
    >>> n > 100, [t.customer_id for t in sim.truth()][:2]
    (True, ['c00000', 'c00001'])
    """

    def __init__(self, config: SimConfig) -> None:
        if config.customers < 1 or config.days < 1:
            raise ValueError("customers and days must be >= 1")
        if config.activity_scale < 0:
            raise ValueError("activity_scale must be >= 0")
        start = config.start
        if start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        self.config = config
        self._start = start.astimezone(timezone.utc)
        self._start_ms = int(self._start.timestamp() * 1000)
        self._truth: list[CustomerTruth] | None = None

    # ------------------------------------------------------------------ setup
    def _make_customers(self) -> list[_Cust]:
        cfg = self.config
        rng = random.Random(f"churn-stream/customers/{cfg.seed}")
        width = max(5, len(str(cfg.customers - 1)))
        out: list[_Cust] = []
        for i in range(cfg.customers):
            c = _Cust()
            c.idx = i
            c.cid = f"c{i:0{width}d}"
            if cfg.days == 1 or rng.random() < _INITIAL_COHORT:
                c.onboard_day = 0
            else:
                c.onboard_day = rng.randint(1, cfg.days - 1)
            c.shift_ms = int(rng.choices(_SHIFTS, _SHIFT_W)[0] * HOUR_MS)
            r = rng.random()
            c.plan = "starter" if r < 0.5 else ("growth" if r < 0.86 else "enterprise")
            lo, hi = _PLAN_SEATS[c.plan]
            c.seats = rng.randint(lo, hi)
            c.mrr = c.paid_mrr = _mrr(c.plan, c.seats)
            mu = 0.33 + 0.6 * rng.betavariate(3.0, 1.8) + (0.03 if c.plan == "enterprise" else 0.0)
            c.mu = min(0.97, mu)
            c.h = min(1.0, max(0.0, c.mu + rng.gauss(0.0, 0.06)))
            c.ema = c.h
            c.declining = rng.random() < _P_DECLINING
            c.decline_start = rng.randint(0, max(0, cfg.days - 1))
            c.decline_rate = rng.uniform(0.003, 0.012)
            c.floor = rng.uniform(0.05, 0.25)
            b = 2 + round(13 * min(1.0, max(0.0, c.mu + rng.gauss(0.0, 0.12))))
            c.breadth = max(2, min(len(FEATURES), b))
            core = list(FEATURES[:_CORE])
            rest = list(FEATURES[_CORE:])
            rng.shuffle(core)
            rng.shuffle(rest)
            c.features = tuple(core + rest)
            c.users = [f"u{i * 100 + j}" for j in range(1, c.seats + 1)]
            c.has_api = rng.random() < (0.6 if c.plan == "enterprise" else 0.2)
            c.term = 365 if c.plan == "enterprise" else 30
            # Accounts already there on day 0 signed up before the window: spread their anchors.
            c.anchor = rng.randint(0, c.term - 1) if c.onboard_day == 0 else c.onboard_day
            c.start_tod = 0
            out.append(c)
        return out

    # ----------------------------------------------------------------- events
    def events(self) -> Iterator[SimEvent]:
        """Yield every event of every customer in global event-time order.

        >>> evs = list(Simulator(SimConfig(customers=3, days=2, seed=5)).events())
        >>> {e.topic for e in evs} <= set(TOPICS)
        True
        """
        cfg = self.config
        self._truth = None
        custs = self._make_customers()
        rng = random.Random(f"churn-stream/days/{cfg.seed}")
        seqs = [0] * len(custs)
        cids = [c.cid for c in custs]
        counter = [0]
        start_weekday = self._start.weekday()
        hm_tail, ss_tab = _time_tables()
        for d in range(cfg.days):
            day_start = self._start_ms + d * DAY_MS
            day_dt = self._start + timedelta(days=d)
            weekend = (start_weekday + d) % 7 >= 5
            recs: list[tuple[Any, ...]] = []
            date_iso = day_dt.date().isoformat()
            for c in custs:
                if c.onboard_day <= d:
                    self._customer_day(c, d, day_start, weekend, date_iso, rng, recs, counter)
            recs.sort(key=itemgetter(0))
            # Every record of day d lies in [day_start, day_start + DAY_MS): format its time of
            # day from two lookup tables ("HH:MM:" per minute, "SS.mmm+00:00" per ms of a minute).
            prefix = f"{date_iso}T"
            hm_tab = [prefix + x for x in hm_tail]
            for r in recs:
                ts = r[0]
                ci = r[1]
                seq = seqs[ci] + 1
                seqs[ci] = seq
                cid = cids[ci]
                m, rem = divmod(ts - day_start, MINUTE_MS)
                ev: dict[str, Any] = {
                    "event_id": f"{cid}-{seq}",
                    "customer_id": cid,
                    "ts": hm_tab[m] + ss_tab[rem],
                }
                kind = r[2]
                if kind == 0:
                    ev["action"] = r[3]
                    if r[4] is not None:
                        ev["user_id"] = r[4]
                    if r[5] is not None:
                        ev["feature"] = r[5]
                    if r[6] is not None:
                        ev["duration_s"] = r[6]
                    if r[7] > 1:
                        ev["count"] = r[7]
                    yield SimEvent("activity", ts, ev)
                elif kind == 1:
                    ev["ticket_id"] = r[3]
                    ev["status"] = r[4]
                    ev["priority"] = r[5]
                    if r[6] is not None:
                        ev["sentiment"] = r[6]
                    yield SimEvent("tickets", ts, ev)
                elif kind == 2:
                    ev["survey"] = r[3]
                    ev["score"] = r[4]
                    if r[5] is not None:
                        ev["comment"] = r[5]
                    yield SimEvent("surveys", ts, ev)
                else:
                    ev["status"] = r[3]
                    ev["mrr"] = r[4]
                    ev["plan"] = r[5]
                    yield SimEvent("subscriptions", ts, ev)
        self._truth = [self._truth_of(c) for c in custs]

    def truth(self) -> list[CustomerTruth]:
        """Ground truth of the last fully consumed ``events()`` run.

        >>> sim = Simulator(SimConfig(customers=2, days=2))
        >>> _ = list(sim.events()); [t.plan in PLANS for t in sim.truth()]
        [True, True]
        """
        if self._truth is None:
            raise RuntimeError("truth() is available after events() has been fully consumed")
        return list(self._truth)

    @staticmethod
    def _truth_of(c: _Cust) -> CustomerTruth:
        return CustomerTruth(
            customer_id=c.cid,
            start_ts=_iso(c.start_ts),
            cancelled_ts=_iso(c.cancel_ts) if c.cancel_ts >= 0 else None,
            plan=c.plan,
            final_mrr=c.paid_mrr,
            latent_health_daily=[v / 1000 for v in c.health],
            shocks=list(c.shocks),
            reactivated_ts=_iso(c.react_ts) if c.reactivated else None,
        )

    # ------------------------------------------------------- one customer-day
    def _customer_day(
        self,
        c: _Cust,
        d: int,
        day_start: int,
        weekend: bool,
        date_iso: str,
        rng: random.Random,
        recs: list[tuple[Any, ...]],
        counter: list[int],
    ) -> None:
        rnd = rng.random
        gauss = rng.gauss
        ci = c.idx
        shift = c.shift_ms

        def tod() -> int:
            """A time of day in ms (UTC), mostly inside the account's local working hours."""
            if rnd() < 0.88:
                local = 8 * HOUR_MS + int(10 * HOUR_MS * (rnd() + rnd()) * 0.5)
            else:
                local = int(DAY_MS * rnd())
            return (local - shift) % DAY_MS

        # ----- lifecycle: onboarding, cancelled, reactivation
        lower = day_start  # events of this day must lie at/after this
        out: list[tuple[Any, ...]] = []
        if d == c.onboard_day:
            c.active = True
            c.start_tod = tod()
            c.start_ts = lower = day_start + c.start_tod
            out.append((lower, ci, 3, "started", c.mrr, c.plan))
        elif not c.active:
            if (not c.reactivated and c.cancel_day >= 0 and d - c.cancel_day <= 90
                    and rnd() < _P_REACTIVATE):
                c.reactivated = True
                c.active = True
                c.react_ts = day_start + tod()
                c.mu = max(c.mu, 0.55 + 0.25 * rnd())
                c.h = c.ema = min(1.0, c.mu)
                c.declining = False
                if c.seats > _MIN_SEATS and rnd() < 0.5:
                    c.seats = max(_MIN_SEATS, c.seats - 1 - int(rnd() * c.seats * 0.3))
                c.mrr = c.paid_mrr = _mrr(c.plan, c.seats)
                c.anchor = d
                c.health.append(round(c.h * 1000))
                recs.append((c.react_ts, ci, 3, "reactivated", c.mrr, c.plan))
            return

        # ----- latent health
        if c.declining and d >= c.decline_start and c.mu > c.floor:
            c.mu = max(c.floor, c.mu - c.decline_rate)
        h = c.h + _THETA * (c.mu - c.h) + _SIGMA * gauss(0.0, 1.0)
        shock = ""
        if d > c.onboard_day and rnd() < _P_SHOCK:
            shock = _SHOCK_KINDS[int(rnd() * 3)]
            if shock == "champion_left":
                mag, perm = 0.2 + 0.2 * rnd(), 0.45
            elif shock == "outage":
                mag, perm = 0.15 + 0.2 * rnd(), 0.1
            else:
                mag, perm = 0.1 + 0.15 * rnd(), 0.3
            h -= mag
            c.mu = max(0.02, c.mu - perm * mag)
            c.shocks.append(date_iso)
        h = 0.0 if h < 0.0 else (1.0 if h > 1.0 else h)
        c.h = h
        c.ema += (h - c.ema) * _EMA_ALPHA
        c.health.append(round(h * 1000))

        # ----- subscriptions: renewal / upgrade / downgrade
        if d != c.onboard_day and (d - c.anchor) % c.term == 0:
            out.append((day_start + c.start_tod, ci, 3, "renewed", c.mrr, c.plan))
        wk = 0.25 if weekend else 1.0
        p_up = 0.005 * (h - 0.62) / 0.38 if h > 0.62 else 0.0
        p_down = 0.006 * (0.45 - h) / 0.45 if h < 0.45 else 0.0
        if shock == "price_increase":
            p_down += 0.25
        r = rnd()
        if r < p_up * wk:
            pi = PLANS.index(c.plan)
            if pi < len(PLANS) - 1 and rnd() < 0.35:
                c.plan = PLANS[pi + 1]
                c.seats = max(c.seats, _PLAN_SEATS[c.plan][0])
            else:
                c.seats = min(_MAX_SEATS, c.seats + 1 + int(rnd() * max(1, c.seats // 4)))
            new = _mrr(c.plan, c.seats)
            if new > c.mrr:
                c.mrr = c.paid_mrr = new
                out.append((day_start + tod(), ci, 3, "upgraded", new, c.plan))
        elif r < (p_up + p_down) * wk or (shock == "price_increase" and r < p_down):
            pi = PLANS.index(c.plan)
            if pi > 0 and rnd() < 0.3:
                c.plan = PLANS[pi - 1]
                c.seats = min(c.seats, _PLAN_SEATS[c.plan][1])
            else:
                c.seats = max(_MIN_SEATS, c.seats - 1 - int(rnd() * max(1, c.seats // 4)))
            new = _mrr(c.plan, c.seats)
            if new < c.mrr:
                c.mrr = c.paid_mrr = new
                out.append((day_start + tod(), ci, 3, "downgraded", new, c.plan))
        users = c.users
        while len(users) < c.seats:
            users.append(f"u{ci * 100 + len(users) + 1}")

        # ----- activity
        scale = self.config.activity_scale
        seats = c.seats
        share = (0.03 + 0.12 * h) if weekend else (0.06 + 0.8 * h)
        mean_k = seats * share
        k = int(mean_k + gauss(0.0, 1.0) * math.sqrt(mean_k * (1.0 - share)) + 0.5)
        k = 0 if k < 0 else (seats if k > seats else k)
        if k:
            avail = max(1, round(c.breadth * (0.25 + 0.75 * h)))
            feats = c.features
            lam_f = scale * (0.25 + 1.4 * h)
            exp_lam_f = math.exp(-lam_f)
            p_other = min(0.95, scale * (0.1 + 0.4 * h))
            p_rare = min(0.5, scale * 0.04)
            p_login = scale  # >= 1: every active user logs in
            pool = min(seats, k + 1 + k // 3)
            sess_len = 240 + 900 * h
            last = day_start + DAY_MS - 1  # follow-up actions of a late session stay on this day
            for u in rng.sample(users[:pool], k):
                t0 = day_start + tod()
                r = rnd()
                sessions = 1 if r < 0.62 else (2 if r < 0.9 else 3)
                if p_login >= 1.0 or rnd() < p_login:
                    dur = round(sessions * sess_len * -math.log(1.0 - rnd()), 1)
                    out.append((t0, ci, 0, "login", u, None, dur, sessions))
                # features used in the session (Poisson, Knuth)
                p = rnd()
                while p > exp_lam_f:
                    fi = int(avail * rnd() ** 1.7)
                    r = rnd()
                    cnt = 1 if r < 0.6 else 2 + int(-3.0 * math.log(1.0 - rnd()))
                    t = t0 + int(rnd() * 1_800_000)
                    out.append((t if t < last else last, ci, 0, "feature_used", u,
                                feats[fi], None, cnt))
                    p *= rnd()
                if rnd() < p_other:
                    r = rnd()
                    act = "message" if r < 0.45 else ("post" if r < 0.85 else "export")
                    r = rnd()
                    cnt = 1 if r < 0.55 else 2 + int(-2.0 * math.log(1.0 - rnd()))
                    t = t0 + int(rnd() * 3_600_000)
                    out.append((t if t < last else last, ci, 0, act, u, None, None, cnt))
                if rnd() < p_rare:
                    kk = int(rng.paretovariate(1.1))
                    t = t0 + int(rnd() * 3_600_000)
                    out.append((t if t < last else last, ci, 0,
                                f"action_{kk if kk < 1000 else 999}", u, None, None, 1))
        if c.has_api and (not weekend or rnd() < 0.5) and scale > 0:
            n_api = 1 + int(-math.log(1.0 - rnd()) * scale * 25 * h * seats / 10)
            out.append((day_start + tod(), ci, 0, "api_call", None, "api", None, n_api))

        # ----- tickets (whole lifecycle scheduled at open time into the pending heap)
        u_h = 1.0 - h
        lam_t = (0.015 + 0.22 * u_h * u_h) * (0.6 + seats / 25) * (0.3 if weekend else 1.0)
        if shock == "outage":
            lam_t += 1.2 + 0.05 * seats
        elif shock == "champion_left":
            lam_t += 0.3
        n_t = 0
        if d != c.onboard_day:  # nothing to complain about before the account exists
            p = rnd()
            el = math.exp(-lam_t)
            while p > el:
                n_t += 1
                p *= rnd()
        pending = c.pending
        for _ in range(n_t):
            c.tickets += 1
            tid = f"{c.cid}-t{c.tickets}"
            r = rnd()
            if r < 0.30 - 0.22 * u_h:
                prio = "low"
            elif r < 0.80 - 0.37 * u_h:
                prio = "normal"
            elif r < 0.95 - 0.17 * u_h:
                prio = "high"
            else:
                prio = "urgent"
            sent = -0.75 + 1.3 * h + 0.3 * gauss(0.0, 1.0)
            t = day_start + tod()
            evs: list[tuple[Any, ...]] = [(t, ci, 1, tid, "opened", prio, _clip1(sent))]
            if rnd() < 0.45:
                t += int(HOUR_MS * (0.3 + 20 * rnd()))
                evs.append((t, ci, 1, tid, "updated", prio, _clip1(sent + 0.15 * gauss(0.0, 1.0))))
            base_h = _PRIO_RESOLVE_H[prio] * (1.0 + u_h)
            t += int(HOUR_MS * (0.5 + base_h * -math.log(1.0 - rnd())))
            evs.append((t, ci, 1, tid, "resolved", prio,
                        _clip1(sent + 0.3 + 0.2 * gauss(0.0, 1.0)) if rnd() < 0.5 else None))
            if rnd() < 0.06 + 0.25 * u_h:
                t += int(HOUR_MS * (2 + 70 * rnd()))
                if prio != "urgent" and rnd() < 0.3:
                    prio = _PRIORITIES[_PRIORITIES.index(prio) + 1]
                evs.append((t, ci, 1, tid, "reopened", prio, _clip1(sent - 0.3 + 0.2 * gauss(0.0, 1.0))))
                t += int(HOUR_MS * (0.5 + base_h * -math.log(1.0 - rnd())))
                evs.append((t, ci, 1, tid, "resolved", prio, None))
            t_res = t
            if rnd() < 0.55:
                evs.append((t + int(DAY_MS * (1 + 6 * rnd())), ci, 1, tid, "closed", prio, None))
            if rnd() < 0.35:
                score = _clamp_int(1.5 + 3.5 * h + 0.8 * sent + 0.8 * gauss(0.0, 1.0), 1, 5)
                evs.append((t_res + int(HOUR_MS * (0.5 + 23.5 * rnd())), ci, 2, "csat", score,
                            _comment(rng, score, 1, 5) if rnd() < 0.2 else None))
            for e in evs:
                counter[0] += 1
                heapq.heappush(pending, (e[0], counter[0], e))

        # ----- surveys
        if rnd() < (0.005 if weekend else 1.0 / 40):
            score = _clamp_int(1.2 + 9.2 * h + 1.6 * gauss(0.0, 1.0), 0, 10)
            out.append((day_start + tod(), ci, 2, "nps", score,
                        _comment(rng, score, 0, 10) if rnd() < 0.25 else None))
        if rnd() < (0.002 if weekend else 1.0 / 120):
            score = _clamp_int(1.3 + 3.6 * h + 0.9 * gauss(0.0, 1.0), 1, 5)
            out.append((day_start + tod(), ci, 2, "csat", score,
                        _comment(rng, score, 1, 5) if rnd() < 0.2 else None))
        if rnd() < (0.001 if weekend else 1.0 / 300):
            score = _clamp_int(1.5 + 5.2 * h + gauss(0.0, 1.0), 1, 7)
            out.append((day_start + tod(), ci, 2, "ces", score,
                        _comment(rng, score, 1, 7) if rnd() < 0.15 else None))

        # ----- due lifecycle events (tickets, CSAT) of this day
        day_end = day_start + DAY_MS
        while pending and pending[0][0] < day_end:
            out.append(heapq.heappop(pending)[2])

        if d == c.onboard_day:
            # The account does not exist before its `started` event.
            recs.append(out[0])
            recs.extend(e for e in out[1:] if e[0] >= lower)
            return

        # ----- churn
        e = c.ema
        haz = (_HAZ_BASE + _HAZ_PEAK / (1.0 + math.exp((e - _HAZ_MID) / _HAZ_WIDTH))) * _HAZ_PLAN[c.plan]
        if weekend:
            haz *= 0.3
        if not c.reactivated and rnd() < haz:
            t_c = day_start + tod()
            c.active = False
            c.cancel_day = d
            c.cancel_ts = t_c
            c.pending = []
            c.mrr = 0.0
            recs.extend(x for x in out if x[0] < t_c)
            recs.append((t_c, ci, 3, "cancelled", 0.0, c.plan))
            return
        recs.extend(out)


_TIME_TABLES: tuple[list[str], list[str]] | None = None


def _time_tables() -> tuple[list[str], list[str]]:
    """Lookup tables for fast timestamp formatting (built once, ~60k short strings)."""
    global _TIME_TABLES
    if _TIME_TABLES is None:
        hm = [f"{m // 60:02d}:{m % 60:02d}:" for m in range(1440)]
        ss = [f"{x // 1000:02d}.{x % 1000:03d}+00:00" for x in range(MINUTE_MS)]
        _TIME_TABLES = (hm, ss)
    return _TIME_TABLES


def _clip1(x: float) -> float:
    return round(-1.0 if x < -1.0 else (1.0 if x > 1.0 else x), 3)


def _clamp_int(x: float, lo: int, hi: int) -> int:
    v = int(round(x))
    return lo if v < lo else (hi if v > hi else v)


def _comment(rng: random.Random, score: int, lo: int, hi: int) -> str:
    frac = (score - lo) / (hi - lo)
    pool = _COMMENTS_GOOD if frac >= 0.8 else (_COMMENTS_MID if frac >= 0.5 else _COMMENTS_BAD)
    return pool[int(rng.random() * len(pool))]


# --------------------------------------------------------------------- output
def _open_text_out(path: Path) -> io.TextIOBase:
    if path.name.endswith(".gz"):
        raw = open(path, "wb")
        # mtime=0 and no file name in the header: byte-identical output for identical input.
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        return _GzipText(gz, raw)
    return open(path, "w", encoding="utf-8", newline="\n")


class _GzipText(io.TextIOWrapper):
    """Text wrapper over a GzipFile that also closes the underlying raw file."""

    def __init__(self, gz: gzip.GzipFile, raw: Any) -> None:
        super().__init__(gz, encoding="utf-8", newline="\n")  # type: ignore[arg-type]
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def write_jsonl(path: str | Path, events: Iterable[SimEvent]) -> int:
    """Write events as JSON Lines (the contract event plus ``"topic"``); gzip if ``.gz``.

    Returns the number of lines written.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "ev.jsonl.gz")
    >>> write_jsonl(p, Simulator(SimConfig(customers=2, days=1)).events()) > 0
    True
    """
    p = Path(path)
    n = 0
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with _open_text_out(p) as f:
        buf: list[str] = []
        for e in events:
            row = dict(e.event)
            row["topic"] = e.topic
            buf.append(dumps(row))
            n += 1
            if len(buf) >= 4096:
                f.write("\n".join(buf))
                f.write("\n")
                buf.clear()
        if buf:
            f.write("\n".join(buf))
            f.write("\n")
    return n


def write_truth(path: str | Path, truth: list[CustomerTruth]) -> None:
    """Write the ground truth as JSON Lines, one customer per line (gzip if ``.gz``).

    >>> import tempfile, os
    >>> sim = Simulator(SimConfig(customers=2, days=1)); _ = list(sim.events())
    >>> p = os.path.join(tempfile.mkdtemp(), "truth.jsonl"); write_truth(p, sim.truth())
    >>> len(open(p).read().splitlines())
    2
    """
    with _open_text_out(Path(path)) as f:
        for t in truth:
            f.write(json.dumps(asdict(t), ensure_ascii=False, separators=(",", ":")))
            f.write("\n")


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m stream_app.tools.simulator.engine --customers 2000 --days 180 --out ev.jsonl.gz``."""
    ap = argparse.ArgumentParser(description="Generate a synthetic SaaS event stream (JSON Lines).")
    ap.add_argument("--customers", type=int, default=SimConfig.customers)
    ap.add_argument("--days", type=int, default=SimConfig.days)
    ap.add_argument("--start", default=SimConfig.start.date().isoformat(), help="UTC date, YYYY-MM-DD")
    ap.add_argument("--seed", type=int, default=SimConfig.seed)
    ap.add_argument("--activity-scale", type=float, default=1.0)
    ap.add_argument("--out", default=None, help="events file (.jsonl or .jsonl.gz); omit to only count")
    ap.add_argument("--truth", default=None, help="ground-truth file (.jsonl)")
    a = ap.parse_args(argv)
    start = datetime.fromisoformat(a.start)
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    sim = Simulator(SimConfig(a.customers, a.days, start, a.seed, a.activity_scale))
    t0 = time.perf_counter()
    if a.out:
        n = write_jsonl(a.out, sim.events())
    else:
        n = sum(1 for _ in sim.events())
    dt = time.perf_counter() - t0
    truth = sim.truth()
    if a.truth:
        write_truth(a.truth, truth)
    churned = sum(1 for t in truth if t.cancelled_ts)
    print(f"{n} events in {dt:.2f} s ({n / max(dt, 1e-9):,.0f}/s); "
          f"{churned}/{len(truth)} customers cancelled", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
