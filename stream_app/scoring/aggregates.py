"""Rolling per-customer aggregates, computed from the raw Redis state (pure, no I/O).

Windows are event-time and day-aligned (UTC days): the ``W``-day window at time ``now``
holds the days ``day(now) - W + 1 .. day(now)``. They slide as event time moves, and a
late event counts in every window that still covers its day.

>>> raw = RawCustomerState("acme", main={"lts": "172800000", "fs": "0", "n": "3",
...     "na": "1", "a0": "login"}, days={"0": "60,0,2", "2": "0,0,1"}, seen={"uab": "2"})
>>> agg = compute_aggregates(raw, now_ms=172800000, windows_days=[1, 7])
>>> agg.windows["1d"].activity_events, agg.windows["7d"].activity_events
(1, 3)
>>> agg.windows["7d"].actions, agg.windows["7d"].active_days, agg.windows["1d"].active_users
({'login': 3}, 2, 1)
"""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

from stream_app.core import DAY_MS, RawCustomerState
from stream_app.scoring.windows import BUCKET_KINDS, mrr_at, parse_vec, window_cache
from stream_app.state import layout


def day_of(ts_ms: int) -> int:
    """UTC day number of an epoch-ms timestamp.

    >>> day_of(0), day_of(86_399_999), day_of(86_400_000), day_of(-1)
    (0, 0, 1, -1)
    """
    return ts_ms // DAY_MS


def window_days(now_ms: int, window: int) -> range:
    """The day numbers inside the ``window``-day window ending at ``now_ms``.

    >>> list(window_days(3 * DAY_MS + 5, 2))
    [2, 3]
    """
    today = day_of(now_ms)
    return range(today - window + 1, today + 1)


