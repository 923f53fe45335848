"""The watchdog: is the worker alive and keeping up? (pure logic, clock injected)

Faust consumers are known to stall silently: the process runs, the group membership holds,
and nothing is processed while records pile up. Per assigned input partition the watchdog
knows the lag (log-end offset minus the first offset not yet done), the records handed to the
ingestor and not yet done, and when the partition last made progress, and it classifies the
worker:

* ``ok``: input that waits is being worked through;
* ``degraded``: Redis or the broker failed within the last ``stall_after_s`` (the ingestor
  is retrying; a restart would not help, so no exit);
* ``stalled``: a partition has had input waiting and no progress for ``stall_after_s``
  (see below);
* ``crashed``: an agent task crashed (Faust would restart it, but the failed batch was not
  applied, so the process must restart for it to be redelivered).

A stall or crash that lasts ``grace_s`` more asks the process to exit (``Report.exit_now``);
the supervisor (systemd, Kubernetes, docker ``restart:``) restarts it and Kafka redelivers
everything not yet acknowledged.

What counts as stuck follows the ingestor's design: it takes the four topics' batches one
at a time under one lock and holds each record until its partition group has passed its event
time (``stream_app.pipeline.ordering``), so a batch may wait while another is processed and a record
may wait for its siblings. A partition with input waiting is stalled after ``stall_after_s``
of:

* a batch in the ingestor's hands (not returned) while the worker does nothing at all;
* records held for event-time order while the worker does nothing at all;
* records in the log not delivered to the ingestor while its topic's agent is idle and the
  partition receives nothing (a consumer that stopped fetching; when the agent is busy, the
  worker's progress counts, as for a batch in flight).

"The worker does something" is any record done, or any customer scored (the ingestor's own
counters, read at each check, move inside a long batch too). A stall clock never starts
before the input started waiting, so a partition idle for an hour is not "stalled" the
instant a record arrives.

>>> wd = Watchdog(stall_after_s=10, grace_s=5)
>>> wd.assignment([("cs.activity", 0)], now=0.0)
>>> wd.offsets({("cs.activity", 0): 100}, {("cs.activity", 0): 40}, now=1.0)
>>> wd.check(now=5.0).status, wd.check(now=12.0).status, wd.check(now=17.0).exit_now
('ok', 'stalled', True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from stream_app.core import TP

Status = Literal["ok", "degraded", "stalled", "crashed"]


class RecordLike(Protocol):
    """What the watchdog reads of a record (``stream_app.core.Record``)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp_ms(self) -> int | None: ...
    @property
    def highwater(self) -> int | None: ...


@dataclass
class PartitionState:
    """What this process knows of one input partition."""

    topic: str
    partition: int
    since: float
    #: highest offset done (applied and scored, dead-lettered, or skipped as redelivered)
    handled: int = -1
    #: highest offset handed to the ingestor
    received: int = -1
    #: offsets handed to the ingestor and not done yet (held for event-time order, or in flight)
    pending: set[int] = field(default_factory=set)
    first_received: int | None = None
    highwater: int | None = None
    committed: int | None = None
    #: the log's first offset: where a group without a commit starts (auto_offset_reset=earliest)
    earliest: int | None = None
    last_progress: float | None = None
    last_event_ts: float | None = None
    #: since when records have been held by the ingestor (pending, no batch in flight)
    waiting_since: float | None = None
    #: batches of this partition handed to the ingestor and not returned yet, and since when
    in_flight: int = 0
    in_flight_since: float | None = None
    last_received: float | None = None
    #: since when the log has had records not yet delivered to the ingestor
    undelivered_since: float | None = None

    def next_offset(self) -> int | None:
        """The first offset not done yet (None: not known yet)."""
        if self.pending:
            return min(self.pending)
        if self.handled >= 0 or self.received >= 0:
            return max(self.handled, self.received) + 1
        return self.committed if self.committed is not None else self.earliest

    def needs_start(self) -> bool:
        """Whether the next offset is unknown (no record, no commit, no log start seen yet)."""
        return self.next_offset() is None

    def lag(self) -> int | None:
        nxt = self.next_offset()
        if self.highwater is None or nxt is None:
            return None
        return max(0, self.highwater - nxt)

    def undelivered(self) -> int:
        """Records in the log not handed to the ingestor yet."""
        if self.highwater is None:
            return 0
        if self.handled >= 0 or self.received >= 0:
            return max(0, self.highwater - max(self.handled, self.received) - 1)
        return self.lag() or 0

    def held(self) -> bool:
        """Records the ingestor returned without finishing (event-time order holds them)."""
        return bool(self.pending) and self.in_flight == 0

    def waiting(self) -> bool:
        return bool(self.pending) or self.in_flight > 0 or self.undelivered() > 0


@dataclass(frozen=True)
class Crash:
    agent: str
    reason: str
    at: float


@dataclass(frozen=True)
class PartitionReport:
    topic: str
    partition: int
    lag: int | None
    waiting: bool
    stalled: bool
    #: seconds with input waiting and no progress (0 when nothing waits)
    stalled_for_s: float
    #: seconds since the partition last made progress (None: none in this process yet)
    progress_age_s: float | None
    #: Kafka timestamp (Unix seconds) of the highest offset done
    last_event_ts: float | None


