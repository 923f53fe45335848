"""Changing the number of partitions of a running deployment (``stream-app partitions``), and the
worker's start-up check that the topics and the Redis state match ``TOPIC_PARTITIONS``.

Why a migration at all: a customer's events are keyed by customer id, so the partition is
``hash(id) % partitions``. More partitions move most customers to another partition number for
new records, while their older records stay where they were. A customer must never be processed
from two partitions at the same time (its events would be applied out of order, and a worker
that owns its customers' state in memory would lose updates), so the cut-over is:

1. producers stopped (or, with new topics, already writing to the new topics only), and every
   record of every old partition handled (Redis progress covers it): ``check``;
2. every worker stopped (the consumer group has no member);
3. ``migrate``: the partitions are added (Kafka ``CreatePartitions``), or, on a broker that
   cannot add partitions, a new generation of topics is created under another topic prefix and
   the customers' per-topic source offsets are forgotten (offsets restart at 0 there); each new
   partition gets a progress placeholder and a committed offset at its start; Redis records the
   topics the state is now built on;
4. workers restarted with ``TOPIC_PARTITIONS`` (and ``TOPIC_PREFIX``) set to the new values;
   producers restarted (a running producer keeps its old partition count until its metadata
   refreshes, up to ``metadata.max.age.ms``).

The check never trusts the broker's end offsets (wrong on the Tansu broker the tests use): it
fetches from each partition's first unhandled offset and looks for a record.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions
from aiokafka.errors import IncompatibleBrokerVersion, KafkaConnectionError, UnsupportedVersionError
from aiokafka.structs import TopicPartition

from stream_app.settings import INPUT_TOPICS, Settings, all_topics
from stream_app.state.partitions import (Partitioning, forget_source_offsets, handled_offsets, prepare_progress,
                                         read_partitioning, write_partitioning)
from stream_app.state.store import StateStore
from stream_app.tools.embedded import ensure_topics

log = logging.getLogger(__name__)

TP = tuple[str, int]
#: logical topics that have ``TOPIC_PARTITIONS`` partitions (the others have one)
PARTITIONED = (*INPUT_TOPICS, "alerts", "scores")


class MigrationRefused(Exception):
    """The migration cannot run now; the message says why and what to do."""


def partitioned_topics(settings: Settings) -> list[str]:
    return [settings.topic(t) for t in PARTITIONED]


def input_topics(settings: Settings) -> list[str]:
    return [settings.topic(t) for t in INPUT_TOPICS]


def migrate_command(target: int) -> str:
    return f"stream-app partitions migrate --to {target}"


# --- the broker ------------------------------------------------------------------------------
async def partition_counts(settings: Settings, topics: list[str]) -> dict[str, int | None]:
    """Each topic's partition count on the broker (None: the topic does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs())
    await admin.start()
    try:
        # only topics that exist: describing a missing one may create it (auto-creation)
        existing = [t for t in topics if t in set(await admin.list_topics())]
        found = {t["topic"]: (None if t.get("error_code") else len(t["partitions"]))
                 for t in (await admin.describe_topics(existing) if existing else [])}
    finally:
        await admin.close()
    return {t: found.get(t) for t in topics}


async def first_unhandled(settings: Settings, nexts: dict[TP, int], wait_s: float = 3.0) -> dict[TP, int]:
    """Per partition, the offset of a record at or after ``nexts[tp]`` (absent: none there). A
    returned offset below ``nexts[tp]`` means the log ends before it (the fetch was reset)."""
    if not nexts:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                **settings.kafka_client_kwargs())
    await consumer.start()
    found: dict[TP, int] = {}
    try:
        tps = {TopicPartition(*tp): off for tp, off in nexts.items()}
        consumer.assign(list(tps))
        for tp, off in tps.items():
            consumer.seek(tp, max(off, 0))
        deadline = asyncio.get_running_loop().time() + wait_s
        while len(found) < len(tps) and asyncio.get_running_loop().time() < deadline:
            for tp, msgs in (await consumer.getmany(timeout_ms=200)).items():
                if msgs and (tp.topic, tp.partition) not in found:
                    found[(tp.topic, tp.partition)] = msgs[0].offset
                    consumer.pause(tp)
    finally:
        await consumer.stop()
    return found


async def group_members(settings: Settings) -> int | None:
    """Members of the worker's consumer group (None: the broker did not say)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs())
    await admin.start()
    try:
        groups = (await admin.describe_consumer_groups([settings.app_id]))[0].groups
        return len(groups[0][5]) if groups and not groups[0][0] else None
    except Exception as exc:  # noqa: BLE001 - an answer we cannot read is "unknown", reported as such
        log.warning("describe_consumer_groups: %s", exc)
        return None
    finally:
        await admin.close()


async def commit_starts(settings: Settings, tps: list[TP]) -> None:
    """Commit offset 0 for each partition the group has no committed offset for, so the workers
    start new partitions at their first record whatever the offset-reset policy."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), group_id=settings.app_id,
                                enable_auto_commit=False, **settings.kafka_client_kwargs())
    await consumer.start()
    try:
        todo = {}
        for topic, p in tps:
            tp = TopicPartition(topic, p)
            if await consumer.committed(tp) is None:
                todo[tp] = 0
        if todo:
            consumer.assign(list(todo))
            await consumer.commit(todo)
    finally:
        await consumer.stop()


