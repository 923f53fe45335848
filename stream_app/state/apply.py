"""Apply a customer's events to its state in memory: the Python port of ``lua/apply_events.lua``.

The worker that owns a customer applies its events here and writes what changed to Redis once
per drain. The result is the script's, bit for bit (checked against the script on a real Redis
by ``tests/state/test_apply_differential.py``); the script's comments say why. Every field write
goes through ``CustomerState.hset``/``hdel``; what the script does to whole keys becomes flags:

* the retention restart (back after more than ``retention_ms`` of event-time silence) deletes
  H, D, X, K, E and L but for the offset fields and the order key: here the dicts are emptied
  but for those, ``st.labels`` dropped and ``st.reset`` set. L is not held in memory, so
  ``reset`` implies it: the writer deletes those six keys (not the outbox) before writing;
* pruning on a new event-time day renews the keys' expiry (``PEXPIRE``): ``st.touched_day``.

The script's numbers are doubles that Redis writes as integers; every value is an integer well
inside 2^53, so ints, ``str`` and ``//`` (``math.floor`` of a quotient, negatives too) give the
same text. Ties between names go by byte order in both, never by hash order or the locale.
Event-id digests are 8 characters (``codec.encode_for_script``), read back 8 at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from stream_app.core import DAY_MS
from stream_app.state import layout
from stream_app.state.codec import ScoreSave
from stream_app.state.customer import DAYS, DEDUPE, MAIN, SEEN, TICKETS, CustomerState, Limits
from stream_app.state.layout import ALREADY_APPLIED, APPLIED, DUPLICATE

Event = Sequence[Any]

_OFFSET_FIELD = {k: layout.OFFSET + k for k in (layout.KIND_ACTIVITY, layout.KIND_TICKET, layout.KIND_SURVEY,
                                                 layout.KIND_SUBSCRIPTION)}
#: what the retention restart keeps: the offset bookkeeping and the order key
_KEPT = (*_OFFSET_FIELD.values(), layout.SORT_KEY)
_BUCKET_KINDS = frozenset(layout.TICKET_DAY + layout.SURVEY_DAY + layout.BILLING_DAY + layout.MRR_POINT_DAY)
_ID_LEN = 8  # chars of an event-id digest
_CHUNK_LEN = 7 * _ID_LEN  # a de-duplication chunk holds up to 7 digests (values stay < 64 bytes)
_SUBSCRIPTION_INDEX = {"started": 0, "renewed": 1, "upgraded": 2, "downgraded": 3, "cancelled": 4, "reactivated": 5}
_OPEN, _RESOLVED, _CLOSED = layout.TICKET_OPEN, layout.TICKET_RESOLVED, layout.TICKET_CLOSED


# --- small helpers --------------------------------------------------------------------------------
def _int(d: dict[str, str], field: str, default: int) -> int:
    v = d.get(field)
    return default if v is None else int(v)


def _incr(st: CustomerState, field: str, n: int) -> int:
    """``HINCRBY`` on the main hash."""
    v = _int(st.main, field, 0) + n
    st.hset(MAIN, field, str(v))
    return v


def _vget(d: dict[str, str], field: str, n: int) -> list[int]:
    """A comma-separated integer vector, at least ``n`` long (missing entries 0)."""
    raw = d.get(field)
    if raw is None:
        return [0] * n
    v = [int(x) for x in raw.split(",") if x]
    if len(v) < n:
        v.extend([0] * (n - len(v)))
    return v


def _vset(st: CustomerState, h: int, field: str, v: list[int]) -> None:
    """Write a vector without its trailing zeros (at least one entry)."""
    n = len(v)
    while n > 1 and v[n - 1] == 0:
        n -= 1
    st.hset(h, field, ",".join(map(str, v[:n])))


def _leading_int(text: str) -> str:
    """The leading ``-?%d+`` of a label snapshot field (its day), as text."""
    sign = 1 if text[:1] == "-" else 0
    if (end := len(text) - len(text[sign:].lstrip("0123456789"))) == sign:
        raise ValueError(f"a label snapshot field starts with its day: {text!r}")
    return text[:end]


def _parse_ids(blobs: Iterable[str]) -> set[str]:
    """The event-id digests of de-duplication chunks."""
    return {blob[i:i + _ID_LEN] for blob in blobs for i in range(0, len(blob) - _ID_LEN + 1, _ID_LEN)}


# --- the batch --------------------------------------------------------------------------------------
def apply_events(st: CustomerState, events: Sequence[Event], limits: Limits) -> list[int]:
    """Apply one customer's events (``codec.encode_for_script`` tuples, in order); one status
    per event: ``APPLIED``, ``DUPLICATE`` (event_id seen) or ``ALREADY_APPLIED`` (offset)."""
    main = st.main
    if st.ids is None:
        st.ids = _parse_ids(st.dedupe.values())
    ret = limits.retention_ms
    out: list[int] = []
    for e in events:
        kind, p, o, eid, ts = e[0], e[1], e[2], e[3], e[4]
        if ret > 0:
            lts0 = main.get(layout.LAST_EVENT)
            if lts0 is not None and ts - int(lts0) > ret:
                _restart(st)
        of = _OFFSET_FIELD[kind]
        prev = main.get(of)
        if prev is not None:
            pp, _, po = prev.partition(":")
            if int(pp) == p and int(po) >= o:
                out.append(ALREADY_APPLIED)
                continue
        st.hset(MAIN, of, f"{p}:{o}")
        out.append(_apply_one(st, e, kind, eid, ts, limits))
    st.dedupe_days = len(st.dedupe)
    return out


def _apply_one(st: CustomerState, e: Event, kind: str, eid: str, ts: int, limits: Limits) -> int:
    """One event past the offset check: de-duplication, the scalars, pruning, its kind's update."""
    main = st.main
    day = ts // DAY_MS
    lts = _int(main, layout.LAST_EVENT, ts)
    today = (lts if lts > ts else ts) // DAY_MS
    ids = st.ids
    assert ids is not None
    if eid in ids:
        _incr(st, layout.DUPLICATES, 1)
        return DUPLICATE
    if day > today - limits.dedupe_days:
        _remember_id(st, day, eid)
        ids.add(eid)
    if layout.LAST_EVENT not in main or ts > lts:
        st.hset(MAIN, layout.LAST_EVENT, str(ts))
    fs = main.get(layout.FIRST_SEEN)
    if fs is None or ts < int(fs):
        st.hset(MAIN, layout.FIRST_SEEN, str(ts))
    _incr(st, layout.EVENTS, 1)
    if today > _int(main, layout.PRUNED_DAY, -1):
        _prune(st, today, limits)
        if limits.retention_ms > 0:
            st.touched_day = True
    _APPLY[kind](st, e, day, day > today - limits.max_window_days, limits)
    return APPLIED