@dataclass(frozen=True)
class Report:
    status: Status
    reasons: list[str]
    partitions: list[PartitionReport]
    crashes: list[Crash]
    #: seconds in the current stalled/crashed state (0 when not in one)
    unhealthy_for_s: float
    #: seconds until the watchdog asks for an exit (None: no exit pending)
    exit_in_s: float | None
    exit_now: bool
    stalls_total: int

    @property
    def healthy(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, object]:
        """JSON-ready details (for /health)."""
        return {
            "status": self.status,
            "reasons": self.reasons,
            "unhealthy_for_s": round(self.unhealthy_for_s, 1),
            "exit_in_s": None if self.exit_in_s is None else round(self.exit_in_s, 1),
            "crashes": [{"agent": c.agent, "reason": c.reason} for c in self.crashes],
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "lag": p.lag,
                    "waiting": p.waiting,
                    "stalled": p.stalled,
                    "stalled_for_s": round(p.stalled_for_s, 1),
                    "progress_age_s": None if p.progress_age_s is None else round(p.progress_age_s, 1),
                    "last_event_ts": p.last_event_ts,
                }
                for p in self.partitions
            ],
        }


def _by_partition(records: Sequence[RecordLike]) -> dict[TP, list[Any]]:
    """Per partition of a batch: [offsets, highest log-end offset seen] (one pass: batches
    hold hundreds of records)."""
    out: dict[TP, list[Any]] = {}
    for r in records:
        key = (r.topic, r.partition)
        cur = out.get(key)
        if cur is None:
            cur = out[key] = [[], 0]
        cur[0].append(r.offset)
        if r.highwater is not None and r.highwater > cur[1]:
            cur[1] = r.highwater
    return out


