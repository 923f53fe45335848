"""The incremental window sums (``scoring.windows``, kept with a state that lives across
events) equal the full recomputation (``compute_aggregates_full``) after any history of
updates: bucket writes (late days too), days ageing out as event time moves on by irregular
steps, slot migrations, pruned buckets, members seen (after "now" too), resets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.core import DAY_MS, RawCustomerState
from stream_app.scoring.aggregates import compute_aggregates, compute_aggregates_full
from stream_app.scoring.windows import WindowCache
from stream_app.state import layout
from stream_app.state.codec import last_alerts, score_history

T0 = 20_000  # the first day


def csv(draw: st.DrawFn, n: int) -> str:
    return ",".join(str(c) for c in draw(st.lists(st.integers(0, 9), min_size=n, max_size=n)))


def step(draw: st.DrawFn, raw: RawCustomerState, today: int) -> int:
    """One random change of the state in place (new ``str`` objects for what changes, as
    ``state.customer.CustomerState`` does); returns the new event-time day."""
    main, days, seen = raw.main, raw.days, raw.seen
    n_slots = int(main.get(layout.ACTION_SLOTS, "0"))
    day = today + draw(st.integers(-100, 3))  # late events, and a few after "now"
    op = draw(st.sampled_from(["act", "act", "act", "row", "row", "seen", "seen", "drop", "main", "slots", "reset",
                               "replace"]))
    if op == "act":
        days[str(day)] = csv(draw, 2 + n_slots + draw(st.integers(-1, 1)))  # rarely shorter or longer
    elif op == "row":
        kind, width = draw(st.sampled_from([(layout.TICKET_DAY, 8), (layout.SURVEY_DAY, 10), (layout.BILLING_DAY, 6),
                                            (layout.MRR_POINT_DAY, 0)]))
        if width:
            main[f"{kind}{day}"] = csv(draw, width)
        else:
            main[f"{kind}{day}"] = f"{(day * DAY_MS) + draw(st.integers(0, 5))},{draw(st.integers(0, 9000))},1"
    elif op == "seen":
        member = draw(st.sampled_from(["u", "f"])) + str(draw(st.integers(0, 12)))
        seen[member] = str(today + draw(st.integers(-100, 2)))
    elif op == "drop":  # a prune: buckets, members, history deleted
        for d in (days, seen, main):
            keys = sorted(k for k in d if k not in (layout.ACTION_SLOTS, layout.EVENTS))
            if keys:
                del d[draw(st.sampled_from(keys))]
    elif op == "main":  # the score state and scalars that ride along
        what = draw(st.sampled_from(["history", "alert", "scalar", "mrr"]))
        if what == "history":
            main[layout.history_field(today - draw(st.integers(0, 40)))] = str(draw(st.integers(0, 1000)))
        elif what == "alert":
            main[layout.alert_last_field(draw(st.sampled_from(["churn_risk", "detractor", "band_change:red"])))] = \
                str(today * DAY_MS + draw(st.integers(0, 99)))
        elif what == "mrr":
            main[layout.MRR] = str(draw(st.integers(0, 9000)))
        else:
            main[layout.EVENTS] = str(int(main.get(layout.EVENTS, "0")) + 1)
    elif op == "slots":  # a slot migration: the layout changes, the buckets are rewritten
        n = draw(st.integers(0, 4))
        main[layout.ACTION_SLOTS] = str(n)
        for i in range(n):
            main[layout.slot_name_field(i)] = draw(st.sampled_from(["login", "export", "share", "api", "x"]))
        for d in list(days):
            if draw(st.booleans()):
                days[d] = csv(draw, 2 + n)
    elif op == "reset":  # a retention reset: everything starts over, the same dicts
        for d in (main, days, seen):
            d.clear()
        main[layout.FIRST_SEEN] = str(today * DAY_MS)
    else:  # the state read again: other dicts
        raw.main, raw.days, raw.seen = dict(main), dict(days), dict(seen)
    move = draw(st.sampled_from(["stay", "stay", "day", "days", "far", "back"]))
    return today + {"stay": 0, "day": 1, "days": draw(st.integers(2, 9)), "far": draw(st.integers(10, 200)),
                    "back": -draw(st.integers(1, 3))}[move]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_incremental_sums_equal_the_full_recomputation(data: st.DataObject) -> None:
    draw = data.draw
    windows = draw(st.sampled_from([[7, 30, 90], [1, 7], [30], [90, 7, 30, 7]]))
    raw = RawCustomerState("c", main={layout.ACTION_SLOTS: "1", layout.slot_name_field(0): "login",
                                      layout.FIRST_SEEN: str(T0 * DAY_MS), layout.LAST_EVENT: str(T0 * DAY_MS)})
    today = T0
    for _ in range(draw(st.integers(1, 40))):
        today = step(draw, raw, today)
        now_ms = today * DAY_MS + draw(st.integers(0, DAY_MS - 1))
        got = compute_aggregates(raw, now_ms, windows)
        copy = RawCustomerState("c", dict(raw.main), dict(raw.days), dict(raw.seen))
        assert got.model_dump() == compute_aggregates_full(copy, now_ms, windows).model_dump()
        cache = raw.derived
        assert isinstance(cache, WindowCache)
        # the score history and alert memory read in the same pass, as the codec reads them
        assert list(cache.history.items()) == list(score_history(raw.main).items())
        assert list(cache.alerts.items()) == list(last_alerts(raw.main).items())
        # and a state read afresh per event (no cache yet) gets the same
        assert compute_aggregates(copy, now_ms, windows).model_dump() == got.model_dump()


def test_a_state_keeps_one_cache_per_window_set() -> None:
    raw = RawCustomerState("c", main={layout.ACTION_SLOTS: "0"}, days={"9": "5,1", "5": "7,2"})
    a = compute_aggregates(raw, 9 * DAY_MS, [1, 7])
    cache = raw.derived
    assert compute_aggregates(raw, 9 * DAY_MS, [1, 7]) == a and raw.derived is cache  # reused
    assert compute_aggregates(raw, 9 * DAY_MS, [30]).windows["30d"].activity_events == 3
    assert raw.derived is not cache  # other windows: a new cache
