"""Portfolio KPIs over a simulated history, and what keeping them live costs per update.

Streams a simulated customer base through the in-process pipeline (the same ``Ingestor``
-> Redis -> ``Scorer`` -> ``PortfolioTracker`` path the Faust agents call, with an in-process
learner; no broker), in event-time order and batches of ``--batch`` records, then prints:

* the monthly and quarterly KPI tables and the cohort table, read from the live sums;
* the portfolio's cost: wall time inside ``PortfolioTracker.update`` per event and per
  customer update (all of it: reads, records, writes, rollovers), against the whole pipeline;
* a micro-benchmark: per customer update, the pure part (stage, segment, records) and the
  full update with its two Redis round trips, for batches of ``--micro-batch`` customers;
* with ``--verify``, the live sums against the batch reference over the same events.

    python bench/portfolio_bench.py --customers 2000 --days 365 --activity-scale 0.3 --verify --score-tick-s 3600
    python bench/portfolio_bench.py --smoke          # a few seconds

Uses REDIS_URL when set, else the local Redis; its own key prefix (deleted at the end).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stream_app.scoring.aggregates import compute_aggregates  # noqa: E402
from stream_app.pipeline.ingest import Ingestor  # noqa: E402
from stream_app.core import Record  # noqa: E402
from stream_app.portfolio.kpi_batch import EVENT_FIELDS, reference_sums  # noqa: E402
from stream_app.portfolio.periods import month_of  # noqa: E402
from stream_app.portfolio.tracker import PortfolioTracker  # noqa: E402
from stream_app.model.checkpoints import ModelHolder  # noqa: E402
from stream_app.model.features import LEVEL_FEATURE, behaviour_features, features_from  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.simulator import SimConfig, Simulator  # noqa: E402
from stream_app.state.store import StateStore  # noqa: E402


#: set by SIGTERM/SIGINT: the stream stops at the next batch and the run's keys are deleted
STOP = False


class LocalOutputs:
    """Counts what the pipeline publishes (the ingestor's inline learner learns the labels)."""

    def __init__(self) -> None:
        self.counts = {"alerts": 0, "scores": 0, "dead_letters": 0, "examples": 0}

    async def dead_letters(self, letters: list[Any]) -> None:
        self.counts["dead_letters"] += len(letters)

    async def alerts(self, alerts: list[Any]) -> None:
        self.counts["alerts"] += len(alerts)

    async def scores(self, scores: list[Any]) -> None:
        self.counts["scores"] += len(scores)

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        self.counts["examples"] += len(examples)


def sim_of(args: argparse.Namespace) -> Simulator:
    return Simulator(SimConfig(customers=args.customers, days=args.days, seed=args.seed,
                               activity_scale=args.activity_scale, start=datetime(2026, 1, 1, tzinfo=timezone.utc)))


async def stream(args: argparse.Namespace, settings: Settings, client: aioredis.Redis) -> dict[str, Any]:
    store = StateStore(client, settings)
    out = LocalOutputs()
    ing = Ingestor(store, settings, out, clock=lambda: 4_000_000_000.0)
    offsets: dict[str, int] = {}
    batch: list[Record] = []
    n = 0
    t0 = time.perf_counter()
    last_report = t0
    for e in sim_of(args).events():
        topic = settings.topic(e.topic)
        off = offsets[topic] = offsets.get(topic, -1) + 1
        batch.append(Record(topic, 0, off, orjson.dumps(e.event), off + 1))
        n += 1
        if len(batch) >= args.batch:
            await ing.handle(batch)
            batch = []
            if STOP:
                raise KeyboardInterrupt
            if time.perf_counter() - last_report > 30:
                last_report = time.perf_counter()
                print(f"  {n:,} events, {n / (last_report - t0):,.0f}/s, simulated day {e.event['ts'][:10]}",
                      file=sys.stderr, flush=True)
    if batch:
        await ing.handle(batch)
    await ing.pump()
    wall = time.perf_counter() - t0
    pf = ing.scorer.portfolio.stats
    return {
        "events": n, "wall_s": round(wall, 1), "events_per_s": round(n / wall),
        "customer_updates": pf.updates, "portfolio_s": round(pf.seconds, 2),
        "portfolio_us_per_event": round(1e6 * pf.seconds / n, 1),
        "portfolio_us_per_customer_update": round(1e6 * pf.seconds / max(1, pf.updates), 1),
        "portfolio_share_of_wall": round(pf.seconds / wall, 3),
        "records_written": pf.records_written, "rollovers": pf.rollovers, "carried": pf.carried,
        "outputs": out.counts, "scored": ing.scorer.stats.scored,
        "model": (ing.learner.model.summary() if ing.learner and ing.learner.model else {}).get("serving"),
    }


async def micro(args: argparse.Namespace, settings: Settings, client: aioredis.Redis) -> dict[str, Any]:
    """Per customer update on the final states: the pure part and the full update."""
    store = StateStore(client, settings)
    ids = sorted(await store.customer_ids(count=10**6))[: args.micro_customers]
    raws = await store.read_many(ids)
    wm = await store.watermark()
    tracker = PortfolioTracker(settings.model_copy(update={"key_prefix": settings.key_prefix + "micro:"}))
    scorecard = ing_scorecard(settings)
    model = ModelHolder(settings.sections.model, settings.key_prefix)
    prepared = []
    for raw in raws:
        now_ms = min(int(raw.main["lts"]), wm or int(raw.main["lts"]))
        agg = compute_aggregates(raw, now_ms, settings.windows_days)
        # as the scorer does it (pipeline/score.py): the day's model, then the behaviour
        # features and the population term, then the health score and the probability
        served = await model.for_day(client, now_ms // 86_400_000)
        behaviour = behaviour_features(agg, raw.main)
        health = scorecard.score(agg, served.population_percentile(behaviour.get(LEVEL_FEATURE)))
        p, _ = served.predict_one(features_from(health.signals, health.score, behaviour))
        prepared.append((raw, now_ms, agg, health, p))
    # the update writes only changed records: run each batch once to warm (first write), then
    # alternately time an update where the health moved by a point (the current period's
    # records are rewritten) and the same update again (everything read, nothing changes)
    pure: list[float] = []
    full: list[float] = []
    full_changed: list[float] = []
    for rep in range(max(2, args.micro_repeats) + 1):  # >= 2 timed rounds: one changed, one not
        for i in range(0, len(prepared), args.micro_batch):
            chunk = prepared[i : i + args.micro_batch]
            t = time.perf_counter()
            items = []
            for raw, now_ms, agg, health, p in chunk:
                shift = (rep + 1) // 2  # 0, 1, 1, 2, 2, ...: odd reps change the health, even ones repeat
                health = health.model_copy(update={"score": max(0.0, health.score - shift)})
                a = tracker.assess(agg, health, p)
                items.append(tracker.item(raw.customer_id, now_ms, raw, health, a))
            t_pure = time.perf_counter() - t
            t = time.perf_counter()
            await tracker.update(client, items, wm)
            t_full = time.perf_counter() - t
            if rep == 0:
                continue
            pure.append(t_pure / len(chunk))
            (full_changed if rep % 2 == 1 else full).append((t_full + t_pure) / len(chunk))
    # the records alone (facts from state + encode), without Redis
    from stream_app.portfolio.tracker import Meta

    meta = Meta(rolled={"month": month_of(wm or 0)})
    t = time.perf_counter()
    for _ in range(args.micro_repeats):
        for raw, now_ms, agg, health, p in prepared:
            it = tracker.item(raw.customer_id, now_ms, raw, health, tracker.assess(agg, health, p))
            tracker._records(it, tracker._plan(it, meta), {})
    records_only = (time.perf_counter() - t) / (args.micro_repeats * len(prepared))
    keys = [k async for k in client.scan_iter(match=f"{settings.key_prefix}micro:*", count=1000)]
    if keys:
        await client.delete(*keys)
    return {
        "customers": len(prepared), "batch": args.micro_batch,
        "us_assess_stage_segment": round(1e6 * statistics.median(pure), 1),
        "us_assess_plus_records_no_redis": round(1e6 * records_only, 1),
        "us_full_update_nothing_changed": round(1e6 * statistics.median(full), 1),
        "us_full_update_health_changed": round(1e6 * statistics.median(full_changed), 1),
    }


def ing_scorecard(settings: Settings) -> Any:
    from stream_app.scoring.scorecard import Scorecard, ScorecardConfig

    return Scorecard(ScorecardConfig.for_file(settings.scorecard_file))


async def portfolio_memory(settings: Settings, client: aioredis.Redis, customers: int) -> dict[str, Any]:
    """Redis MEMORY USAGE of the portfolio's keys (records, sums, meta, segments)."""
    records = sums = 0
    n_keys = 0
    async for key in client.scan_iter(match=f"{settings.key_prefix}pf:*", count=1000):
        used = int(await client.memory_usage(key, samples=0) or 0)
        n_keys += 1
        if key.endswith(b":c"):
            records += used
        else:
            sums += used
    return {"keys": n_keys, "records_bytes": records, "sums_meta_segments_bytes": sums,
            "bytes_per_customer": round((records + sums) / max(1, customers))}


async def kpi_tables(settings: Settings, client: aioredis.Redis) -> dict[str, Any]:
    t = PortfolioTracker(settings)
    months = await t.report(client, "month", 12)
    quarters = await t.report(client, "quarter", 4)
    cohorts = await t.cohorts(client)
    segments = await t.segment_reports(client, "month")
    traits = await t.describe_segments(client)
    return {
        "months": [k.model_dump(mode="json") for k in months],
        "quarters": [k.model_dump(mode="json") for k in quarters],
        "cohorts": [c.model_dump(mode="json") for c in cohorts],
        "segments": [{**i.as_dict(), "customers": segments[i.segment].customers_end if i.segment in segments else 0,
                      "mrr": segments[i.segment].mrr_end if i.segment in segments else 0,
                      "avg_health": segments[i.segment].avg_health if i.segment in segments else None}
                     for i in traits],
    }


async def verify(args: argparse.Namespace, settings: Settings, client: aioredis.Redis) -> dict[str, Any]:
    ref = reference_sums(({**e.event, "topic": e.topic} for e in sim_of(args).events()), dedupe=False)
    t = PortfolioTracker(settings)
    live = await t.sums(client, sorted(ref))
    bad: list[str] = []
    details: list[str] = []
    for p, groups in ref.items():
        got = {g: {f: v for f, v in s.items() if f in EVENT_FIELDS and v} for g, s in live[p].items()
               if g == "*" or g.startswith("c")}
        got = {g: s for g, s in got.items() if s}
        if got != groups:
            bad.append(p.label)
            for g in sorted(set(got) | set(groups)):
                a, b = got.get(g, {}), groups.get(g, {})
                for f in sorted(set(a) | set(b)):
                    if a.get(f) != b.get(f) and len(details) < 60:
                        details.append(f"{p.label} {g}:{f} live {a.get(f)} reference {b.get(f)}")
    return {"periods_compared": len(ref), "periods_different": bad, "differences": details}


ROWS = [("customers (start -> end)", lambda k: f"{k['customers_start']:,} -> {k['customers_end']:,}"),
        ("new / churned", lambda k: f"{k['new_customers']} / {k['churned_customers']}"),
        ("logo churn / retention", lambda k: pct(k["logo_churn_rate"]) + " / " + pct(k["logo_retention_rate"])),
        ("MRR end", lambda k: f"{k['mrr_end']:,.0f}"),
        ("GRR / NRR", lambda k: pct(k["grr"]) + " / " + pct(k["nrr"])),
        ("expansion (customers / MRR)", lambda k: pct(k["expansion_customer_rate"]) + " / " + pct(k["expansion_mrr_rate"])),
        ("ARPA / CLV", lambda k: f"{num(k['arpa'])} / {num(k['clv'])}"),
        ("CSAT / NPS", lambda k: pct(k["csat"]) + f" / {num(k['nps'])}"),
        ("engagement / repeat", lambda k: pct(k["engagement_rate"]) + " / " + pct(k["repeat_rate"])),
        ("avg health, g/y/r", lambda k: f"{num(k['avg_health'])}, " + "/".join(str(v) for v in k["band_mix"].values())),
        ("MRR at risk", lambda k: f"{k['mrr_at_risk']:,.0f} ({pct(k['mrr_at_risk_share'])})")]


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def num(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f}"


def markdown(kpis: list[dict[str, Any]]) -> str:
    head = "| KPI | " + " | ".join(k["period"] + ("*" if k["partial"] else "") for k in kpis) + " |"
    lines = [head, "|---" * (len(kpis) + 1) + "|"]
    for label, fn in ROWS:
        lines.append(f"| {label} | " + " | ".join(fn(k) for k in kpis) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--activity-scale", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--batch", type=int, default=500, help="records per ingest batch (BATCH_MAX)")
    ap.add_argument("--score-tick-s", type=float, default=0.0,
                    help="SCORE_TICK_S: 0 scores every event (live); e.g. 3600 for a faster backfill")
    ap.add_argument("--micro-customers", type=int, default=500)
    ap.add_argument("--micro-batch", type=int, default=100)
    ap.add_argument("--micro-repeats", type=int, default=4, help="timed rounds per batch (at least 2; an extra first one warms up)")
    ap.add_argument("--verify", action="store_true", help="compare the live sums with the batch reference")
    ap.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the Redis keys (prefix printed)")
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.days, args.activity_scale, args.micro_customers, args.micro_repeats = 30, 70, 0.05, 30, 2
        args.verify = True
    prefix = f"bench:pf:{uuid.uuid4().hex[:8]}:"
    settings = Settings(_env_file=None, redis_url=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
                        key_prefix=prefix, broker_url=None, dedupe_days=7, score_tick_s=args.score_tick_s)

    async def run() -> dict[str, Any]:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            result: dict[str, Any] = {"config": {k: getattr(args, k) for k in (
                "customers", "days", "activity_scale", "seed", "batch", "score_tick_s")}}
            print(f"streaming {args.customers} customers x {args.days} days ...", file=sys.stderr, flush=True)
            result["pipeline"] = await stream(args, settings, client)
            result["kpis"] = await kpi_tables(settings, client)
            result["memory"] = await portfolio_memory(settings, client, args.customers)
            result["micro"] = await micro(args, settings, client)
            if args.verify:
                result["verify"] = await verify(args, settings, client)
            return result
        finally:
            if not args.keep:
                keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
                for i in range(0, len(keys), 1000):
                    await client.delete(*keys[i : i + 1000])
            else:
                print(f"keys kept under {prefix}", file=sys.stderr)
            await client.aclose()

    def stop(*_: Any) -> None:
        global STOP
        STOP = True

    # SIGTERM / Ctrl-C: stop at the next batch; the run's keys are deleted in its finally
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        result = asyncio.run(run())
    except KeyboardInterrupt:
        print("stopped; keys deleted", file=sys.stderr)
        return 130
    print(json.dumps({k: v for k, v in result.items() if k != "kpis"}, indent=2))
    print("\nmonths (* = so far)\n" + markdown(result["kpis"]["months"]))
    print("\nquarters\n" + markdown(result["kpis"]["quarters"]))
    print("\ncohorts (share active after N months)")
    for c in result["kpis"]["cohorts"]:
        print(f"  {c['cohort']} n={c['size']:>5}: " + " ".join(f"{100 * r:3.0f}%" for r in c["retention"]))
    print("\nsegments")
    for s in result["kpis"]["segments"]:
        print(f"  {s['segment']}: {s['customers']} customers, MRR {s['mrr']:,.0f}, health {s['avg_health']}: "
              + "; ".join(s["traits"]))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    if args.verify and result["verify"]["periods_different"]:
        print("MISMATCH against the batch reference:", result["verify"]["periods_different"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