def _restart(st: CustomerState) -> None:
    """Back after the retention period: a new customer, but the offset bookkeeping (and the
    order key) stay, so that a redelivered older record is still recognised."""
    main = st.main
    kept = [(f, main[f]) for f in _KEPT if f in main]
    for d, dirty in zip(st.hashes, st.dirty):
        d.clear()
        dirty.clear()
    main.update(kept)
    st.labels.clear()
    st.ids = set()
    st.reset = True


def _remember_id(st: CustomerState, day: int, eid: str) -> None:
    """File an event-id digest under its event's day: appended to the day's last chunk
    ``<day>.<k>`` while that holds fewer than 7, else in a new chunk."""
    dedupe = st.dedupe
    k = 0
    last = None
    while (blob := dedupe.get(f"{day}{layout.DEDUPE_CHUNK}{k}")) is not None:
        last = blob
        k += 1
    if last is not None and len(last) < _CHUNK_LEN:
        st.hset(DEDUPE, f"{day}{layout.DEDUPE_CHUNK}{k - 1}", last + eid)
    else:
        st.hset(DEDUPE, f"{day}{layout.DEDUPE_CHUNK}{k}", eid)


# --- pruning, once per customer per new event-time day ---------------------------------------------
def _prune(st: CustomerState, today: int, limits: Limits) -> None:
    horizon = today - limits.max_window_days + 1
    for f in [f for f in st.days if int(f) < horizon]:
        st.hdel(DAYS, f)
    _prune_buckets(st, horizon)
    for f in [f for f, d in st.seen.items() if int(d) < horizon]:
        st.hdel(SEEN, f)
    old = [f for f in st.dedupe if int(f.partition(layout.DEDUPE_CHUNK)[0]) <= today - limits.dedupe_days]
    if old and st.ids is not None:  # an id is in one chunk only (it is filed when not yet seen)
        st.ids.difference_update(_parse_ids(st.dedupe[f] for f in old))
    for f in old:
        st.hdel(DEDUPE, f)
    cutoff = (today - limits.ticket_retention_days) * DAY_MS
    for f, raw in list(st.tickets.items()):
        state, _, last, _ = raw.split(",", 3)
        if (state == _RESOLVED or state == _CLOSED) and int(last) < cutoff:
            st.hdel(TICKETS, f)
    st.hset(MAIN, layout.PRUNED_DAY, str(today))


