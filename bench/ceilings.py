"""Ceilings: how fast records can be consumed before any processing (run by ``perf.py``).

Each mode runs in its own process, consumes the input topics from offset 0 in a new
consumer group, counts records and reports progress through a ``meter.Meter`` status file:

* ``raw``: an aiokafka consumer, ``getmany`` in a loop, no processing, no commits;
* ``faust``: a Faust worker with one agent per input topic (the product's shape) that only
  counts, with acks and offset commits as usual. ``--tuned`` applies consumer and stream
  settings (``stream_app.pipeline.faust_tuning``) and may batch with ``take_events``.

    python bench/ceilings.py raw   --bootstrap 127.0.0.1:9092 --topics a,b --expect N --status s.json
    python bench/ceilings.py faust --broker kafka://127.0.0.1:9092 --topics a,b --expect N --status s.json [--tuned]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meter import Meter  # noqa: E402

#: The tuned variant's settings (chosen by measurement; see the README's Performance section).
#: ``fast_drain`` is what moves the needle; the Faust settings alone do not (see perf.py's
#: "Faust settings tuned" row); plain iteration counts cheaper than ``take_events``.
TUNED: dict[str, object] = {
    "fast_drain": True,
    "fetch_max_wait_ms": 10,
    "stream_buffer_maxsize": 65536,
    "max_poll_records": 10000,
    "max_partition_fetch_bytes": 4 * 1024 * 1024,
    "take": 0,
    "within": 0.05,
}


async def raw(bootstrap: list[str], topics: list[str], expect: int, status: str, max_records: int) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_wait_ms=100,
    )
    meter = Meter(expect, status)
    await consumer.start()
    try:
        while meter.count < expect:
            batch = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            meter.add(sum(len(v) for v in batch.values()))
    finally:
        meter.done = meter.count >= expect
        meter.write()
        await consumer.stop()


def faust_count(broker: str, topics: list[str], expect: int, status: str, tuning: dict[str, object] | None,
                rebalance_timeout: float) -> None:
    import faust

    from stream_app.pipeline.faust_tuning import FaustTuning, install

    conf = dict(tuning or {})
    take = int(conf.pop("take", 0) or 0)  # type: ignore[call-overload]
    within = float(conf.pop("within", 0.05))  # type: ignore[arg-type]
    ft = FaustTuning(**conf) if tuning is not None else None  # type: ignore[arg-type]
    app = faust.App(
        f"bench-count-{uuid.uuid4().hex[:8]}", broker=broker, store="memory://", web_enabled=False,
        consumer_auto_offset_reset="earliest", broker_rebalance_timeout=rebalance_timeout, broker_session_timeout=10,
        broker_heartbeat_interval=1, stream_wait_empty=False, logging_config=None,
        **(ft.app_kwargs() if ft else {}),
    )
    if ft is not None:
        install(app, ft)
    meter = Meter(expect, status)
    meter.extra = {"tuning": tuning or "faust defaults", "take": take}

    def agent_for() -> object:
        if take:
            async def count(stream: faust.StreamT) -> None:
                async for events in stream.take_events(take, within=within):
                    meter.add(len(events))
        else:
            async def count(stream: faust.StreamT) -> None:  # type: ignore[misc]
                async for _ in stream:
                    meter.add(1)
        return count

    for i, name in enumerate(topics):
        topic = app.topic(name, key_serializer="raw", value_serializer="raw")
        app.agent(topic, name=f"count{i}")(agent_for())  # type: ignore[arg-type]

    @app.timer(0.5)
    async def report() -> None:
        meter.write()

    sys.argv = [sys.argv[0], "worker", "--without-web", "-l", os.environ.get("BENCH_FAUST_LOG", "warning")]
    faust.Worker(app, loglevel=os.environ.get("BENCH_FAUST_LOG", "warning"), quiet=True).execute_from_commandline()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["raw", "faust"])
    ap.add_argument("--bootstrap", default="")
    ap.add_argument("--broker", default="")
    ap.add_argument("--topics", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--max-records", type=int, default=10000)
    ap.add_argument("--tuned", action="store_true", help="apply TUNED (or --tuning JSON)")
    ap.add_argument("--tuning", default=None, help="JSON object overriding TUNED's entries")
    ap.add_argument("--rebalance-timeout", type=float, default=4.0)
    args = ap.parse_args()
    topics = args.topics.split(",")
    if args.mode == "raw":
        asyncio.run(raw(args.bootstrap.split(","), topics, args.expect, args.status, args.max_records))
    else:
        tuning = None
        if args.tuned or args.tuning:
            tuning = dict(TUNED)
            tuning.update(json.loads(args.tuning or "{}"))
        faust_count(args.broker, topics, args.expect, args.status, tuning, args.rebalance_timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