# --- the safety check ------------------------------------------------------------------------
Tails = Callable[[Settings, dict[TP, int]], Awaitable[dict[TP, int]]]
Members = Callable[[Settings], Awaitable[int | None]]


@dataclass
class Safety:
    """Whether the input partitions are fully handled and the workers stopped."""

    counts: dict[str, int | None]
    handled: dict[TP, int] = field(default_factory=dict)
    #: partition -> first record not handled
    pending: dict[TP, int] = field(default_factory=dict)
    #: partition -> offset the log really ends at or before (Redis progress is past it)
    past_end: dict[TP, int] = field(default_factory=dict)
    members: int | None = None

    @property
    def drained(self) -> bool:
        return not self.pending and not self.past_end

    @property
    def workers_stopped(self) -> bool:
        return self.members == 0

    def lines(self) -> list[str]:
        out = []
        for (topic, p), first in sorted(self.pending.items()):
            out.append(f"{topic}[{p}]: handled through offset {self.handled[(topic, p)]}, "
                       f"but offset {first} is not handled yet")
        for (topic, p), first in sorted(self.past_end.items()):
            out.append(f"{topic}[{p}]: Redis progress says offset {self.handled[(topic, p)]} is handled but the "
                       f"log holds only up to {first}: the topic was recreated or truncated (`stream-app rebuild`)")
        if self.members is None:
            out.append("the consumer group's members are unknown (the broker did not say): make sure every worker is stopped")
        elif self.members:
            out.append(f"the consumer group has {self.members} member(s): stop every worker (a killed worker stays a "
                       "member until its session times out, SESSION_TIMEOUT_S; a broker that never drops departed "
                       "members, such as Tansu 0.6, needs --workers-stopped once they are)")
        return out


async def assess(settings: Settings, store: StateStore, counts: dict[str, int | None],
                 tails: Tails = first_unhandled, members: Members = group_members) -> Safety:
    """Every record of every existing input partition handled (by Redis progress), and the
    consumer group's members."""
    tps = [(t, p) for t in input_topics(settings) for p in range(counts.get(t) or 0)]
    safety = Safety(counts, handled=await handled_offsets(store, tps))
    for tp, first in (await tails(settings, {tp: h + 1 for tp, h in safety.handled.items()})).items():
        if first <= safety.handled[tp]:
            safety.past_end[tp] = first
        else:
            safety.pending[tp] = first
    safety.members = await members(settings)
    return safety


# --- the migration ---------------------------------------------------------------------------
@dataclass
class Migration:
    before: Partitioning
    after: Partitioning
    already: bool = False
    added: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic -> (from, to)
    created: list[str] = field(default_factory=list)
    forgotten: int = 0
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