def _prune_buckets(st: CustomerState, horizon: int) -> None:
    """Drop the main hash's day buckets before the horizon, but the newest MRR point among
    them (the MRR at the window's start)."""
    best: str | None = None
    best_day = 0
    for f in [f for f in st.main if f[:1] in _BUCKET_KINDS]:
        text = f[1:]  # the day: ^-?%d+$
        digits = text[1:] if text[:1] == "-" else text
        if not (digits.isdigit() and digits.isascii()) or (d := int(text)) >= horizon:
            continue
        if f[0] == layout.MRR_POINT_DAY and (best is None or d > best_day):
            if best is not None:
                st.hdel(MAIN, best)
            best, best_day = f, d
        else:
            st.hdel(MAIN, f)


# --- activity -------------------------------------------------------------------------------------
def _apply_activity(st: CustomerState, e: Event, day: int, in_window: bool, limits: Limits) -> None:
    action, user, feature, dur, cnt, ts = e[5], e[6], e[7], e[8], e[9], e[4]
    if ts > _int(st.main, layout.LAST_ACTIVITY, -1):
        st.hset(MAIN, layout.LAST_ACTIVITY, str(ts))
    if not in_window:
        return
    slot = _action_slot(st, action, cnt, limits.top_actions)
    field = str(day)
    v = _vget(st.days, field, 2 + limits.top_actions)
    v[0] += dur
    v[2 + slot if slot >= 0 else 1] += cnt
    _vset(st, DAYS, field, v)
    if user != "":
        _touch_seen(st, layout.SEEN_USER + user, day, limits.max_tracked_users)
    if feature != "":
        _touch_seen(st, layout.SEEN_FEATURE + feature, day, limits.max_tracked_users)


def _action_slot(st: CustomerState, action: str, cnt: int, slots: int) -> int:
    """The action's slot (-1: none, counted as "other"), counting ``cnt`` occurrences; a
    candidate that overtakes the weakest slot (ties: the highest slot) takes it."""
    main = st.main
    slot_of = layout.SLOT_OF + action
    s = main.get(slot_of)
    if s is not None:
        _incr(st, layout.slot_count_field(int(s)), cnt)
        return int(s)
    used = _int(main, layout.ACTION_SLOTS, 0)
    if used < slots:
        _take_slot(st, used, action, cnt)
        st.hset(MAIN, layout.ACTION_SLOTS, str(used + 1))
        return used
    cand = layout.CANDIDATE + action
    q = _incr(st, cand, cnt)
    weakest, wc = -1, 0
    for i in range(slots):
        c = _int(main, layout.slot_count_field(i), 0)
        if weakest < 0 or c <= wc:
            weakest, wc = i, c
    if q > wc:
        old = main[layout.slot_name_field(weakest)]
        st.hdel(MAIN, layout.SLOT_OF + old)
        st.hdel(MAIN, cand)
        _migrate_slot_to_other(st, weakest)
        _take_slot(st, weakest, action, q)
        st.hset(MAIN, layout.CANDIDATE + old, str(wc))  # demoted: a candidate with its count
        return weakest
    _bound_candidates(st, cand, slots)
    return -1


def _take_slot(st: CustomerState, slot: int, action: str, count: int) -> None:
    st.hset(MAIN, layout.slot_name_field(slot), action)
    st.hset(MAIN, layout.slot_count_field(slot), str(count))
    st.hset(MAIN, layout.SLOT_OF + action, str(slot))


def _migrate_slot_to_other(st: CustomerState, slot: int) -> None:
    """Move a slot's day counts to "other", so that every sum stays exact."""
    i = 2 + slot
    for f, raw in list(st.days.items()):
        v = [int(x) for x in raw.split(",") if x]
        if i < len(v) and v[i] > 0:
            v[1] += v[i]
            v[i] = 0
            _vset(st, DAYS, f, v)


def _bound_candidates(st: CustomerState, keep: str, slots: int) -> None:
    """More candidates than slots: drop the weakest other than ``keep`` (ties: first by name)."""
    main = st.main
    q, colon = layout.CANDIDATE  # compared by character: 1-char slices are not allocated
    cands = [f for f in main if f[:1] == q and f[1:2] == colon]
    if len(cands) > slots:
        others = [(int(main[f]), f) for f in cands if f != keep]
        if others:
            st.hdel(MAIN, min(others)[1])


