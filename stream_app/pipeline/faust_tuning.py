"""Consumer tuning for a Faust worker, including two things Faust does not expose.

Most knobs are ordinary Faust settings (``FaustTuning.app_kwargs`` passes them to
``faust.App``). Two are not, and ``install`` changes them with a small subclass of Faust's
aiokafka consumer (faust-streaming 0.15):

* **fetch wait.** ``AIOKafkaConsumerThread._create_worker_consumer``
  (``faust/transport/drivers/aiokafka.py``) builds the aiokafka consumer with a hard-coded
  ``fetch_max_wait_ms=1500``: a fetch that finds no new records is held by the broker for
  up to 1.5 s and a record produced meanwhile waits for it, so event -> output latency sits
  at ~1-2 s at any load. ``TunedConsumerThread`` gives the consumer the configured wait
  (and optionally ``fetch_min_bytes`` / ``fetch_max_bytes``).
* **per-record hand-over.** ``Consumer._drain_messages`` passes every fetched record to
  the agents through ``wait_first``: four asyncio tasks and an ``asyncio.wait`` per record,
  more CPU than the rest of a minimal agent together. ``FastDrainConsumer`` runs that
  callback inline and falls back to ``wait_first`` only when it has to wait
  (``fast_drain``).

Neither changes consumer-group membership, offsets, acks or commits.

    app = faust.App("id", broker=..., **tuning.app_kwargs())
    install(app, tuning)          # before the worker starts

``install`` refuses a transport it does not know rather than silently doing nothing, and
``tests/pipeline/test_faust_tuning.py`` fails when Faust's copied method changes upstream.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, AsyncIterator, Coroutine, Generator, cast

import faust
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode import Service, ServiceT

#: What Faust passes to aiokafka, for reference and for the "defaults" benchmark variant.
FAUST_FETCH_MAX_WAIT_MS = 1500


@dataclass(frozen=True)
class FaustTuning:
    """Consumer and stream settings of one worker (``None``: Faust's / aiokafka's default)."""

    #: Longest time the broker may hold a fetch that has no new records (Faust: 1500).
    fetch_max_wait_ms: int = FAUST_FETCH_MAX_WAIT_MS
    #: Bytes the broker should gather before answering a fetch (aiokafka: 1).
    fetch_min_bytes: int | None = None
    #: Upper bound of one fetch response over all partitions (aiokafka: 50 MiB).
    fetch_max_bytes: int | None = None
    #: Faust ``consumer_max_fetch_size``: bytes per partition per fetch (Faust: 1 MiB).
    max_partition_fetch_bytes: int | None = None
    #: Faust ``broker_max_poll_records``: records per poll (Faust: unlimited).
    max_poll_records: int | None = None
    #: Faust ``stream_buffer_maxsize``: records an agent's stream may buffer (Faust: 4096).
    stream_buffer_maxsize: int | None = None
    #: Hand each fetched record to the agents without four tasks per record (``FastDrainConsumer``).
    fast_drain: bool = False

    def app_kwargs(self) -> dict[str, Any]:
        """The Faust settings among these, as ``faust.App`` keyword arguments."""
        kw: dict[str, Any] = {}
        if self.max_partition_fetch_bytes is not None:
            kw["consumer_max_fetch_size"] = self.max_partition_fetch_bytes
        if self.max_poll_records is not None:
            kw["broker_max_poll_records"] = self.max_poll_records
        if self.stream_buffer_maxsize is not None:
            kw["stream_buffer_maxsize"] = self.stream_buffer_maxsize
        return kw

    def consumer_overrides(self) -> dict[str, int]:
        """aiokafka consumer attributes Faust does not expose (read by ``AIOKafkaConsumer.start``)."""
        out = {"_fetch_max_wait_ms": self.fetch_max_wait_ms}
        if self.fetch_min_bytes is not None:
            out["_fetch_min_bytes"] = self.fetch_min_bytes
        if self.fetch_max_bytes is not None:
            out["_fetch_max_bytes"] = self.fetch_max_bytes
        return out


class TunedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread, building its consumer with ``tuning``'s fetch settings."""

    tuning: FaustTuning = FaustTuning()

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka keeps the constructor's fetch arguments on the consumer and hands them to
        # its Fetcher in start(), which has not run yet: setting them here is the same as
        # passing them to the constructor.
        for attr, value in self.tuning.consumer_overrides().items():
            if not hasattr(consumer, attr):
                raise RuntimeError(f"aiokafka consumer has no {attr}: faust_tuning needs updating")
            setattr(consumer, attr, value)
        return consumer


class _Resume:
    """Awaitable that finishes a coroutine whose first step already ran and yielded ``pending``.

    ``yield from`` for a coroutine that was started by hand: it re-yields what the coroutine
    waits on to whatever task drives it, and forwards results, exceptions and cancellation.
    """

    __slots__ = ("coro", "pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, to_yield = self.coro, self.pending
        while True:
            try:
                sent = yield to_yield
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - forwarded into the coroutine (cancellation too)
                try:
                    to_yield = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                to_yield = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    return await _Resume(coro, pending)


def run_eagerly(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro``'s first step now. ``(True, result)`` if it finished without waiting,
    else ``(False, awaitable)`` that finishes it (to be awaited or wrapped in a task)."""
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, _finish(coro, pending)


def install(app: faust.App, tuning: FaustTuning) -> None:
    """Make ``app``'s worker consumer use ``tuning``'s fetch settings. Call before the worker
    starts (before anything touches ``app.consumer``)."""
    if app._consumer is not None:  # noqa: SLF001 - the consumer is created lazily; too late once it exists
        raise RuntimeError("faust_tuning.install: the app's consumer already exists; call it before the worker starts")
    transport = app.transport
    if not isinstance(transport, faust_aiokafka.Transport):
        raise TypeError(f"faust_tuning.install: unsupported transport {type(transport).__name__} (aiokafka only)")
    thread_cls = type("TunedConsumerThread", (TunedConsumerThread,), {"tuning": tuning})
    bases: tuple[type, ...] = (transport.Consumer,)
    if tuning.fast_drain:
        bases = (FastDrainConsumer, *bases)

    class TunedConsumer(*bases):  # type: ignore[misc]
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return thread_cls(self, loop=self.loop, beacon=self.beacon)

    # an instance attribute: only this app's transport is affected
    transport.Consumer = TunedConsumer  # type: ignore[misc]


class FastDrainConsumer(faust_consumer.Consumer):
    """Faust's consumer with a cheaper hand-over of each fetched record to the agents.

    Faust's ``Consumer._drain_messages`` (faust-streaming 0.15.3, copied below with one
    change) awaits ``wait_first(callback(message), suspend_flow.wait())`` for every record:
    four tasks and an ``asyncio.wait`` per record, so that a callback blocked on a full agent
    buffer is abandoned when a rebalance suspends the flow. The callback almost never
    blocks: it decodes the record and puts it on the agents' queues. Here the callback's
    first step runs inline (``run_eagerly``); only if it has to wait (full buffer, flow
    suspended, producer back-pressure) does the rest go through ``wait_first`` exactly as
    before. Records, offsets, acks, gaps and commits are handled as in Faust.
    """

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover - run by the worker
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator, getmany(timeout=1.0))
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            if gap > 1 and r_offset:
                                acks_enabled = acks_enabled_for(message.topic)
                                if acks_enabled:
                                    await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None:
                                if self._n_acked >= commit_every:
                                    self._n_acked = 0
                                    await self.commit()
                            # the one change: the callback's first step runs inline
                            finished, rest = run_eagerly(callback(message))
                            if not finished:
                                await self.wait_first(rest, self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)