@dataclass
class Watchdog:
    """Per-partition progress and the worker's health verdict. Times are monotonic seconds."""

    stall_after_s: float
    grace_s: float
    partitions: dict[TP, PartitionState] = field(default_factory=dict)
    #: the last time the worker did something (a record done, a customer scored)
    last_activity: float = -math.inf
    crashes: list[Crash] = field(default_factory=list)
    last_dependency_error: float | None = None
    stalls_total: int = 0
    _errors_seen: int = 0
    _activity_seen: int = 0
    _unhealthy_since: float | None = None

    # --- inputs ------------------------------------------------------------------------
    def _state(self, tp: TP, now: float) -> PartitionState:
        st = self.partitions.get(tp)
        if st is None:
            st = self.partitions[tp] = PartitionState(tp[0], tp[1], since=now)
        return st

    def _update_waiting(self, st: PartitionState, now: float) -> None:
        if st.held():
            if st.waiting_since is None:
                st.waiting_since = now
        else:
            st.waiting_since = None
        if st.undelivered() > 0:
            if st.undelivered_since is None:
                st.undelivered_since = now
        else:
            st.undelivered_since = None

    def assignment(self, tps: Iterable[TP], now: float) -> None:
        """The partitions this process owns now; revoked ones are forgotten, new ones start fresh."""
        keep = set(tps)
        for tp in list(self.partitions):
            if tp not in keep:
                del self.partitions[tp]
        for tp in keep:
            self._state(tp, now)

    def offsets(
        self,
        highwaters: Mapping[TP, int],
        committed: Mapping[TP, int | None],
        now: float,
        earliest: Mapping[TP, int] | None = None,
    ) -> None:
        """Log-end offsets from the broker, the group's committed offsets (next to consume) and
        the logs' first offsets (where a partition without a commit starts)."""
        for tp, off in (earliest or {}).items():
            st = self.partitions.get(tp)
            if st is not None and off is not None:
                st.earliest = int(off)
        for tp, hw in highwaters.items():
            st = self.partitions.get(tp)
            if st is not None and hw is not None:
                st.highwater = max(st.highwater or 0, int(hw))
        for tp, off in committed.items():
            st = self.partitions.get(tp)
            if st is not None and off is not None:
                st.committed = int(off)
        for st in self.partitions.values():
            self._update_waiting(st, now)

    def received(self, records: Sequence[RecordLike], now: float) -> None:
        """A batch was handed to the ingestor."""
        for tp, (offsets, hw) in _by_partition(records).items():
            st = self._state(tp, now)
            lo, hi = min(offsets), max(offsets)
            if st.first_received is None or (st.handled < 0 and lo < st.first_received):
                st.first_received = lo
            st.pending.update(offsets)  # a redelivered one is reported done at once
            st.received = max(st.received, hi)
            st.last_received = now
            if st.in_flight == 0:
                st.in_flight_since = now
            st.in_flight += 1
            # the log reaches at least past these records, and as far as the fetch said
            st.highwater = max(st.highwater or 0, hi + 1, hw)
            self._update_waiting(st, now)

    def handled(self, records: Sequence[RecordLike], now: float) -> None:
        """The ingestor returned from a batch: its records are done or held now."""
        for tp in _by_partition(records):
            st = self.partitions.get(tp)
            if st is not None and st.in_flight > 0:
                st.in_flight -= 1
                if st.in_flight == 0:
                    st.in_flight_since = None
                self._update_waiting(st, now)

    def done(self, items: Iterable[tuple[str, int, int, int | None]], now: float) -> None:
        """Records done: (topic, partition, offset, Kafka timestamp in ms or None)."""
        touched: set[TP] = set()
        for topic, partition, offset, ts_ms in items:
            tp = (topic, partition)
            st = self._state(tp, now)
            st.pending.discard(offset)
            if offset > st.handled:
                st.handled = offset
                if ts_ms is not None:
                    st.last_event_ts = ts_ms / 1000
            st.received = max(st.received, offset)
            touched.add(tp)
        for tp in touched:
            st = self.partitions[tp]
            st.last_progress = now
            self._update_waiting(st, now)
        if touched:
            self.last_activity = now

    def activity(self, total: int, now: float) -> None:
        """The ingestor's running count of work (records done, customers scored): it moves
        inside a long batch too, before any record of it is reported done."""
        if total > self._activity_seen:
            self.last_activity = now
        self._activity_seen = total

    def dependency_errors(self, total: int, now: float) -> None:
        """The ingestor's running count of Redis/broker errors it is retrying through."""
        if total > self._errors_seen:
            self.last_dependency_error = now
        self._errors_seen = total

    def agent_crashed(self, agent: str, reason: str, now: float) -> None:
        self.crashes.append(Crash(agent, reason, now))

    # --- verdict -----------------------------------------------------------------------
    def check(self, now: float) -> Report:
        """Classify the worker as of ``now`` (and start or stop the exit countdown)."""
        recent_error = (
            self.last_dependency_error is not None and now - self.last_dependency_error < self.stall_after_s
        )
        parts: list[PartitionReport] = []
        stalled: list[PartitionReport] = []
        busy_topics = {tp[0] for tp, st in self.partitions.items() if st.in_flight}
        for tp in sorted(self.partitions):
            st = self.partitions[tp]
            waiting = st.waiting()
            # retrying through an outage is activity, not a stall
            err = self.last_dependency_error if self.last_dependency_error is not None else -math.inf
            refs: list[float] = []
            if st.in_flight:  # a batch the ingestor has not returned from
                since = st.in_flight_since if st.in_flight_since is not None else st.since
                refs.append(max(since, self.last_activity, err))
            if st.held():  # held for event-time order
                since = st.waiting_since if st.waiting_since is not None else st.since
                refs.append(max(since, self.last_activity, err))
            if st.undelivered():  # in the log, not delivered yet
                since = st.undelivered_since if st.undelivered_since is not None else st.since
                ref = max(since, st.last_received or -math.inf, st.last_progress or -math.inf, err)
                if tp[0] in busy_topics:  # its agent is busy with a batch: the worker's progress counts
                    ref = max(ref, self.last_activity)
                refs.append(ref)
            stalled_for = max((max(0.0, now - r) for r in refs), default=0.0)
            rep = PartitionReport(
                topic=st.topic,
                partition=st.partition,
                lag=st.lag(),
                waiting=waiting,
                stalled=waiting and stalled_for >= self.stall_after_s,
                stalled_for_s=stalled_for if waiting else 0.0,
                progress_age_s=None if st.last_progress is None else now - st.last_progress,
                last_event_ts=st.last_event_ts,
            )
            parts.append(rep)
            if rep.stalled:
                stalled.append(rep)

        reasons: list[str] = []
        status: Status = "ok"
        if self.crashes:
            status = "crashed"
            reasons += [f"agent {c.agent} crashed {now - c.at:.0f}s ago: {c.reason}" for c in self.crashes]
        if stalled:
            status = "stalled" if status == "ok" else status
            reasons += [
                f"partition {p.topic}[{p.partition}] stalled: "
                f"{'?' if p.lag is None else p.lag} record(s) waiting, no progress for {p.stalled_for_s:.0f}s"
                for p in stalled
            ]
        if recent_error and status == "ok":
            status = "degraded"
        if recent_error:
            reasons.append(
                f"Redis or the broker unavailable (last error {now - (self.last_dependency_error or now):.0f}s ago); retrying"
            )

        if status in ("stalled", "crashed"):
            if self._unhealthy_since is None:
                self._unhealthy_since = self.crashes[0].at if self.crashes else now
                if stalled:
                    self.stalls_total += 1
        else:
            self._unhealthy_since = None
        unhealthy_for = 0.0 if self._unhealthy_since is None else now - self._unhealthy_since
        exit_in = None if self._unhealthy_since is None else max(0.0, self.grace_s - unhealthy_for)
        return Report(
            status=status,
            reasons=reasons,
            partitions=parts,
            crashes=list(self.crashes),
            unhealthy_for_s=unhealthy_for,
            exit_in_s=exit_in,
            exit_now=exit_in is not None and exit_in <= 0,
            stalls_total=self.stalls_total,
        )