async def migrate(settings: Settings, store: StateStore, target: int, new_prefix: str | None = None,
                  tails: Tails = first_unhandled, members: Members = group_members,
                  workers_stopped: bool = False) -> Migration:
    """Move the deployment to ``target`` partitions (see the module's docstring); idempotent.
    ``workers_stopped``: the operator vouches for it (the broker keeps departed members).
    Raises ``MigrationRefused`` when it is not safe now or not possible on this broker."""
    redis = store.redis
    counts = await partition_counts(settings, partitioned_topics(settings))
    missing = [t for t in input_topics(settings) if counts[t] is None]
    if missing:
        raise MigrationRefused(f"the input topics {missing} do not exist: nothing to migrate (a new deployment "
                               f"creates its topics with TOPIC_PARTITIONS partitions)")
    current = max(n for n in counts.values() if n is not None)
    before = Partitioning(settings.topic_prefix, current)
    after = Partitioning(new_prefix if new_prefix is not None else settings.topic_prefix, target)
    new_settings = settings.model_copy(update={"topic_prefix": after.topic_prefix, "topic_partitions": target})
    new_settings.__dict__.pop("input_topics", None)  # a cached property of the old prefix
    marker = await read_partitioning(redis, settings.key_prefix)
    report = Migration(before, after)
    if new_prefix is not None and marker == after or new_prefix is None and marker in (None, after) and all(
            n == target for n in counts.values() if n is not None):
        await prepare_progress(store, input_topics(new_settings), target)
        await write_partitioning(redis, settings.key_prefix, after)
        report.already = True
        return report
    if new_prefix is None and current > target:
        raise MigrationRefused(f"the topics have {current} partitions: Kafka cannot take partitions away "
                               f"(--to {target}); move to new topics with --new-topic-prefix")
    if new_prefix == settings.topic_prefix:
        raise MigrationRefused("--new-topic-prefix must differ from TOPIC_PREFIX")
    if new_prefix is not None:
        existing = await partition_counts(new_settings, partitioned_topics(new_settings))
        wrong = {t: n for t, n in existing.items() if n is not None and n != target}
        if wrong:
            raise MigrationRefused(f"new topics already exist with another partition count: {wrong}")
    safety = await assess(settings, store, counts, tails, members)
    if workers_stopped:
        safety.members = 0
    if not safety.drained or not safety.workers_stopped:
        raise MigrationRefused("not safe now:\n  " + "\n  ".join(safety.lines()))
    if new_prefix is None:
        # (all there already: a migration interrupted after adding them, or partitions added by hand)
        report.added = {t: (n, target) for t, n in counts.items() if n is not None and n < target}
        if report.added:
            await _add_partitions(settings, {t: target for t in report.added})
    else:
        report.created = list(all_topics(new_settings))
        await ensure_topics(new_settings.bootstrap_servers(), all_topics(new_settings), settings.topic_replication,
                            settings.kafka_client_kwargs())
        report.forgotten = await forget_source_offsets(redis, settings.key_prefix)
    await prepare_progress(store, input_topics(new_settings), target)
    old = marker.partitions if marker is not None and marker.topic_prefix == settings.topic_prefix else current
    fresh = [(t, p) for t in input_topics(new_settings) for p in range(target) if new_prefix is not None or p >= old]
    try:
        await asyncio.wait_for(commit_starts(new_settings, fresh), 15)
    except Exception as exc:  # noqa: BLE001 - the worker starts a partition without offsets at its start anyway
        report.notes.append(f"could not commit the new partitions' start offsets ({type(exc).__name__}); the "
                            "workers start them at their first record (auto offset reset: earliest)")
    await write_partitioning(redis, settings.key_prefix, after)
    if new_prefix is None:  # a producer that kept writing with the old count shows as new old-partition records
        late = await tails(settings, {tp: h + 1 for tp, h in safety.handled.items()})
        if late:
            report.warnings.append(
                f"{len(late)} old partition(s) received records during the migration: a producer is still running "
                "with the old partition count; stop it and restart it (its customers may be split)")
    return report


async def _add_partitions(settings: Settings, targets: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers(), **settings.kafka_client_kwargs())
    await admin.start()
    try:
        await admin.create_partitions({t: NewPartitions(n) for t, n in targets.items()})
    except (IncompatibleBrokerVersion, UnsupportedVersionError, KafkaConnectionError) as exc:
        raise MigrationRefused(
            f"this broker cannot add partitions (CreatePartitions: {type(exc).__name__}); move to new topics "
            f"instead: the same command with --new-topic-prefix <prefix> (nothing was changed)") from exc
    finally:
        await admin.close()
    for _ in range(100):  # metadata can lag a moment
        counts = await partition_counts(settings, list(targets))
        if all(counts[t] == n for t, n in targets.items()):
            return
        await asyncio.sleep(0.1)
    raise MigrationRefused(f"the broker accepted the new partitions but still reports {counts}")


# --- the worker's start-up check ------------------------------------------------------------
async def preflight(settings: Settings, redis: Any) -> list[str]:
    """Problems that must stop a worker before it starts: topics whose partition count is not
    ``TOPIC_PARTITIONS``, or Redis state built on other topics. Records the topics on a first
    start (and for deployments from before the record existed)."""
    n = settings.topic_partitions
    counts = await partition_counts(settings, partitioned_topics(settings))
    problems = []
    for topic, actual in counts.items():
        if actual is None or actual == n:
            continue
        if actual < n:
            problems.append(f"{topic} has {actual} partitions but TOPIC_PARTITIONS={n}: to scale out to {n}, "
                            f"follow docs/operations.md \"Changing the number of partitions\" "
                            f"(`stream-app partitions check`, then `{migrate_command(n)}`), or set "
                            f"TOPIC_PARTITIONS={actual} to keep running as before")
        else:
            problems.append(f"{topic} has {actual} partitions but TOPIC_PARTITIONS={n}: set TOPIC_PARTITIONS="
                            f"{actual} (partitions added outside `{migrate_command(actual)}` need that command "
                            f"before any worker starts)")
    want = Partitioning(settings.topic_prefix, n)
    marker = await read_partitioning(redis, settings.key_prefix)
    if marker is not None and marker != want:
        problems.append(
            f"the Redis state under KEY_PREFIX={settings.key_prefix!r} was built on the topics "
            f"{marker.topic_prefix!r}* with {marker.partitions} partitions, but the settings name "
            f"{want.topic_prefix!r}* with {n}: run `{migrate_command(n)}` (with --new-topic-prefix for new topics) "
            f"under the old settings first, or correct TOPIC_PREFIX/TOPIC_PARTITIONS")
    if not problems and marker is None:
        await write_partitioning(redis, settings.key_prefix, want, only_if_missing=True)
    return problems


__all__ = ["MigrationRefused", "Migration", "Safety", "assess", "migrate", "preflight", "partition_counts",
           "first_unhandled", "group_members"]
