"""A customer's contribution to one period's portfolio figures (pure, no I/O).

The portfolio KPIs are ratios of sums over customers. Each customer contributes one small
record per period: *event facts* (active at the period's start and end, MRR then, upgrades,
downgrades, survey answers, active days, all by event time) and *score facts* (health,
band, risk, lifecycle stage, segment: the latest scoring in the period). The record's
``values`` are what the portfolio sums (``FIELDS``), split by *groups*: ``*`` (everyone),
the customer's segment, and its sign-up cohort (cohort groups sum only ``su`` and ``a1``).

Exactly once by construction: the portfolio keeps each customer's last record and the sums,
and replaces a record with the delta applied to the sums (``lua/portfolio_apply.lua``). A
record is a function of the customer's state, so a redelivered or re-sent event (which
does not change the state) changes nothing, and a late event replaces the record with the
corrected one.

Event facts are computed from the customer's day buckets (``facts_from_state``), which are
exact for every day still inside the longest window (90 days): always the current and the
previous month. A quarter's facts combine its months' (``combine``). A customer with no
events in a period has the previous period's record carried over (``carry``): active at the
start if it was at the end, same MRR, nothing counted.

Status at an instant ``T`` is "after every subscription event with ``ts < T``": active
unless the latest such event is a cancellation.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from stream_app.core import RawCustomerState
from stream_app.portfolio.periods import DAY_MS, Period, month_of
from stream_app.state import layout

#: the main hash's day buckets read here: surveys, billing, MRR change points
_BUCKETS = layout.SURVEY_DAY + layout.BILLING_DAY + layout.MRR_POINT_DAY

#: What one record contributes to the sums (names of the sums hash fields, after ``<group>:``).
FIELDS: tuple[str, ...] = (
    "a0",   # active at period start
    "a1",   # active at period end (now, for the current period)
    "new",  # not active at start, active at end (new or reactivated)
    "lost",  # active at start, not at end (logo churn)
    "su",   # signed up (first `started`) in this period
    "m0",   # MRR at start (cents), customers active at start
    "m1",   # MRR at end (cents), customers active at end
    "nm",   # new MRR: m1 of `new`
    "rm",   # retained-base MRR at end: m1 of customers active at start (NRR numerator)
    "gm",   # min(m0, m1) of customers active at start (GRR numerator)
    "xm",   # expansion MRR: max(0, m1 - m0) of customers active at start
    "cm",   # contraction MRR: max(0, m0 - m1) of customers active at start and end
    "lm",   # churned MRR: m0 of `lost`
    "xc",   # expanded customers: active at start with >= 1 upgrade in the period
    "up",   # upgrade events
    "dn",   # downgrade events
    "nps",  # NPS answers
    "pro",  # promoters (9-10)
    "det",  # detractors (0-6)
    "csat",  # CSAT answers
    "sat",  # satisfied CSAT answers (4-5)
    "eng",  # active at end with >= 1 active day in the period
    "rep",  # active at end with >= repeat_min_days (per month) active days
    "ad",   # active days of customers active at end
    "sc",   # active at end and scored
    "hs",   # health x 10 of `sc`
    "g", "y", "r",  # band of `sc`
    "risk",  # active at end and at risk (red band or churn probability >= threshold)
    "mar",  # MRR at risk: m1 of `risk`
    "s_onboarding", "s_adopting", "s_established", "s_loyal", "s_at_risk", "s_churned",
)
FIELD_INDEX = {f: i for i, f in enumerate(FIELDS)}
#: Fields a cohort group sums: sign-ups (the cohort's size in its own month) and actives.
COHORT_FIELDS = ("su", "a1")
#: Cohort cells kept per sign-up month (retention after 1..12 months).
COHORT_MONTHS = 12
_BANDS = {"green": "g", "yellow": "y", "red": "r"}


class EventFacts(NamedTuple):
    """What the events say about one customer in one period (MRR in cents)."""

    a0: bool = False
    a1: bool = False
    m0: int = 0
    m1: int = 0
    started: int = 0
    up: int = 0
    dn: int = 0
    nps: int = 0
    pro: int = 0
    det: int = 0
    csat: int = 0
    sat: int = 0
    ad: int = 0

    def empty(self) -> bool:
        return not (self.a0 or self.a1 or self.started or self.up or self.dn or self.nps or self.csat or self.ad)

    def encode(self) -> str:
        return ",".join(map(str, map(int, self)))

    @classmethod
    def decode(cls, text: str) -> EventFacts:
        v = [int(x) for x in text.split(",")]
        return cls(bool(v[0]), bool(v[1]), *v[2:13])


class ScoreFacts(NamedTuple):
    """The latest scoring of the customer in the period."""

    health10: int | None = None
    band: str | None = None
    risky: bool = False
    stage: str | None = None
    segment: str | None = None

    def encode(self) -> str:
        return ",".join((
            "" if self.health10 is None else str(self.health10), self.band or "",
            "1" if self.risky else "0", self.stage or "", self.segment or ""))

    @classmethod
    def decode(cls, text: str) -> ScoreFacts:
        h, band, risky, stage, seg = text.split(",")
        return cls(int(h) if h else None, band or None, risky == "1", stage or None, seg or None)


@dataclass(frozen=True)
class Contribution:
    """One customer's record in one period."""

    period: Period
    facts: EventFacts
    score: ScoreFacts = ScoreFacts()
    signup: int | None = None  # month index of the first `started`

    def empty(self) -> bool:
        return self.facts.empty()

    def values(self, repeat_min_days: int = 4) -> tuple[int, ...]:
        """The record's contribution to each of ``FIELDS``."""
        f, s = self.facts, self.score
        a0, a1 = f.a0, f.a1
        m0 = f.m0 if a0 else 0
        m1 = f.m1 if a1 else 0
        new, lost = (not a0) and a1, a0 and not a1
        su = self.signup is not None and self.period.contains_month(self.signup)
        scored = a1 and s.health10 is not None
        risk = a1 and s.risky
        out = [
            int(a0), int(a1), int(new), int(lost), int(su),
            m0, m1, m1 if new else 0, m1 if a0 else 0, min(m0, m1) if a0 else 0,
            max(0, m1 - m0) if a0 else 0, max(0, m0 - m1) if a0 and a1 else 0, m0 if lost else 0,
            int(a0 and f.up > 0), f.up, f.dn,
            f.nps, f.pro, f.det, f.csat, f.sat,
            int(a1 and f.ad > 0), int(a1 and f.ad >= repeat_min_days * self.period.months), f.ad if a1 else 0,
            int(scored), (s.health10 or 0) if scored else 0,
            int(scored and s.band == "green"), int(scored and s.band == "yellow"), int(scored and s.band == "red"),
            int(risk), m1 if risk else 0,
        ]
        out += [int(s.stage == st) for st in ("onboarding", "adopting", "established", "loyal", "at_risk", "churned")]
        return tuple(out)

    def groups(self) -> list[str]:
        """Groups the record counts in: everyone, its segment, its cohort (cohort fields only)."""
        out = ["*"]
        if self.score.segment:
            out.append(self.score.segment)
        if self.period.kind == "month" and self.signup is not None and 0 <= self.period.index - self.signup <= COHORT_MONTHS:
            out.append(f"c{cohort_label(self.signup)}:{'.'.join(COHORT_FIELDS)}")
        return out

    def tail(self) -> str:
        """``facts|score,signup``: what the record is a function of (with the period and the
        config), so two records with the same tail encode the same."""
        signup = "" if self.signup is None else str(self.signup)
        return f"{self.facts.encode()}|{self.score.encode()},{signup}"

    def encode(self, repeat_min_days: int = 4, tail: str | None = None) -> str:
        """``groups|values|facts|score,signup``; '' for an empty record (the Lua script deletes it)."""
        if self.empty():
            return ""
        vals = list(self.values(repeat_min_days))
        while vals and vals[-1] == 0:  # trailing zeros cost bytes and carry nothing
            vals.pop()
        return f"{';'.join(self.groups())}|{','.join(map(str, vals))}|{tail or self.tail()}"

    @classmethod
    def decode(cls, period: Period, text: str) -> Contribution:
        _, _, facts, score = text.split("|")
        *score_parts, signup = score.split(",")
        return cls(period, EventFacts.decode(facts), ScoreFacts.decode(",".join(score_parts)),
                   int(signup) if signup else None)


