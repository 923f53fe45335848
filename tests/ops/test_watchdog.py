"""The watchdog's pure logic, on an injected clock (seconds are just numbers here)."""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.ops.watchdog import Watchdog

A0 = ("cs.activity", 0)
A1 = ("cs.activity", 1)


@dataclass(frozen=True)
class R:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None
    highwater: int | None = None


def recs(tp: tuple[str, int], *offsets: int) -> list[R]:
    return [R(tp[0], tp[1], o, 1_700_000_000_000 + o) for o in offsets]


def keys(tp: tuple[str, int], *offsets: int) -> list[tuple[str, int, int, int | None]]:
    """Done records as the ops observer reports them: (topic, partition, offset, Kafka timestamp)."""
    return [(tp[0], tp[1], o, 1_700_000_000_000 + o) for o in offsets]


def batch(w: Watchdog, tp: tuple[str, int], offsets: list[int], now: float, *,
          done: list[int] | None = None, returned: float | None = None) -> None:
    """A batch through the ingestor: received at ``now``; at ``returned`` (default: now) the
    ingestor returns with ``done`` (default: all of them) finished, the rest held."""
    w.received(recs(tp, *offsets), now=now)
    at = now if returned is None else returned
    w.done(keys(tp, *(offsets if done is None else done)), now=at)
    w.handled(recs(tp, *offsets), now=at)


def wd(stall: float = 10, grace: float = 5) -> Watchdog:
    w = Watchdog(stall_after_s=stall, grace_s=grace)
    w.assignment([A0, A1], now=0)
    return w


def test_idle_worker_is_ok_however_long_nothing_arrives() -> None:
    w = wd()
    w.offsets({A0: 0, A1: 7}, {A0: None, A1: 7}, now=1, earliest={A0: 0})  # empty log; all committed
    rep = w.check(now=10_000)
    assert rep.status == "ok" and rep.healthy and not rep.exit_now
    assert [p.lag for p in rep.partitions] == [0, 0]


def test_progress_keeps_a_busy_partition_ok() -> None:
    w = wd()
    for t in range(0, 100, 5):  # a batch every 5 s, a backlog always waiting
        w.received(recs(A0, t, t + 1), now=t)
        w.offsets({A0: 1000}, {}, now=t + 1)
        w.done(keys(A0, t, t + 1), now=t + 2)
        w.handled(recs(A0, t, t + 1), now=t + 2)
        assert w.check(now=t + 4).status == "ok"
    p = w.check(now=100).partitions[0]
    assert p.waiting and p.lag == 1000 - 97 and p.progress_age_s == 100 - 97


def test_frozen_batch_stalls_then_exits_after_grace() -> None:
    w = wd(stall=10, grace=5)
    batch(w, A0, [0, 1, 2], now=1, returned=2)
    w.received(recs(A0, 3, 4), now=3)  # the ingestor never returns from this batch
    assert w.check(now=12.9).status == "ok"  # 9.9 s without progress
    rep = w.check(now=13.0)
    assert rep.status == "stalled" and not rep.exit_now and rep.exit_in_s == 5
    stalled = [p for p in rep.partitions if p.stalled]
    assert [(p.topic, p.partition, p.lag) for p in stalled] == [("cs.activity", 0, 2)]
    assert "cs.activity[0] stalled: 2 record(s) waiting, no progress for 10s" in rep.reasons[0]
    assert not w.check(now=17.9).exit_now
    rep = w.check(now=18.0)
    assert rep.exit_now and rep.unhealthy_for_s == 5 and rep.stalls_total == 1


def test_stall_clock_starts_when_input_starts_waiting_not_at_the_last_progress() -> None:
    w = wd(stall=10)
    batch(w, A0, [0], now=0)
    w.offsets({A0: 1}, {}, now=1)  # caught up, then an hour of silence
    w.offsets({A0: 5}, {}, now=3600)  # records arrive
    assert w.check(now=3601).status == "ok"
    assert w.check(now=3610).status == "stalled"  # ... and nothing picks them up for 10 s


def test_log_end_beyond_next_offset_is_input_waiting_even_if_nothing_was_delivered() -> None:
    # the silent Faust stall: the fetcher delivers nothing; only the broker's end offsets show it
    w = wd(stall=10)
    w.offsets({A0: 50}, {A0: 20}, now=0)
    rep = w.check(now=10)
    assert rep.status == "stalled" and rep.partitions[0].lag == 30
    # a partition never committed starts at the log's first offset (auto_offset_reset=earliest)
    w2 = wd(stall=10)
    w2.offsets({A1: 9}, {A1: None}, now=0)
    assert w2.partitions[A1].lag() is None and w2.partitions[A1].needs_start()
    w2.offsets({}, {}, now=0, earliest={A1: 9})
    assert w2.partitions[A1].lag() == 0 and w2.check(now=100).status == "ok"


def test_recovery_resets_the_countdown() -> None:
    w = wd(stall=10, grace=5)
    w.received(recs(A0, 0), now=0)
    assert w.check(now=11).status == "stalled"
    w.done(keys(A0, 0), now=12)
    w.handled(recs(A0, 0), now=12)
    rep = w.check(now=13)
    assert rep.status == "ok" and rep.exit_in_s is None and rep.unhealthy_for_s == 0
    w.received(recs(A0, 1), now=14)
    rep = w.check(now=24)
    assert rep.status == "stalled" and rep.exit_in_s == 5 and rep.stalls_total == 2  # a fresh grace period


