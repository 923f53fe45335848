"""The Redis layout, in one place: every key name, every hash field name, the customer's hash tag.

Python code spells none of these names itself: it imports them from here. The Lua scripts
(``state/lua/*.lua``) use the names they must; the portfolio pass's script
(``read/tiles.py``) is given its field names as arguments, and ``tests/test_structure.py`` checks that
every field the Lua writes and Python reads appears in the Lua under the same name.

Keys (``{prefix}`` is ``KEY_PREFIX``; every key of one customer shares one hash tag, so a
customer's update is a single-slot Lua script and the layout works on Redis Cluster; the global
keys below sit in different slots, so no script or transaction mixes them there, see
``state/cluster.py``)::

    {prefix}c:{<tag>}            hash    main: scalars, sparse ticket/survey/billing/MRR day buckets,
                                         score history, the saved score state (fields below)
    {prefix}c:{<tag>}:d          hash    activity day buckets  day -> "dur,other,c0,c1,..."
    {prefix}c:{<tag>}:x          hash    last-seen day per user (u<digest>) and feature (f<name>)
    {prefix}c:{<tag>}:k          hash    tickets (state, opened, last, weight)
    {prefix}c:{<tag>}:e          hash    event_id digests per day (de-duplication)
    {prefix}c:{<tag>}:l          hash    pending label snapshots ("<day>:<second>" -> model features)
    {prefix}c:{<tag>}:o          list    outbox: outputs of saved scores not yet acknowledged
    {prefix}p:{<topic>}:<n>      hash    partition progress (off, wm, lw, idle)
    {prefix}wm                   string  newest event time applied anywhere (the read side's "now")
    {prefix}epoch                string  marker of this deployment's state (a restart that lost it shows)
    {prefix}fence:<n>            string  fence generation of partition group n (its current owner)
    {prefix}partitioning         string  the input topics the state was built on: "<topic prefix>|<partitions>"
    {prefix}risk                 zset    customer -> churn probability (active customers)
    {prefix}labels:pending       zset    "<customer>\\0<snapshot>" -> due time of its label
    {prefix}model:through        string  last event-time day the learner completed
    {prefix}model:days           zset    checkpoint day -> day;  model:blob:<day> its model
    {prefix}model:summary        string  the newest model's summary (JSON);  model:version its version
    {prefix}pf:{pf}:...          the portfolio's per-period sums and segmentation (``PortfolioKeys``)

>>> keys = CustomerKeys.for_customer("cs:", "acme}{1%")
>>> keys.main, keys.outbox
('cs:c:{acme%7D%7B1%25}', 'cs:c:{acme%7D%7B1%25}:o')
>>> customer_of_main_key("cs:", keys.main)
'acme}{1%'
>>> history_day("h20100"), history_day("hs"), history_field(20100)
(20100, None, 'h20100')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# --- global keys (under the key prefix) ------------------------------------------------------
WATERMARK = "wm"
EPOCH = "epoch"
PARTITIONING = "partitioning"  # "<topic prefix>|<partitions>" (``stream-app partitions``)
RISK = "risk"
LABELS_PENDING = "labels:pending"
MODEL_THROUGH = "model:through"
MODEL_DAYS = "model:days"
MODEL_BLOB = "model:blob:"  # + checkpoint day
MODEL_SUMMARY = "model:summary"
MODEL_VERSION = "model:version"
FENCE = "fence:"  # + partition group: its owner's generation (``state.owned``)

# --- customer keys ---------------------------------------------------------------------------
CUSTOMER = "c:"  # + {tag}
DAYS_SUFFIX = ":d"
SEEN_SUFFIX = ":x"
TICKETS_SUFFIX = ":k"
DEDUPE_SUFFIX = ":e"
SNAPSHOTS_SUFFIX = ":l"
OUTBOX_SUFFIX = ":o"

# --- partition progress ----------------------------------------------------------------------
PROGRESS = "p:"  # + {topic tag}:<partition>
PROGRESS_OFFSET = "off"  # highest handled offset
PROGRESS_NEWEST = "wm"  # newest event time handled
PROGRESS_LOW = "lw"  # low watermark: every record ordered before it is done
PROGRESS_IDLE = "idle"  # '1': the partition was at its log end

# --- main hash: written by lua/apply_events.lua (the event's update) ----------------------------
#: the last applied source record per topic kind, "<partition>:<offset>" (redelivery check); a
#: move to new topics, whose offsets restart at 0, must forget them (``state/partitions.py``)
SOURCE_OFFSETS = ("o:a", "o:t", "o:s", "o:b")
EVENTS = "n"  # events applied
DUPLICATES = "dup"  # events ignored as duplicates
STATUS = "st"  # subscription status
STATUS_SINCE = "sts"
PLAN = "plan"
MRR = "mrr"  # cents
STARTED = "start"  # time of the first `started` event
CANCELLED_AT = "cts"
OPEN_TICKETS = "on"
OPEN_TICKET_LOAD = "ow"
LAST_EVENT = "lts"
FIRST_SEEN = "fs"
LAST_ACTIVITY = "lact"
LAST_NPS = "npsl"
LAST_NPS_AT = "npst"
ACTION_SLOTS = "na"  # tracked actions; slot i: name a<i>, lifetime count n<i>
ACTION_SLOT_NAME = "a"  # + slot
ACTION_SLOT_COUNT = "n"  # + slot
#: sparse day buckets of the main hash: prefix + day
TICKET_DAY, SURVEY_DAY, BILLING_DAY, MRR_POINT_DAY = "t", "s", "b", "m"
#: the last-seen hash: prefix + member
SEEN_USER, SEEN_FEATURE = "u", "f"

# --- main hash: the update's own bookkeeping (read back only by the Lua and ``state.apply``) -----
OFFSET = "o:"  # + event kind: "<partition>:<offset>" of the newest record applied from its topic
PRUNED_DAY = "pd"  # the event-time day the state was last pruned on
SLOT_OF = "A:"  # + action name: its slot
CANDIDATE = "q:"  # + action name: all-time count of an untracked action (a slot candidate)
#: the tickets hash: prefix + ticket digest -> "state,opened_ms,last_ms,weight"
TICKET = "k"
TICKET_OPEN, TICKET_RESOLVED, TICKET_CLOSED = "o", "r", "c"
#: the de-duplication hash: "<day>" + separator + chunk number -> concatenated digests
DEDUPE_CHUNK = "."

# --- main hash: the score state, saved by the Lua from ``codec.ScoreSave`` ----------------------
HISTORY = "h"  # + day: that day's last score x10
HEALTH_SCORE = "hs"  # newest score x10
CHURN_HISTORY = "p"  # + day: that day's churn probability x10^4 (read by ``stream-app customer`` when present)
HISTORY_PRUNED_DAY = "hpd"
SNAPSHOT_DAY = "snd"  # day of the newest label snapshot
OWNER = "fg"  # fence generation of the worker that last loaded or wrote the customer
SORT_KEY = "sk"  # order key of the newest scored event (``codec.order_text``)
CHURN_P = "cp"
HEALTH_BAND = "hb"
MODEL_VERSION_FIELD = "mv"
STAGE = "ls"  # lifecycle stage
REASON = "r"  # + 1..REASONS: "<factor>:<impact>"
REASONS = 3
PUBLISHED_SCORE = "sp"  # score x10 last published on cs.scores
PUBLISHED_DAY = "spd"
ALERT_BAND = "ab"
ALERT_IN_RISK = "ar"
ALERT_LAST = "al:"  # + alert kind: time it last fired
PREVIOUS = "pc"  # the previous published score (``codec.previous_fields``)
PREVIOUS_SIGNALS = "pr"  # + 1..: its raw signals
LAST_CHANGE = "lc"  # the latest explained change; lc1, lc2 its items
LAST_CHANGE_ITEMS = ("lc1", "lc2")

# --- event kinds as the Lua reads them (``codec.encode_for_script``) ------------------------------
KIND_ACTIVITY, KIND_TICKET, KIND_SURVEY, KIND_SUBSCRIPTION = "a", "t", "s", "b"

# --- what applying an event did (the Lua's reply, ``state.apply``'s return) ------------------------
APPLIED, DUPLICATE, ALREADY_APPLIED = 1, 2, 3  # applied; duplicate event_id; offset already applied

# --- the portfolio (issue 7) -----------------------------------------------------------------
PORTFOLIO = "pf:{pf}"
PORTFOLIO_META = ":meta"  # rolled:<kind>, floor:<kind>
PORTFOLIO_VERSIONS = ":ver"
PORTFOLIO_CONTRIBUTIONS = ":c"
PORTFOLIO_SUMS = ":s"
META_ROLLED = "rolled"
META_FLOOR = "floor"
SEG_ORIGIN = ":seg:origin"
SEG_DAYS = ":seg:days"
SEG_OBS_DAYS = ":seg:obsdays"
SEG_OBS = ":obs:"  # + day
SEG_BLOB = ":seg:blob:"  # + day


def hash_tag(customer_id: str) -> str:
    """Customer id escaped so it can sit inside a ``{...}`` Redis Cluster hash tag.

    Any content is safe: braces (which would end the tag early) and the escape character
    itself are percent-encoded, so the mapping is injective.

    >>> hash_tag("acme}{1%")
    'acme%7D%7B1%25'
    """
    return customer_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def untag(tag: str) -> str:
    """Inverse of :func:`hash_tag`."""
    return tag.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def customer_of_main_key(prefix: str, key: str) -> str:
    """Customer id from a main-hash key ``{prefix}c:{<tag>}``.

    >>> customer_of_main_key("cs:", "cs:c:{acme%7D%7B1%25}")
    'acme}{1%'
    """
    return untag(key[len(prefix) + len(CUSTOMER) + 1 : -1])


def main_key_pattern(prefix_glob: str) -> str:
    """SCAN pattern of every customer's main hash (``prefix_glob``: the prefix, glob-escaped)."""
    return f"{prefix_glob}{CUSTOMER}{{*}}"