def _touch_seen(st: CustomerState, field: str, day: int, bound: int) -> None:
    """A user/feature seen on ``day``; a new one beyond the bound evicts the least recently
    seen (ties: first by name), possibly itself."""
    seen = st.seen
    cur = seen.get(field)
    if cur is None or day > int(cur):
        st.hset(SEEN, field, str(day))
        if cur is None and len(seen) > bound:
            st.hdel(SEEN, min((int(d), f) for f, d in seen.items())[1])


# --- tickets: K holds "state,opened_ms,last_ms,weight"; t<day> the day's 8 sums -------------------------
def _parse_ticket(raw: str) -> list[Any]:
    state, opened, last, w = raw.split(",")
    return [state, int(opened), int(last), int(w)]


def _save_ticket(st: CustomerState, field: str, t: list[Any]) -> None:
    st.hset(TICKETS, field, f"{t[0]},{t[1]},{t[2]},{t[3]}")


def _open_delta(st: CustomerState, n: int, w: int) -> None:
    _incr(st, layout.OPEN_TICKETS, n)
    _incr(st, layout.OPEN_TICKET_LOAD, w)


def _open_new(st: CustomerState, field: str, ts: int, w: int, limits: Limits) -> None:
    _open_delta(st, 1, w)
    _save_ticket(st, field, [_OPEN, ts, ts, w])
    _bound_open_tickets(st, limits.max_open_tickets)


def _bound_open_tickets(st: CustomerState, bound: int) -> None:
    """Too many open tickets: drop the oldest (ties: first by name)."""
    if _int(st.main, layout.OPEN_TICKETS, 0) <= bound:
        return
    best: tuple[int, str] | None = None
    for f, raw in st.tickets.items():
        state, opened, _ = raw.split(",", 2)
        if state == _OPEN and (best is None or (int(opened), f) < best):
            best = (int(opened), f)
    if best is not None:
        w = _parse_ticket(st.tickets[best[1]])[3]
        st.hdel(TICKETS, best[1])
        _open_delta(st, -1, -w)


def _resolve_into(st: CustomerState, b: list[int], day: int, t: list[Any], at: int) -> None:
    """Time to resolution of ticket ``t`` resolved at ``at``, into its day's sums (``b`` if
    that is the event's day, written with it)."""
    if t[1] > 0 and at >= t[1]:
        rday = at // DAY_MS
        rb = b if rday == day else _vget(st.main, layout.TICKET_DAY + str(rday), 8)
        rb[4], rb[5] = rb[4] + (at - t[1]) // 1000, rb[5] + 1
        if rb is not b:
            _vset(st, MAIN, layout.TICKET_DAY + str(rday), rb)


def _apply_ticket(st: CustomerState, e: Event, day: int, in_window: bool, limits: Limits) -> None:
    field, status, w, sent, ts = layout.TICKET + e[5], e[6], e[7], e[8], e[4]
    raw = st.tickets.get(field)
    t = _parse_ticket(raw) if raw is not None else None
    bucket = layout.TICKET_DAY + str(day)
    b = _vget(st.main, bucket, 8) if in_window else None
    if status == "opened":
        if b is not None:
            b[0], b[3] = b[0] + 1, b[3] + w
        if t is None:
            _open_new(st, field, ts, w, limits)
        elif t[0] == _OPEN:
            if ts < t[1]:
                t[1] = ts
                _save_ticket(st, field, t)
        elif t[1] <= 0:  # its resolution came first (out of order): the ticket is done
            t[1] = ts
            _save_ticket(st, field, t)
            if t[2] >= ts and b is not None:
                _resolve_into(st, b, day, t, t[2])
    elif status == "updated":
        if t is None:
            _open_new(st, field, ts, w, limits)
        elif t[0] == _OPEN and ts >= t[2]:
            if w != t[3]:
                _open_delta(st, 0, w - t[3])
                t[3] = w
            t[2] = ts
            _save_ticket(st, field, t)
    elif status == "resolved" or status == "closed":
        if t is None:
            if b is not None and status == "resolved":
                b[1] += 1
            _save_ticket(st, field, [_RESOLVED, 0, ts, w])
        elif t[0] == _OPEN:
            _open_delta(st, -1, -t[3])
            if b is not None:
                b[1] += 1
                _resolve_into(st, b, day, t, ts)
            t[0], t[2] = _RESOLVED, ts
            _save_ticket(st, field, t)
    elif status == "reopened":
        if b is not None:
            b[2] += 1
        if t is None or t[0] != _OPEN:
            w = t[3] if t is not None else w
            _open_new(st, field, ts, w, limits)
    if b is not None:
        if sent is not False and sent is not None:
            b[6], b[7] = b[6] + sent, b[7] + 1
        _vset(st, MAIN, bucket, b)