def cohort_label(month_index: int) -> str:
    return f"{1970 + month_index // 12:04d}-{month_index % 12 + 1:02d}"


def decode_values(text: str) -> dict[str, dict[str, int]]:
    """Group -> field -> value of an encoded record (what the Lua script adds to the sums)."""
    if not text:
        return {}
    groups, vals = text.split("|")[:2]
    values = [int(x) for x in vals.split(",")] if vals else []
    values += [0] * (len(FIELDS) - len(values))
    out: dict[str, dict[str, int]] = {}
    for g in groups.split(";"):
        name, _, subset = g.partition(":")
        names = subset.split(".") if subset else FIELDS
        out[name] = {f: values[FIELD_INDEX[f]] for f in names}
    return out


# --- from the customer's state ----------------------------------------------------------------


def _vec(raw: str, n: int) -> list[int]:
    v = [int(x) for x in raw.split(",")] if raw else []
    return v + [0] * (n - len(v))


@dataclass
class _Timeline:
    """The subscription history the customer's state still holds."""

    st: str | None
    sts: int | None
    mrr: int
    start: int | None
    cts: int | None
    sub_days: list[int]  # days with subscription events (sorted)
    sub: dict[int, list[int]]  # day -> started, renewed, upgraded, downgraded, cancelled, reactivated
    mdays: list[int]  # days with an MRR change point (sorted)
    mpts: dict[int, tuple[int, int]]  # day -> (ts, cents) of the day's latest subscription event
    mact: dict[int, bool] = field(default_factory=dict)  # day -> active after that day (points that say so)

    def active_at(self, t_ms: int) -> bool:
        """Active after every subscription event with ``ts < t_ms`` (``t_ms`` a day boundary)."""
        if self.sts is not None and self.sts < t_ms:
            return self.st != "cancelled"
        day = t_ms // DAY_MS
        # the newest MRR point before t says whether the day's last event left the customer
        # active (kept also before the window: a reactivation long ago still counts)
        j = bisect_left(self.mdays, day) - 1
        if j >= 0 and self.mdays[j] in self.mact:
            return self.mact[self.mdays[j]]
        i = bisect_left(self.sub_days, day) - 1
        if i >= 0:
            d = self.sub_days[i]
            v = self.sub[d]
            cancels, others = v[4], v[0] + v[1] + v[2] + v[3] + v[5]
            if not cancels:
                return True
            if not others:
                return False
            # both on one day: the day's latest event decides; known exactly when it is the
            # last cancellation of all (cts); otherwise assume the cancellation came last
            if self.cts is not None and self.cts // DAY_MS == d and d in self.mpts:
                return self.mpts[d][0] != self.cts
            return False
        # no subscription event left in the buckets before t: fall back on the scalars
        if self.start is None or self.start >= t_ms:
            return False
        return self.cts is None or self.cts >= t_ms

    def mrr_at(self, t_ms: int) -> int:
        """MRR (cents) after every subscription event with ``ts < t_ms``."""
        if self.sts is not None and self.sts < t_ms:
            return self.mrr
        i = bisect_left(self.mdays, t_ms // DAY_MS) - 1
        return self.mpts[self.mdays[i]][1] if i >= 0 else 0


def _scan(raw: RawCustomerState) -> tuple[_Timeline, list[tuple[int, str]]]:
    """One pass over the customer's main hash: the subscription timeline and the survey
    buckets (day, unparsed value)."""
    main = raw.main
    sub: dict[int, list[int]] = {}
    mpts: dict[int, tuple[int, int]] = {}
    mact: dict[int, bool] = {}
    surveys: list[tuple[int, str]] = []
    for f, val in main.items():
        k = f[:1]
        if k and k in _BUCKETS and f[1:].isdigit():
            d = int(f[1:])
            if k == layout.SURVEY_DAY:
                surveys.append((d, val))
            elif k == layout.BILLING_DAY:
                sub[d] = _vec(val, 6)
            else:
                ts, cents, *flag = val.split(",")  # "ts,cents[,active]" (older points: no flag)
                mpts[d] = (int(ts), int(cents))
                if flag:
                    mact[d] = flag[0] == "1"

    def opt(key: str) -> int | None:
        v = main.get(key)
        return int(v) if v is not None else None

    tl = _Timeline(
        st=main.get(layout.STATUS), sts=opt(layout.STATUS_SINCE), mrr=opt(layout.MRR) or 0, start=opt(layout.STARTED),
        cts=opt(layout.CANCELLED_AT),
        sub_days=sorted(sub), sub=sub, mdays=sorted(mpts), mpts=mpts, mact=mact,
    )
    return tl, surveys


def timeline_of(raw: RawCustomerState) -> _Timeline:
    return _scan(raw)[0]


def signup_month(raw: RawCustomerState) -> int | None:
    """Month of the customer's first `started` event (its cohort), if any."""
    start = raw.main.get(layout.STARTED)
    return month_of(int(start)) if start is not None else None


def facts_from_state(raw: RawCustomerState, periods: Iterable[Period]) -> dict[Period, EventFacts]:
    """Event facts of each period, from the state's buckets (one pass over the state).

    Exact for periods whose days are all still in the buckets (the longest window).
    """
    periods = list(periods)
    if not periods:
        return {}
    tl, survey_buckets = _scan(raw)
    lo_all = min(p.start_day for p in periods)
    hi_all = max(p.end_day for p in periods)
    surveys = [(d, _vec(v, 10)) for d, v in survey_buckets if lo_all <= d < hi_all]
    # a day is active when any action count (after the duration) is non-zero
    active_days = sorted([d for ds, v in raw.days.items()
                          if lo_all <= (d := int(ds)) < hi_all and v.partition(",")[2].strip("0,")])
    out: dict[Period, EventFacts] = {}
    for p in periods:
        lo, hi = p.start_day, p.end_day
        nps = pro = det = csat = sat = 0
        for d, v in surveys:
            if lo <= d < hi:
                nps += v[0]
                pro += v[2]
                det += v[4]
                csat += v[5]
                sat += v[7]
        started = up = dn = 0
        for d in tl.sub_days[bisect_left(tl.sub_days, lo):bisect_left(tl.sub_days, hi)]:
            v = tl.sub[d]
            started += v[0]
            up += v[2]
            dn += v[3]
        ad = bisect_left(active_days, hi) - bisect_left(active_days, lo)
        out[p] = EventFacts(
            a0=tl.active_at(p.start_ms), a1=tl.active_at(p.end_ms), m0=tl.mrr_at(p.start_ms), m1=tl.mrr_at(p.end_ms),
            started=started, up=up, dn=dn, nps=nps, pro=pro, det=det, csat=csat, sat=sat, ad=ad,
        )
    return out


# --- derived periods ---------------------------------------------------------------------------


def combine(period: Period, months: Mapping[int, Contribution], latest_month: int) -> Contribution:
    """A quarter's record from its months' records (month index -> record; missing = empty).

    Start state from the quarter's first month, end state from ``latest_month`` (the last
    month the customer's records reach, at most the quarter's last), counts summed, score
    from the latest month that has a record.
    """
    idx = [m for m in period.month_indices if m <= latest_month]
    first = months.get(idx[0]) if idx else None
    last = months.get(idx[-1]) if idx else None
    present = [months[m] for m in idx if m in months]
    if not present:
        return Contribution(period, EventFacts())
    facts = EventFacts(
        a0=first.facts.a0 if first else False, m0=first.facts.m0 if first else 0,
        a1=last.facts.a1 if last else False, m1=last.facts.m1 if last else 0,
        started=sum(c.facts.started for c in present), up=sum(c.facts.up for c in present),
        dn=sum(c.facts.dn for c in present), nps=sum(c.facts.nps for c in present),
        pro=sum(c.facts.pro for c in present), det=sum(c.facts.det for c in present),
        csat=sum(c.facts.csat for c in present), sat=sum(c.facts.sat for c in present),
        ad=sum(c.facts.ad for c in present),
    )
    signup = next((c.signup for c in present if c.signup is not None), None)
    return Contribution(period, facts, present[-1].score, signup)


def carry(prev: Contribution, period: Period) -> Contribution:
    """The record of a customer with no events in ``period``, from its previous period's."""
    f = prev.facts
    facts = EventFacts(a0=f.a1, a1=f.a1, m0=f.m1, m1=f.m1)
    return replace(prev, period=period, facts=facts)