def _ms_to_dt(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if ms is not None else None


class WindowAggregates(BaseModel):
    """Aggregates over one event-time window."""

    days: int
    activity_events: int = 0
    activity_duration_s: int = 0
    actions: dict[str, int] = Field(default_factory=dict, description="top-N actions by name, the rest as 'other'")
    active_users: int = 0
    features_used: int = 0
    active_days: int = 0
    tickets_opened: int = 0
    tickets_resolved: int = 0
    tickets_reopened: int = 0
    ticket_load: int = Field(0, description="priority-weighted tickets opened")
    mean_time_to_resolve_h: float | None = None
    sentiment_mean: float | None = None
    nps_responses: int = 0
    nps_mean: float | None = None
    nps_promoters: int = 0
    nps_passives: int = 0
    nps_detractors: int = 0
    nps: float | None = Field(None, description="%promoters - %detractors, -100..100")
    csat_responses: int = 0
    csat_mean: float | None = None
    csat_satisfied: int = 0
    csat: float | None = Field(None, description="satisfied (4-5) / responses, 0..1")
    ces_responses: int = 0
    ces_mean: float | None = None
    renewals: int = 0
    upgrades: int = 0
    downgrades: int = 0
    cancellations: int = 0
    plan_changes: int = 0


class CustomerAggregates(BaseModel):
    """A customer's current aggregates (what ``stream-app customer ID --json`` prints)."""

    customer_id: str
    as_of: datetime | None
    first_seen: datetime | None
    last_event: datetime | None
    last_activity: datetime | None
    days_since_last_activity: float | None
    events_applied: int
    duplicates_ignored: int
    subscription_status: str | None
    plan: str | None
    mrr: float | None
    mrr_change: float | None = Field(None, description="MRR now minus MRR at the start of the longest window")
    mrr_change_window_days: int
    tenure_days: float | None
    cancelled_at: datetime | None
    open_tickets: int
    open_ticket_load: int
    last_nps: int | None
    last_nps_at: datetime | None
    windows: dict[str, WindowAggregates]


#: the main hash's day buckets summed per window
_BUCKETS = BUCKET_KINDS


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


class _Parsed:
    """A customer's buckets parsed once (the full recomputation's input)."""

    __slots__ = ("slot_names", "activity", "seen", "tickets", "surveys", "billing")

    def __init__(self, raw: RawCustomerState) -> None:
        main = raw.main
        n_slots = int(main.get(layout.ACTION_SLOTS, "0"))
        self.slot_names = [main.get(layout.slot_name_field(i), f"slot{i}") for i in range(n_slots)]
        self.activity = [(int(d), parse_vec(v, 2 + n_slots)) for d, v in raw.days.items()]
        self.seen = [(layout.is_user(m), int(d)) for m, d in raw.seen.items()]
        self.tickets: list[tuple[int, list[int]]] = []
        self.surveys: list[tuple[int, list[int]]] = []
        self.billing: list[tuple[int, list[int]]] = []
        for f, val in main.items():
            bucket = layout.day_bucket(f, _BUCKETS)
            if bucket is not None:
                kind, day = bucket
                if kind == layout.TICKET_DAY:
                    self.tickets.append((day, parse_vec(val, 8)))
                elif kind == layout.SURVEY_DAY:
                    self.surveys.append((day, parse_vec(val, 10)))
                else:
                    self.billing.append((day, parse_vec(val, 6)))


def compute_window(raw: RawCustomerState | _Parsed, now_ms: int, window: int) -> WindowAggregates:
    """Sum the day buckets that fall inside one window."""
    return compute_windows_full(raw, now_ms, [window])[window]


def _add(acc: list[int], v: list[int]) -> None:
    for i in range(len(acc)):
        acc[i] += v[i]


def compute_windows_full(raw: RawCustomerState | _Parsed, now_ms: int,
                         windows: list[int]) -> dict[int, WindowAggregates]:
    """Every window's sums in one pass over the buckets, parsed afresh: the reference that
    the incremental sums (``scoring.windows``, what ``compute_aggregates`` uses) must equal.

    Windows nest (each holds the last ``w`` days), so each bucket is added once, to the
    band of the smallest window holding it, and the bands are then accumulated outwards.

    >>> raw = RawCustomerState("c", main={"na": "0"}, days={"9": "5,1", "5": "7,2", "0": "1,4"})
    >>> [(w, a.activity_events, a.active_days) for w, a in compute_windows_full(raw, 9 * DAY_MS, [1, 7, 30]).items()]
    [(1, 1, 1), (7, 3, 2), (30, 7, 3)]
    """
    p = raw if isinstance(raw, _Parsed) else _Parsed(raw)
    today = now_ms // DAY_MS
    order = sorted(set(windows))
    nb = len(order)
    n_slots = len(p.slot_names)

    def band(d: int) -> int:
        """Index of the smallest window holding day ``d`` (-1: none, or after today)."""
        age = today - d
        if age < 0:
            return -1
        for j, w in enumerate(order):
            if age < w:
                return j
        return -1

    act = [[0] * (2 + n_slots) for _ in range(nb)]
    active_days = [0] * nb
    for d, v in p.activity:
        j = band(d)
        if j >= 0:
            _add(act[j], v)
            if any(v[1:]):
                active_days[j] += 1
    users, features = [0] * nb, [0] * nb
    for is_user, d in p.seen:
        j = 0 if d > today else band(d)  # a member seen after "now" (a late event) counts everywhere
        if j >= 0:
            (users if is_user else features)[j] += 1
    t, sv, b = [[0] * 8 for _ in range(nb)], [[0] * 10 for _ in range(nb)], [[0] * 6 for _ in range(nb)]
    for rows, acc in ((p.tickets, t), (p.surveys, sv), (p.billing, b)):
        for d, v in rows:
            j = band(d)
            if j >= 0:
                _add(acc[j], v)
    for j in range(1, nb):  # outwards: window j holds every smaller window's days
        for acc in (act, t, sv, b):
            _add(acc[j], acc[j - 1])
        active_days[j] += active_days[j - 1]
        users[j] += users[j - 1]
        features[j] += features[j - 1]
    out = {w: _window(w, p.slot_names, act[j], active_days[j], users[j], features[j], t[j], sv[j], b[j])
           for j, w in enumerate(order)}
    return {w: out[w] for w in windows}


def _window(window: int, slot_names: list[str], act: list[int], active_days: int, users: int, features: int,
            t: list[int], sv: list[int], b: list[int]) -> WindowAggregates:
    duration, other, actions = act[0], act[1], act[2:]
    named = {name: c for name, c in zip(slot_names, actions) if c}
    if other:
        named["other"] = other
    nps_n, csat_n, ces_n = sv[0], sv[5], sv[8]
    # model_construct: the numbers are computed here, not input to validate (hot path)
    return WindowAggregates.model_construct(
        days=window, activity_events=other + sum(actions), activity_duration_s=duration, actions=named,
        active_users=users, features_used=features, active_days=active_days,
        tickets_opened=t[0], tickets_resolved=t[1], tickets_reopened=t[2], ticket_load=t[3],
        mean_time_to_resolve_h=t[4] / t[5] / 3600 if t[5] else None,
        sentiment_mean=t[6] / t[7] / 1000 if t[7] else None,
        nps_responses=nps_n, nps_mean=sv[1] / nps_n if nps_n else None,
        nps_promoters=sv[2], nps_passives=sv[3], nps_detractors=sv[4],
        nps=100 * (sv[2] - sv[4]) / nps_n if nps_n else None,
        csat_responses=csat_n, csat_mean=sv[6] / 1000 / csat_n if csat_n else None, csat_satisfied=sv[7],
        csat=sv[7] / csat_n if csat_n else None,
        ces_responses=ces_n, ces_mean=sv[9] / 1000 / ces_n if ces_n else None,
        renewals=b[1], upgrades=b[2], downgrades=b[3], cancellations=b[4], plan_changes=b[2] + b[3],
    )


def _mrr_at_window_start(main: dict[str, str], start_day: int) -> int | None:
    """MRR (cents) in force when the window opened (``windows.mrr_at`` over the main hash's points)."""
    points = []
    for f, val in main.items():
        bucket = layout.day_bucket(f, layout.MRR_POINT_DAY)
        if bucket is not None:
            ts_s, cents_s, *_ = val.split(",")  # "ts,cents[,active]"
            points.append((bucket[1], (int(ts_s), int(cents_s))))
    return mrr_at(points, start_day)


def compute_aggregates_full(raw: RawCustomerState, now_ms: int | None, windows_days: list[int]) -> CustomerAggregates:
    """``compute_aggregates`` recomputed from scratch (the reference of the incremental path)."""
    main = raw.main

    def opt_int(key: str) -> int | None:
        v = main.get(key)
        return int(v) if v is not None else None

    last_ts = opt_int(layout.LAST_EVENT)
    now = now_ms if now_ms is not None else last_ts
    lact = opt_int(layout.LAST_ACTIVITY)
    start = opt_int(layout.STARTED)
    first_seen = opt_int(layout.FIRST_SEEN)
    mrr_cents = opt_int(layout.MRR)
    longest = max(windows_days)
    windows: dict[str, WindowAggregates] = {}
    if now is not None:
        windows = {f"{w}d": agg for w, agg in compute_windows_full(raw, now, windows_days).items()}
    mrr_change = None
    if now is not None and mrr_cents is not None:
        base = _mrr_at_window_start(main, window_days(now, longest).start)
        if base is not None:
            mrr_change = round((mrr_cents - base) / 100, 2)
    tenure_from = start if start is not None else first_seen
    last_nps = opt_int(layout.LAST_NPS)
    return CustomerAggregates.model_construct(
        customer_id=raw.customer_id,
        as_of=_ms_to_dt(now),
        first_seen=_ms_to_dt(first_seen),
        last_event=_ms_to_dt(last_ts),
        last_activity=_ms_to_dt(lact),
        days_since_last_activity=max(0.0, round((now - lact) / DAY_MS, 3)) if (now is not None and lact is not None) else None,
        events_applied=int(main.get(layout.EVENTS, "0")),
        duplicates_ignored=int(main.get(layout.DUPLICATES, "0")),
        subscription_status=main.get(layout.STATUS),
        plan=main.get(layout.PLAN),
        mrr=round(mrr_cents / 100, 2) if mrr_cents is not None else None,
        mrr_change=mrr_change,
        mrr_change_window_days=longest,
        tenure_days=round((now - tenure_from) / DAY_MS, 3) if (now is not None and tenure_from is not None) else None,
        cancelled_at=_ms_to_dt(opt_int(layout.CANCELLED_AT)) if main.get(layout.STATUS) == "cancelled" else None,
        open_tickets=int(main.get(layout.OPEN_TICKETS, "0")),
        open_ticket_load=int(main.get(layout.OPEN_TICKET_LOAD, "0")),
        last_nps=last_nps,
        last_nps_at=_ms_to_dt(opt_int(layout.LAST_NPS_AT)),
        windows=windows,
    )


#: the fields of a window's aggregates, in the model's order
_WINDOW_FIELDS = tuple(WindowAggregates.model_fields)


class Window:
    """A window's aggregates read straight from its sums (what scoring reads per event: each
    value computed when read, by the same arithmetic as ``_window``); ``model()`` is the
    :class:`WindowAggregates` with the same values."""

    __slots__ = ("days", "active_days", "active_users", "features_used", "_names", "_act", "_t", "_sv", "_b")

    def __init__(self, window: int, slot_names: list[str], act: list[int], active_days: int, users: int,
                 features: int, t: list[int], sv: list[int], b: list[int]) -> None:
        self.days, self.active_days, self.active_users, self.features_used = window, active_days, users, features
        self._names, self._act, self._t, self._sv, self._b = slot_names, act, t, sv, b

    def model(self) -> WindowAggregates:
        return WindowAggregates.model_construct(**{k: getattr(self, k) for k in _WINDOW_FIELDS})

    @property
    def actions(self) -> dict[str, int]:
        act = self._act
        named = {name: c for name, c in zip(self._names, act[2:]) if c}
        if act[1]:
            named["other"] = act[1]
        return named

    @property
    def activity_events(self) -> int:
        return self._act[1] + sum(self._act[2:])

    @property
    def activity_duration_s(self) -> int:
        return self._act[0]


    # the same arithmetic as ``_window``, in the same order
    @property
    def mean_time_to_resolve_h(self) -> float | None:
        t = self._t
        return t[4] / t[5] / 3600 if t[5] else None

    @property
    def sentiment_mean(self) -> float | None:
        t = self._t
        return t[6] / t[7] / 1000 if t[7] else None

    @property
    def nps_mean(self) -> float | None:
        sv = self._sv
        return sv[1] / sv[0] if sv[0] else None

    @property
    def nps(self) -> float | None:
        sv = self._sv
        return 100 * (sv[2] - sv[4]) / sv[0] if sv[0] else None

    @property
    def csat_mean(self) -> float | None:
        sv = self._sv
        return sv[6] / 1000 / sv[5] if sv[5] else None

    @property
    def csat(self) -> float | None:
        sv = self._sv
        return sv[7] / sv[5] if sv[5] else None

    @property
    def ces_mean(self) -> float | None:
        sv = self._sv
        return sv[9] / 1000 / sv[8] if sv[8] else None

    @property
    def plan_changes(self) -> int:
        return self._b[2] + self._b[3]


#: window values that are one sum as it is: (the sums, index)
_PLAIN_SUMS = {
    "tickets_opened": ("_t", 0), "tickets_resolved": ("_t", 1), "tickets_reopened": ("_t", 2), "ticket_load": ("_t", 3),
    "nps_responses": ("_sv", 0), "nps_promoters": ("_sv", 2), "nps_passives": ("_sv", 3), "nps_detractors": ("_sv", 4),
    "csat_responses": ("_sv", 5), "csat_satisfied": ("_sv", 7), "ces_responses": ("_sv", 8),
    "renewals": ("_b", 1), "upgrades": ("_b", 2), "downgrades": ("_b", 3), "cancellations": ("_b", 4),
}
_READERS = {"_t": lambda i: property(lambda w: w._t[i]), "_sv": lambda i: property(lambda w: w._sv[i]),
            "_b": lambda i: property(lambda w: w._b[i])}
for _name, (_sums, _i) in _PLAIN_SUMS.items():
    setattr(Window, _name, _READERS[_sums](_i))


#: the timestamps of ``CustomerAggregates``, kept in ms by :class:`Aggregates`
_TIMES = ("as_of", "first_seen", "last_event", "last_activity", "cancelled_at", "last_nps_at")


class Aggregates:
    """A customer's aggregates as plain attributes (what scoring reads per event): the
    timestamps are kept in ms and made ``datetime`` when read; ``model()`` is the
    :class:`CustomerAggregates` with the same values."""

    __slots__ = tuple(f"{k}_ms" if k in _TIMES else k for k in CustomerAggregates.model_fields)

    customer_id: str
    windows: dict[str, Window]

    @property
    def as_of(self) -> datetime | None:
        return _ms_to_dt(self.as_of_ms)

    def model(self) -> CustomerAggregates:
        return CustomerAggregates.model_construct(
            customer_id=self.customer_id, as_of=_ms_to_dt(self.as_of_ms), first_seen=_ms_to_dt(self.first_seen_ms),
            last_event=_ms_to_dt(self.last_event_ms), last_activity=_ms_to_dt(self.last_activity_ms),
            days_since_last_activity=self.days_since_last_activity, events_applied=self.events_applied,
            duplicates_ignored=self.duplicates_ignored, subscription_status=self.subscription_status, plan=self.plan,
            mrr=self.mrr, mrr_change=self.mrr_change, mrr_change_window_days=self.mrr_change_window_days,
            tenure_days=self.tenure_days, cancelled_at=_ms_to_dt(self.cancelled_at_ms),
            open_tickets=self.open_tickets, open_ticket_load=self.open_ticket_load, last_nps=self.last_nps,
            last_nps_at=_ms_to_dt(self.last_nps_at_ms),
            windows={k: w.model() for k, w in self.windows.items()},
        )


def aggregates_of(raw: RawCustomerState, now_ms: int | None, windows_days: list[int]) -> Aggregates:
    """All aggregates of one customer as of event time ``now_ms`` (default: its last event),
    from the state's incremental window sums (``scoring.windows``, kept in ``raw.derived``)."""
    main = raw.main
    get = main.get
    v = get(layout.LAST_EVENT)
    last_ts = int(v) if v is not None else None
    now = now_ms if now_ms is not None else last_ts
    v = get(layout.LAST_ACTIVITY)
    lact = int(v) if v is not None else None
    v = get(layout.STARTED)
    start = int(v) if v is not None else None
    v = get(layout.FIRST_SEEN)
    first_seen = int(v) if v is not None else None
    v = get(layout.MRR)
    mrr_cents = int(v) if v is not None else None
    longest = max(windows_days)
    a = Aggregates()
    a.windows = {}
    a.mrr_change = None
    if now is not None:
        cache = window_cache(raw, windows_days, now // DAY_MS)
        act, days, users, feats, t, sv, b = cache.totals()
        out = {w: Window(w, cache.slots, act[j], days[j], users[j], feats[j], t[j], sv[j], b[j])
               for j, w in enumerate(cache.order)}
        a.windows = {f"{w}d": out[w] for w in windows_days}
        if mrr_cents is not None:
            base = cache.mrr_at(window_days(now, longest).start)
            if base is not None:
                a.mrr_change = round((mrr_cents - base) / 100, 2)
    tenure_from = start if start is not None else first_seen
    status = get(layout.STATUS)
    v = get(layout.LAST_NPS)
    a.customer_id = raw.customer_id
    a.as_of_ms, a.first_seen_ms, a.last_event_ms, a.last_activity_ms = now, first_seen, last_ts, lact
    a.days_since_last_activity = (max(0.0, round((now - lact) / DAY_MS, 3))
                                  if (now is not None and lact is not None) else None)
    a.events_applied = int(get(layout.EVENTS, "0"))
    a.duplicates_ignored = int(get(layout.DUPLICATES, "0"))
    a.subscription_status = status
    a.plan = get(layout.PLAN)
    a.mrr = round(mrr_cents / 100, 2) if mrr_cents is not None else None
    a.mrr_change_window_days = longest
    a.tenure_days = round((now - tenure_from) / DAY_MS, 3) if (now is not None and tenure_from is not None) else None
    cts = get(layout.CANCELLED_AT)
    a.cancelled_at_ms = int(cts) if cts is not None and status == "cancelled" else None
    a.open_tickets = int(get(layout.OPEN_TICKETS, "0"))
    a.open_ticket_load = int(get(layout.OPEN_TICKET_LOAD, "0"))
    a.last_nps = int(v) if v is not None else None
    v = get(layout.LAST_NPS_AT)
    a.last_nps_at_ms = int(v) if v is not None else None
    return a


def compute_aggregates(raw: RawCustomerState, now_ms: int | None, windows_days: list[int]) -> CustomerAggregates:
    """All aggregates of one customer as of event time ``now_ms`` (default: its last event)."""
    return aggregates_of(raw, now_ms, windows_days).model()
