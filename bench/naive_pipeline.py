"""NAIVE REFERENCE PIPELINE -- for the benchmark only, never used by the product.

The same job as the product (per-customer aggregates in Redis, a health score, a river
churn model, scores and alerts on Kafka), written the way a newcomer to Faust would write
it: Faust's defaults, one agent per input topic iterating event by event, JSON decoded
with the stdlib, one awaited Redis round trip per aggregate field written and read, a
model ``predict_proba_one`` and an awaited score publish for every event, no batching, no
pipelining, no server-side scripts. ``perf.py`` runs it on the same data as the product to
show what the product's design is worth (issue 5: product >= 5x this).

    python bench/naive_pipeline.py --broker kafka://127.0.0.1:9092 --redis redis://127.0.0.1:6379/0 \\
        --topic-prefix bench1234. --key-prefix bench:1234:naive: --expect 500000 --status s.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meter import Meter  # noqa: E402

DAY_MS = 86_400_000
WINDOWS = (7, 30, 90)


def ts_ms(value: Any) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


def build(args: argparse.Namespace) -> Any:
    import faust
    import redis.asyncio as aioredis
    from river import linear_model, preprocessing

    app = faust.App(
        f"bench-naive-{uuid.uuid4().hex[:8]}", broker=args.broker, store="memory://", web_enabled=False,
        consumer_auto_offset_reset="earliest", broker_rebalance_timeout=args.rebalance_timeout,
        broker_session_timeout=10, broker_heartbeat_interval=1, logging_config=None,
    )
    r = aioredis.Redis.from_url(args.redis)
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    scores = app.topic(f"{args.topic_prefix}naive-scores", key_serializer="raw", value_serializer="raw")
    alerts = app.topic(f"{args.topic_prefix}naive-alerts", key_serializer="raw", value_serializer="raw")
    meter = Meter(args.expect, args.status)
    p = args.key_prefix

    async def update(topic: str, e: dict[str, Any]) -> None:
        cid = e["customer_id"]
        day = ts_ms(e["ts"]) // DAY_MS
        k = f"{p}{cid}"
        await r.set(f"{k}:last_seen", day)
        if topic == "activity":
            await r.hincrby(f"{k}:days", str(day), int(e.get("count", 1)))
            if e.get("user_id"):
                await r.sadd(f"{k}:users", e["user_id"])
            if e.get("feature"):
                await r.sadd(f"{k}:features", e["feature"])
            await r.hincrby(f"{k}:actions", e.get("action", "?"), 1)
        elif topic == "tickets":
            await r.hset(f"{k}:tickets", e["ticket_id"], e["status"])
            await r.hincrby(f"{k}:ticket_counts", e["status"], 1)
        elif topic == "surveys":
            await r.hincrbyfloat(f"{k}:survey", f"{e['survey']}_sum", float(e["score"]))
            await r.hincrby(f"{k}:survey", f"{e['survey']}_n", 1)
        elif topic == "subscriptions":
            await r.hset(f"{k}:sub", "mrr", float(e.get("mrr", 0)))
            await r.hset(f"{k}:sub", "status", e["status"])

    async def aggregates(cid: str, day: int) -> dict[str, float]:
        k = f"{p}{cid}"
        out: dict[str, float] = {}
        for w in WINDOWS:  # one round trip per window
            vals = await r.hmget(f"{k}:days", [str(d) for d in range(day - w + 1, day + 1)])
            out[f"events_{w}d"] = float(sum(int(v) for v in vals if v))
        out["users"] = float(await r.scard(f"{k}:users"))
        out["features"] = float(await r.scard(f"{k}:features"))
        tickets = await r.hgetall(f"{k}:tickets")
        out["open_tickets"] = float(sum(1 for s in tickets.values() if s in (b"opened", b"reopened", b"updated")))
        nps_sum = await r.hget(f"{k}:survey", "nps_sum")
        nps_n = await r.hget(f"{k}:survey", "nps_n")
        out["nps"] = float(nps_sum) / int(nps_n) if nps_sum and nps_n else 7.0
        out["mrr"] = float(await r.hget(f"{k}:sub", "mrr") or 0)
        status = await r.hget(f"{k}:sub", "status")
        out["cancelled"] = 1.0 if status == b"cancelled" else 0.0
        return out

    def agent_for(topic_name: str) -> Any:
        async def process(stream: faust.StreamT) -> None:
            async for value in stream:
                e = json.loads(value)
                await update(topic_name, e)
                cid = e["customer_id"]
                day = ts_ms(e["ts"]) // DAY_MS
                agg = await aggregates(cid, day)
                health = min(100.0, 40 * min(1.0, agg["events_7d"] / 50) + 20 * min(1.0, agg["features"] / 8)
                             + 20 * agg["nps"] / 10 + 20 * (1 - min(1.0, agg["open_tickets"] / 5)))
                x = {**agg, "health": health}
                prob = model.predict_proba_one(x).get(True, 0.0)
                if topic_name == "subscriptions":
                    model.learn_one(x, agg["cancelled"] == 1.0)
                score = {"customer_id": cid, "ts": e["ts"], "health_score": round(health, 1),
                         "churn_probability": round(prob, 4)}
                await scores.send(key=cid.encode(), value=json.dumps(score).encode())
                if prob >= 0.25 and not agg["cancelled"]:
                    await alerts.send(key=cid.encode(), value=json.dumps({**score, "kind": "churn_risk"}).encode())
                meter.add(1)

        return process

    for name in ("activity", "tickets", "surveys", "subscriptions"):
        topic = app.topic(f"{args.topic_prefix}{name}", key_serializer="raw", value_serializer="raw")
        app.agent(topic, name=f"naive_{name}")(agent_for(name))

    @app.timer(0.5)
    async def report() -> None:
        meter.write()

    return app


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--topic-prefix", required=True)
    ap.add_argument("--key-prefix", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--status", required=True)
    ap.add_argument("--rebalance-timeout", type=float, default=4.0)
    args = ap.parse_args()
    if not args.key_prefix.startswith("bench:"):
        raise SystemExit("the naive pipeline writes only under a bench: key prefix")
    import faust

    app = build(args)
    level = os.environ.get("BENCH_FAUST_LOG", "warning")
    sys.argv = [sys.argv[0], "worker", "--without-web", "-l", level]
    faust.Worker(app, loglevel=level, quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