def test_retrying_through_an_outage_is_degraded_not_stalled_and_never_exits() -> None:
    w = wd(stall=10, grace=5)
    w.received(recs(A0, 0, 1), now=0)
    for t in range(1, 120):  # Redis is down for two minutes; the ingestor retries every second
        w.dependency_errors(total=t, now=t)
        rep = w.check(now=t)
        assert rep.status == "degraded" and not rep.exit_now, t
    assert any("Redis or the broker" in r for r in rep.reasons)
    w.done(keys(A0, 0, 1), now=121)  # back: the batch goes through
    w.handled(recs(A0, 0, 1), now=121)
    assert w.check(now=125).status == "degraded"  # errors within the last stall_after_s
    assert w.check(now=131).status == "ok"
    # if the retries stop but nothing moves either, it is a stall again
    w.received(recs(A0, 2), now=140)
    assert w.check(now=150).status == "stalled"


def test_agent_crash_is_unhealthy_at_once_and_exits_after_grace() -> None:
    w = wd(stall=10, grace=5)
    w.agent_crashed("stream_app.ingest_activity", "ValueError: boom", now=2)
    rep = w.check(now=3)
    assert rep.status == "crashed" and rep.exit_in_s == 4
    assert "agent stream_app.ingest_activity crashed 1s ago: ValueError: boom" in rep.reasons
    assert w.check(now=7).exit_now


def test_revoked_partitions_are_forgotten_and_new_ones_start_fresh() -> None:
    w = wd(stall=10)
    w.received(recs(A1, 0), now=0)  # in flight when the partition is revoked
    w.assignment([A0], now=5)
    assert list(w.partitions) == [A0] and w.check(now=100).status == "ok"
    w.assignment([A0, A1], now=200)
    assert w.partitions[A1].received == -1 and w.check(now=300).status == "ok"


def test_report_details_are_json_ready() -> None:
    import json

    w = wd()
    batch(w, A0, [4], now=0, returned=1)
    d = w.check(now=3).as_dict()
    json.dumps(d)
    p0 = d["partitions"][0]
    assert d["status"] == "ok" and p0["progress_age_s"] == 2.0 and p0["last_event_ts"] == 1_700_000_000.004


T0 = ("cs.tickets", 0)
T1 = ("cs.tickets", 1)


def test_records_held_while_the_worker_works_are_not_stalled() -> None:
    # activity[0] records wait (event-time order) while tickets[0] works through a backlog
    w = wd(stall=10)
    w.assignment([A0, A1, T0, T1], now=0)
    batch(w, A0, [0, 1, 2], now=0, done=[])
    for t in range(1, 60):
        batch(w, T0, [t], now=t)
        rep = w.check(now=t)
        assert rep.status == "ok", t
    assert rep.partitions[0].waiting and rep.partitions[0].lag == 3
    # ... and once nothing at all happens any more, they are
    assert w.check(now=69).status == "stalled"


def test_a_long_batch_that_keeps_scoring_is_not_a_stall() -> None:
    # one pump releases a large backlog: nothing is reported done until it returns, but the
    # ingestor's counters move; other agents' batches wait for it meanwhile
    w = wd(stall=10)
    w.assignment([A0, T0], now=0)
    w.received(recs(A0, 0, 1), now=0)
    w.received(recs(T0, 0), now=0)
    for t in range(1, 100):
        w.activity(total=50 * t, now=t)
        assert w.check(now=t).status == "ok", t
    assert w.check(now=110).status == "stalled"


def test_undelivered_records_of_an_idle_agent_stall_even_while_others_work() -> None:
    w = wd(stall=10)
    w.assignment([A0, T0], now=0)
    batch(w, A0, [0], now=0)
    w.offsets({A0: 40}, {}, now=1)  # activity[0] has 39 records the consumer does not deliver
    for t in range(2, 12):
        batch(w, T0, [t], now=t)  # tickets flow
    rep = w.check(now=11)
    assert rep.status == "stalled" and [(p.topic, p.partition) for p in rep.partitions if p.stalled] == [A0]


def test_held_records_done_out_of_offset_order() -> None:
    w = wd(stall=10)
    batch(w, A0, [5, 6, 7], now=0, done=[6])  # e.g. 6 was invalid: dead-lettered at once; 5 and 7 held
    st = w.partitions[A0]
    assert st.pending == {5, 7} and st.lag() == 3 and st.waiting() and st.held()
    w.done(keys(A0, 5, 7), now=2)  # released later (the pump)
    assert not st.pending and st.lag() == 0 and not st.waiting() and st.last_event_ts == 1_700_000_000.007


def test_a_batch_the_ingestor_never_returns_from_stalls_once_the_worker_is_idle() -> None:
    w = wd(stall=10)
    w.assignment([A0, T0], now=0)
    w.received(recs(A0, 0, 1), now=0)  # frozen
    for t in range(1, 5):
        batch(w, T0, [t], now=t)
    assert w.check(now=13).status == "ok"
    rep = w.check(now=14)
    assert rep.status == "stalled" and [(p.topic, p.partition) for p in rep.partitions if p.stalled] == [A0]


def test_undelivered_records_stall_when_the_partition_receives_nothing() -> None:
    w = wd(stall=10)
    batch(w, A0, [0, 1], now=0)
    for t in range(1, 30):  # delivered as fast as they come: fine
        batch(w, A0, [t + 1], now=t)
        w.offsets({A0: t + 5}, {}, now=t)
        assert w.check(now=t).status == "ok"
    w.offsets({A0: 100}, {}, now=30)  # the fetcher stops delivering
    assert w.check(now=38).status == "ok"
    rep = w.check(now=40)
    assert rep.status == "stalled" and rep.partitions[0].lag == 100 - 31  # offsets 0..30 done