# --- surveys: s<day> = nps n, sum, promoters, passives, detractors, csat n, sum, satisfied, ces n, sum --
def _apply_survey(st: CustomerState, e: Event, day: int, in_window: bool, limits: Limits) -> None:
    survey, score, ts = e[5], e[6], e[4]
    if survey == "nps":
        s = score // 1000
        if ts >= _int(st.main, layout.LAST_NPS_AT, -1):
            st.hset(MAIN, layout.LAST_NPS, str(s))
            st.hset(MAIN, layout.LAST_NPS_AT, str(ts))
    if not in_window:
        return
    field = layout.SURVEY_DAY + str(day)
    b = _vget(st.main, field, 10)
    if survey == "nps":
        b[0], b[1] = b[0] + 1, b[1] + s
        b[2 if s >= 9 else 3 if s >= 7 else 4] += 1
    elif survey == "csat":
        b[5], b[6] = b[5] + 1, b[6] + score
        if score >= 4000:
            b[7] += 1
    else:
        b[8], b[9] = b[8] + 1, b[9] + score
    _vset(st, MAIN, field, b)


# --- subscriptions: b<day> = started, renewed, upgraded, downgraded, cancelled, reactivated -------------
def _apply_subscription(st: CustomerState, e: Event, day: int, in_window: bool, limits: Limits) -> None:
    status, cents, plan, ts = e[5], e[6], e[7], e[4]
    main = st.main
    if ts >= _int(main, layout.STATUS_SINCE, -1):
        st.hset(MAIN, layout.STATUS, status)
        st.hset(MAIN, layout.STATUS_SINCE, str(ts))
        st.hset(MAIN, layout.MRR, str(cents))
        if plan != "":
            st.hset(MAIN, layout.PLAN, plan)
    if status == "started":
        start = main.get(layout.STARTED)
        if start is None or ts < int(start):
            st.hset(MAIN, layout.STARTED, str(ts))
    elif status == "cancelled" and ts >= _int(main, layout.CANCELLED_AT, -1):
        st.hset(MAIN, layout.CANCELLED_AT, str(ts))
    # the day's MRR change point: the latest by event time; also active after the day (1) or not (0)
    point = layout.MRR_POINT_DAY + str(day)
    mp = main.get(point)
    if mp is None or ts >= int(mp.partition(",")[0]):
        st.hset(MAIN, point, f"{ts},{cents},{0 if status == 'cancelled' else 1}")
    if in_window:
        field = layout.BILLING_DAY + str(day)
        b = _vget(main, field, 6)
        b[_SUBSCRIPTION_INDEX[status]] += 1
        _vset(st, MAIN, field, b)


_APPLY: dict[str, Callable[[CustomerState, Event, int, bool, Limits], None]] = {
    layout.KIND_ACTIVITY: _apply_activity, layout.KIND_TICKET: _apply_ticket,
    layout.KIND_SURVEY: _apply_survey, layout.KIND_SUBSCRIPTION: _apply_subscription,
}


# --- the score state of a scored event (the script's ARGV 8) ------------------------------------------
def apply_save(st: CustomerState, save: ScoreSave) -> None:
    """Save a scored event's state: its fields, the day's history entry and the newest score,
    the label snapshot, the outbox entries; history older than ``keep_days`` behind a new
    scored day is pruned. Applied right after the scoring (the script applies it before the
    next event: the same thing)."""
    main = st.main
    st.outbox.extend(save.outbox)
    for f, v in save.fields.items():
        st.hset(MAIN, f, v)
    day = save.day
    if day >= 0:
        st.hset(MAIN, layout.history_field(day), str(save.score10))
        st.hset(MAIN, layout.HEALTH_SCORE, str(save.score10))
    if save.snapshot != "":
        st.labels[save.snapshot] = save.snapshot_text
        st.hset(MAIN, layout.SNAPSHOT_DAY, _leading_int(save.snapshot))
    if day >= 0 and _int(main, layout.HISTORY_PRUNED_DAY, -1) < day:
        horizon = day - save.keep_days
        for f in [f for f in main if f[:1] == layout.HISTORY and (d := f[1:]).isdigit() and d.isascii()
                  and int(d) < horizon]:  # ^h%d+$
            st.hdel(MAIN, f)
        st.hset(MAIN, layout.HISTORY_PRUNED_DAY, str(day))
