"""One customer's state held in the worker's memory: the Redis hashes as string dicts, plus
what changed since they were last written.

The worker that owns a customer's partition group applies its events here
(``state.apply``), scores from here, and writes what changed to Redis once per drain
(``state.owned``). The dicts hold exactly what the Redis hashes hold (same fields, same
text), so a customer loaded back from Redis is the customer that was written.

>>> st = CustomerState.empty("acme")
>>> st.hset(MAIN, "n", "1"); st.hset(DAYS, "20100", "0,1"); st.hdel(DAYS, "20100")
>>> st.main, st.days, sorted(st.dirty[MAIN]), sorted(st.dirty[DAYS])
({'n': '1'}, {}, ['n'], ['20100'])
>>> st.changes(DAYS)
({}, ['20100'])
"""

from __future__ import annotations

from dataclasses import dataclass

from stream_app.core import RawCustomerState

#: the hashes kept in memory, by index (``CustomerState.hashes``); label snapshots (written,
#: never read back by the worker) and the outbox are kept apart
MAIN, DAYS, SEEN, TICKETS, DEDUPE = range(5)
N_HASHES = 5


@dataclass(frozen=True)
class Limits:
    """The bounds ``state.apply`` keeps a customer's state within (a deployment's settings)."""

    max_window_days: int
    dedupe_days: int
    top_actions: int
    ticket_retention_days: int
    max_open_tickets: int
    max_tracked_users: int
    #: a customer silent for longer than this (event time) starts over when it returns; 0: never
    retention_ms: int


class CustomerState(RawCustomerState):
    """A customer's state in memory (see the module); readable wherever a
    ``RawCustomerState`` is (scoring takes either)."""

    def __init__(self, customer_id: str, main: dict[str, str], days: dict[str, str], seen: dict[str, str],
                 tickets: dict[str, str], dedupe: dict[str, str], outbox: list[bytes] | None = None) -> None:
        super().__init__(customer_id, main, days, seen, tickets, len(dedupe))
        self.dedupe = dedupe
        #: the hashes by index (``MAIN`` ...): the same dict objects as the attributes
        self.hashes: tuple[dict[str, str], ...] = (main, days, seen, tickets, dedupe)
        #: fields set or deleted since the last write, per hash (absent from its dict now: deleted)
        self.dirty: tuple[set[str], ...] = tuple(set() for _ in range(N_HASHES))
        #: label snapshots taken since the last write ("<day>:<second>" -> features)
        self.labels: dict[str, str] = {}
        #: outbox entries added since the last write (appended to the Redis list)
        self.outbox: list[str] = []
        #: entries the Redis outbox held when the customer was loaded (a crash's leftovers)
        self.leftovers: list[bytes] = list(outbox or [])
        #: the customer came back after the retention period: its keys but the outbox (the hashes
        #: and the label snapshots) are deleted before this write, which then holds all of ``hashes``
        self.reset = False
        #: a new event-time day was applied: the keys' expiry is renewed on write
        self.touched_day = False
        #: the event_id digests of ``dedupe``, parsed (``state.apply`` keeps it; None: not built)
        self.ids: set[str] | None = None

    @classmethod
    def empty(cls, customer_id: str) -> CustomerState:
        return cls(customer_id, {}, {}, {}, {}, {})

    def hset(self, h: int, field: str, value: str) -> None:
        self.hashes[h][field] = value
        self.dirty[h].add(field)

    def hdel(self, h: int, field: str) -> None:
        if self.hashes[h].pop(field, None) is not None:
            self.dirty[h].add(field)

    def changes(self, h: int) -> tuple[dict[str, str], list[str]]:
        """What to write for hash ``h``: fields to set, fields to delete (all of it after a reset)."""
        d = self.hashes[h]
        if self.reset:
            return dict(d), []
        sets = {f: d[f] for f in self.dirty[h] if f in d}
        dels = [f for f in self.dirty[h] if f not in d]
        return sets, dels

    def written(self) -> None:
        """The changes reached Redis: start a new change set."""
        for s in self.dirty:
            s.clear()
        self.labels.clear()
        self.outbox.clear()
        self.reset = False
        self.touched_day = False

    @property
    def pending_write(self) -> bool:
        return self.reset or self.touched_day or bool(self.labels or self.outbox) or any(self.dirty)