def customer_pattern(prefix: str) -> str:
    """SCAN pattern of every customer key."""
    return f"{prefix}{CUSTOMER}*"


@dataclass(frozen=True)
class CustomerKeys:
    """The Redis keys of one customer's state."""

    main: str
    days: str
    seen: str
    tickets: str
    dedupe: str
    snapshots: str
    outbox: str

    @classmethod
    def for_customer(cls, prefix: str, customer_id: str) -> "CustomerKeys":
        base = f"{prefix}{CUSTOMER}{{{hash_tag(customer_id)}}}"
        return cls(base, base + DAYS_SUFFIX, base + SEEN_SUFFIX, base + TICKETS_SUFFIX, base + DEDUPE_SUFFIX,
                   base + SNAPSHOTS_SUFFIX, base + OUTBOX_SUFFIX)

    def script_keys(self) -> list[str]:
        """The keys ``apply_events.lua`` takes, in its order."""
        return [self.main, self.days, self.seen, self.tickets, self.dedupe, self.snapshots, self.outbox]

    def all(self) -> list[str]:
        return self.script_keys()


@dataclass(frozen=True)
class Keys:
    """The deployment-wide keys under one key prefix.

    >>> k = Keys("cs:")
    >>> k.watermark, k.risk, k.model_blob(20100), k.progress("cs.activity", 3)
    ('cs:wm', 'cs:risk', 'cs:model:blob:20100', 'cs:p:{cs.activity}:3')
    """

    prefix: str

    @property
    def watermark(self) -> str:
        return self.prefix + WATERMARK

    @property
    def epoch(self) -> str:
        return self.prefix + EPOCH

    @property
    def partitioning(self) -> str:
        return self.prefix + PARTITIONING

    @property
    def risk(self) -> str:
        return self.prefix + RISK

    @property
    def labels_pending(self) -> str:
        return self.prefix + LABELS_PENDING

    @property
    def model_through(self) -> str:
        return self.prefix + MODEL_THROUGH

    @property
    def model_days(self) -> str:
        return self.prefix + MODEL_DAYS

    def model_blob(self, ref: int | str) -> str:
        return f"{self.prefix}{MODEL_BLOB}{ref}"

    @property
    def model_summary(self) -> str:
        return self.prefix + MODEL_SUMMARY

    @property
    def model_version(self) -> str:
        return self.prefix + MODEL_VERSION

    def fence(self, group: int) -> str:
        """The fence generation of a partition group: bumped by each worker it is assigned to."""
        return f"{self.prefix}{FENCE}{group}"

    def progress(self, topic: str, partition: int) -> str:
        return f"{self.prefix}{PROGRESS}{{{hash_tag(topic)}}}:{partition}"

    def customer(self, customer_id: str) -> CustomerKeys:
        return CustomerKeys.for_customer(self.prefix, customer_id)

    @property
    def portfolio(self) -> str:
        return self.prefix + PORTFOLIO


