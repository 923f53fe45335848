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

import heapq
import math
import random
from datetime import timedelta, timezone
from operator import itemgetter
from typing import Any, Iterator

from stream_app.core import DAY_MS, HOUR_MS, MINUTE_MS
from stream_app.tools.simulator.world import (
    CORE,
    EMA_ALPHA,
    FEATURES,
    HAZ_BASE,
    HAZ_MID,
    HAZ_PEAK,
    HAZ_PLAN,
    HAZ_WIDTH,
    INITIAL_COHORT,
    MAX_SEATS,
    MIN_SEATS,
    P_DECLINING,
    P_REACTIVATE,
    P_SHOCK,
    PLAN_SEATS,
    PLANS,
    PRIO_RESOLVE_H,
    PRIORITIES,
    SHIFT_W,
    SHIFTS,
    SHOCK_KINDS,
    SIGMA,
    THETA,
    TOPICS,
    Account,
    CustomerTruth,
    SimConfig,
    SimEvent,
    clamp_int,
    clip1,
    comment_for,
    iso_ms,
    mrr_of,
    time_tables,
)


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
    def _make_customers(self) -> list[Account]:
        cfg = self.config
        rng = random.Random(f"churn-stream/customers/{cfg.seed}")
        width = max(5, len(str(cfg.customers - 1)))
        out: list[Account] = []
        for i in range(cfg.customers):
            c = Account()
            c.idx = i
            c.cid = f"c{i:0{width}d}"
            if cfg.days == 1 or rng.random() < INITIAL_COHORT:
                c.onboard_day = 0
            else:
                c.onboard_day = rng.randint(1, cfg.days - 1)
            c.shift_ms = int(rng.choices(SHIFTS, SHIFT_W)[0] * HOUR_MS)
            r = rng.random()
            c.plan = "starter" if r < 0.5 else ("growth" if r < 0.86 else "enterprise")
            lo, hi = PLAN_SEATS[c.plan]
            c.seats = rng.randint(lo, hi)
            c.mrr = c.paid_mrr = mrr_of(c.plan, c.seats)
            mu = 0.33 + 0.6 * rng.betavariate(3.0, 1.8) + (0.03 if c.plan == "enterprise" else 0.0)
            c.mu = min(0.97, mu)
            c.h = min(1.0, max(0.0, c.mu + rng.gauss(0.0, 0.06)))
            c.ema = c.h
            c.declining = rng.random() < P_DECLINING
            c.decline_start = rng.randint(0, max(0, cfg.days - 1))
            c.decline_rate = rng.uniform(0.003, 0.012)
            c.floor = rng.uniform(0.05, 0.25)
            b = 2 + round(13 * min(1.0, max(0.0, c.mu + rng.gauss(0.0, 0.12))))
            c.breadth = max(2, min(len(FEATURES), b))
            core = list(FEATURES[:CORE])
            rest = list(FEATURES[CORE:])
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
        hm_tail, ss_tab = time_tables()
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
    def _truth_of(c: Account) -> CustomerTruth:
        return CustomerTruth(
            customer_id=c.cid,
            start_ts=iso_ms(c.start_ts),
            cancelled_ts=iso_ms(c.cancel_ts) if c.cancel_ts >= 0 else None,
            plan=c.plan,
            final_mrr=c.paid_mrr,
            latent_health_daily=[v / 1000 for v in c.health],
            shocks=list(c.shocks),
            reactivated_ts=iso_ms(c.react_ts) if c.reactivated else None,
        )

    # ------------------------------------------------------- one customer-day
    def _customer_day(
        self,
        c: Account,
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
                    and rnd() < P_REACTIVATE):
                c.reactivated = True
                c.active = True
                c.react_ts = day_start + tod()
                c.mu = max(c.mu, 0.55 + 0.25 * rnd())
                c.h = c.ema = min(1.0, c.mu)
                c.declining = False
                if c.seats > MIN_SEATS and rnd() < 0.5:
                    c.seats = max(MIN_SEATS, c.seats - 1 - int(rnd() * c.seats * 0.3))
                c.mrr = c.paid_mrr = mrr_of(c.plan, c.seats)
                c.anchor = d
                c.health.append(round(c.h * 1000))
                recs.append((c.react_ts, ci, 3, "reactivated", c.mrr, c.plan))
            return

        # ----- latent health
        if c.declining and d >= c.decline_start and c.mu > c.floor:
            c.mu = max(c.floor, c.mu - c.decline_rate)
        h = c.h + THETA * (c.mu - c.h) + SIGMA * gauss(0.0, 1.0)
        shock = ""
        if d > c.onboard_day and rnd() < P_SHOCK:
            shock = SHOCK_KINDS[int(rnd() * 3)]
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
        c.ema += (h - c.ema) * EMA_ALPHA
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
                c.seats = max(c.seats, PLAN_SEATS[c.plan][0])
            else:
                c.seats = min(MAX_SEATS, c.seats + 1 + int(rnd() * max(1, c.seats // 4)))
            new = mrr_of(c.plan, c.seats)
            if new > c.mrr:
                c.mrr = c.paid_mrr = new
                out.append((day_start + tod(), ci, 3, "upgraded", new, c.plan))
        elif r < (p_up + p_down) * wk or (shock == "price_increase" and r < p_down):
            pi = PLANS.index(c.plan)
            if pi > 0 and rnd() < 0.3:
                c.plan = PLANS[pi - 1]
                c.seats = min(c.seats, PLAN_SEATS[c.plan][1])
            else:
                c.seats = max(MIN_SEATS, c.seats - 1 - int(rnd() * max(1, c.seats // 4)))
            new = mrr_of(c.plan, c.seats)
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
            evs: list[tuple[Any, ...]] = [(t, ci, 1, tid, "opened", prio, clip1(sent))]
            if rnd() < 0.45:
                t += int(HOUR_MS * (0.3 + 20 * rnd()))
                evs.append((t, ci, 1, tid, "updated", prio, clip1(sent + 0.15 * gauss(0.0, 1.0))))
            base_h = PRIO_RESOLVE_H[prio] * (1.0 + u_h)
            t += int(HOUR_MS * (0.5 + base_h * -math.log(1.0 - rnd())))
            evs.append((t, ci, 1, tid, "resolved", prio,
                        clip1(sent + 0.3 + 0.2 * gauss(0.0, 1.0)) if rnd() < 0.5 else None))
            if rnd() < 0.06 + 0.25 * u_h:
                t += int(HOUR_MS * (2 + 70 * rnd()))
                if prio != "urgent" and rnd() < 0.3:
                    prio = PRIORITIES[PRIORITIES.index(prio) + 1]
                evs.append((t, ci, 1, tid, "reopened", prio, clip1(sent - 0.3 + 0.2 * gauss(0.0, 1.0))))
                t += int(HOUR_MS * (0.5 + base_h * -math.log(1.0 - rnd())))
                evs.append((t, ci, 1, tid, "resolved", prio, None))
            t_res = t
            if rnd() < 0.55:
                evs.append((t + int(DAY_MS * (1 + 6 * rnd())), ci, 1, tid, "closed", prio, None))
            if rnd() < 0.35:
                score = clamp_int(1.5 + 3.5 * h + 0.8 * sent + 0.8 * gauss(0.0, 1.0), 1, 5)
                evs.append((t_res + int(HOUR_MS * (0.5 + 23.5 * rnd())), ci, 2, "csat", score,
                            comment_for(rng, score, 1, 5) if rnd() < 0.2 else None))
            for e in evs:
                counter[0] += 1
                heapq.heappush(pending, (e[0], counter[0], e))

        # ----- surveys
        if rnd() < (0.005 if weekend else 1.0 / 40):
            score = clamp_int(1.2 + 9.2 * h + 1.6 * gauss(0.0, 1.0), 0, 10)
            out.append((day_start + tod(), ci, 2, "nps", score,
                        comment_for(rng, score, 0, 10) if rnd() < 0.25 else None))
        if rnd() < (0.002 if weekend else 1.0 / 120):
            score = clamp_int(1.3 + 3.6 * h + 0.9 * gauss(0.0, 1.0), 1, 5)
            out.append((day_start + tod(), ci, 2, "csat", score,
                        comment_for(rng, score, 1, 5) if rnd() < 0.2 else None))
        if rnd() < (0.001 if weekend else 1.0 / 300):
            score = clamp_int(1.5 + 5.2 * h + gauss(0.0, 1.0), 1, 7)
            out.append((day_start + tod(), ci, 2, "ces", score,
                        comment_for(rng, score, 1, 7) if rnd() < 0.15 else None))

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
        haz = (HAZ_BASE + HAZ_PEAK / (1.0 + math.exp((e - HAZ_MID) / HAZ_WIDTH))) * HAZ_PLAN[c.plan]
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
