"""The one-pass window sums (``compute_windows_full``) equal summing each window on its own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stream_app.scoring.aggregates import DAY_MS, WindowAggregates, _Parsed, compute_aggregates, compute_windows_full
from stream_app.core import RawCustomerState


def reference_window(p: _Parsed, now_ms: int, window: int) -> dict[str, object]:
    """Each window summed separately, straight from its definition (days today-w+1 .. today;
    members last seen on or after its first day)."""
    today = now_ms // DAY_MS
    lo, hi = today - window + 1, today
    n = len(p.slot_names)
    inside = [v for d, v in p.activity if lo <= d <= hi]
    actions = [sum(v[2 + i] for v in inside) for i in range(n)]
    other = sum(v[1] for v in inside)
    named = {name: c for name, c in zip(p.slot_names, actions) if c}
    if other:
        named["other"] = other

    def total(rows: list[tuple[int, list[int]]], width: int) -> list[int]:
        return [sum(v[i] for d, v in rows if lo <= d <= hi) for i in range(width)]

    t, sv, b = total(p.tickets, 8), total(p.surveys, 10), total(p.billing, 6)
    return {
        "activity_events": other + sum(actions), "activity_duration_s": sum(v[0] for v in inside), "actions": named,
        "active_days": sum(1 for v in inside if any(v[1:])),
        "active_users": sum(1 for u, d in p.seen if u and d >= lo),
        "features_used": sum(1 for u, d in p.seen if not u and d >= lo),
        "tickets_opened": t[0], "ticket_load": t[3], "tickets_reopened": t[2],
        "nps_responses": sv[0], "nps_detractors": sv[4], "csat_satisfied": sv[7], "ces_responses": sv[8],
        "upgrades": b[2], "cancellations": b[4],
    }


counts = st.integers(0, 50)
day = st.integers(-5, 130)


@st.composite
def customers(draw: st.DrawFn) -> tuple[RawCustomerState, int, list[int]]:
    slots = draw(st.integers(0, 4))
    main: dict[str, str] = {"na": str(slots)} | {f"a{i}": f"act{i}" for i in range(slots)}
    days = {str(d): ",".join(map(str, draw(st.lists(counts, min_size=2 + slots, max_size=2 + slots))))
            for d in draw(st.sets(day, max_size=40))}
    for kind, width in (("t", 8), ("s", 10), ("b", 6)):
        for d in draw(st.sets(day, max_size=8)):
            main[f"{kind}{d}"] = ",".join(map(str, draw(st.lists(counts, min_size=width, max_size=width))))
    seen = {f"{draw(st.sampled_from('uf'))}{i}": str(d) for i, d in enumerate(draw(st.lists(day, max_size=20)))}
    today = draw(st.integers(0, 125))
    windows = draw(st.lists(st.integers(1, 120), min_size=1, max_size=4, unique=True))
    return RawCustomerState("c", main=main, days=days, seen=seen), today * DAY_MS + draw(st.integers(0, DAY_MS - 1)), windows


@settings(max_examples=300, deadline=None)
@given(customers())
def test_one_pass_equals_each_window_alone(case: tuple[RawCustomerState, int, list[int]]) -> None:
    raw, now_ms, windows = case
    got = compute_windows_full(raw, now_ms, windows)
    assert list(got) == windows  # the caller's order
    parsed = _Parsed(raw)
    for w in windows:
        agg = got[w]
        assert isinstance(agg, WindowAggregates) and agg.days == w
        want = reference_window(parsed, now_ms, w)
        assert {k: getattr(agg, k) for k in want} == want, w


def test_customer_aggregates_use_every_configured_window() -> None:
    raw = RawCustomerState("c", main={"na": "1", "a0": "login", "lts": str(10 * DAY_MS), "n": "3"},
                           days={"10": "0,0,1", "8": "0,0,1", "1": "0,2,0"})
    agg = compute_aggregates(raw, 10 * DAY_MS, [30, 1, 7])
    assert list(agg.windows) == ["30d", "1d", "7d"]
    assert [agg.windows[k].activity_events for k in ("1d", "7d", "30d")] == [1, 2, 4]
    assert agg.windows["30d"].actions == {"login": 2, "other": 2}