class PortfolioKeys:
    """The portfolio's keys (one hash tag, ``{pf}``: every script is Cluster-safe).

    >>> k = PortfolioKeys("cs:")
    >>> k.meta, k.obs(20100), k.meta_field(META_ROLLED, "month")
    ('cs:pf:{pf}:meta', 'cs:pf:{pf}:obs:20100', 'rolled:month')
    """

    def __init__(self, prefix: str) -> None:
        self.base = prefix + PORTFOLIO
        self.meta = self.base + PORTFOLIO_META
        self.versions = self.base + PORTFOLIO_VERSIONS
        self.seg_origin = self.base + SEG_ORIGIN
        self.seg_days = self.base + SEG_DAYS
        self.seg_obs_days = self.base + SEG_OBS_DAYS

    def contributions(self, p: Any) -> str:
        """Customer id -> its record in period ``p`` (a ``portfolio.periods.Period``)."""
        return f"{self.base}:{p.kind[0]}:{p.label}{PORTFOLIO_CONTRIBUTIONS}"

    def sums(self, p: Any) -> str:
        """``<group>:<field>`` -> sum over the records of period ``p``."""
        return f"{self.base}:{p.kind[0]}:{p.label}{PORTFOLIO_SUMS}"

    def obs(self, day: int) -> str:
        return f"{self.base}{SEG_OBS}{day}"

    def seg_blob(self, day: int) -> str:
        return f"{self.base}{SEG_BLOB}{day}"

    @staticmethod
    def meta_field(what: str, kind: str) -> str:
        return f"{what}:{kind}"


# --- numbered and prefixed fields --------------------------------------------------------------
def history_field(day: int) -> str:
    return f"{HISTORY}{day}"


def history_day(field: str) -> int | None:
    """The day of a score-history field ``h<day>``, else None."""
    return int(field[1:]) if field[:1] == HISTORY and field[1:].isdigit() else None


def churn_history_day(field: str) -> int | None:
    """The day of a churn-history field ``p<day>``, else None."""
    return int(field[1:]) if field[:1] == CHURN_HISTORY and field[1:].isdigit() else None


def day_bucket(field: str, kinds: str) -> tuple[str, int] | None:
    """``(kind, day)`` of a main-hash day bucket whose prefix is one of ``kinds`` (days before
    1970 are negative), else None.

    >>> day_bucket("t-3", TICKET_DAY + SURVEY_DAY), day_bucket("ts", TICKET_DAY)
    (('t', -3), None)
    """
    kind = field[:1]
    if kind and kind in kinds and field[1:].lstrip("-").isdigit():
        return kind, int(field[1:])
    return None


def slot_name_field(slot: int) -> str:
    return f"{ACTION_SLOT_NAME}{slot}"


def slot_count_field(slot: int) -> str:
    return f"{ACTION_SLOT_COUNT}{slot}"


def reason_field(i: int) -> str:
    """``r1`` .. ``r3``: the standing reasons of the newest score."""
    return f"{REASON}{i}"


REASON_FIELDS: tuple[str, ...] = tuple(reason_field(i) for i in range(1, REASONS + 1))


def previous_signals_field(i: int) -> str:
    return f"{PREVIOUS_SIGNALS}{i}"


def alert_last_field(kind: str) -> str:
    return ALERT_LAST + kind


def alert_last_kind(field: str) -> str | None:
    return field[len(ALERT_LAST):] if field.startswith(ALERT_LAST) else None


def is_user(member: str) -> bool:
    """A member of the last-seen hash is a user (else a feature)."""
    return member[:1] == SEEN_USER
