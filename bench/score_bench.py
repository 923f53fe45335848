"""Per-event cost of scoring one customer (``pipeline.score.score_one``, pure code), and a
golden record to prove a faster scoring computes exactly the same.

``record``: feeds a simulated history through ``Ingestor -> Scorer -> Learner`` on a real
Redis (a throwaway key prefix, as ``stream-app backtest``), with a model that starts serving
within the history; writes every published alert and score snapshot (JSON) and the final
content of every key of the run (``--golden``), and every ``score_one`` call's inputs and
outputs (``--calls``, a pickle).

``time``: replays the recorded calls through ``score_one`` (no Redis), checks every output is
byte-identical to the recorded one, and prints microseconds per call; ``--persistent`` keeps
one state object per customer whose dicts are updated in place between its events (only the
values that changed get new ``str`` objects), as the worker's in-memory ``CustomerState`` will.

    python bench/score_bench.py record --customers 60 --days 40 --golden /tmp/g.json --calls /tmp/calls.pkl
    python bench/score_bench.py time --calls /tmp/calls.pkl [--persistent] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stream_app.core import RawCustomerState, Record
from stream_app.pipeline import scorer as scorer_module
from stream_app.pipeline.clients import redis_client
from stream_app.pipeline.ingest import Ingestor
from stream_app.pipeline.score import Scored, ScoreRules, score_one
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.settings import Settings
from stream_app.state.store import StateStore, delete_prefix
from stream_app.tools.backtest.history import ordered_records, scan_history
from stream_app.tools.simulator import SimConfig, Simulator, write_jsonl


def scored_bytes(out: Scored) -> bytes:
    """Everything ``score_one`` returned, as bytes to compare."""
    item = out.portfolio
    parts: list[Any] = [
        [a.model_dump_json() for a in out.alerts],
        out.score.model_dump_json() if out.score is not None else None,
        out.pending, out.save.encode().decode(), repr(out.risk),
        None if item is None else [item.customer_id, item.as_of_ms, repr(item.scores), repr(item.observations),
                                   item.recovered, item.raw.customer_id],
    ]
    return pickle.dumps(parts, protocol=4)


class JsonOutputs:
    def __init__(self) -> None:
        self.alerts_json: list[str] = []
        self.scores_json: list[str] = []
        self.dead = 0
        self.examples_n = 0

    async def dead_letters(self, letters: list[Any]) -> None:
        self.dead += len(letters)

    async def alerts(self, alerts: list[Any]) -> None:
        self.alerts_json.extend(a.model_dump_json() for a in alerts)

    async def scores(self, scores: list[Any]) -> None:
        self.scores_json.extend(s.model_dump_json() for s in scores)

    async def examples(self, examples: list[dict[str, Any]]) -> None:
        self.examples_n += len(examples)


async def dump_keys(client: Any, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keys = sorted([k async for k in client.scan_iter(match=f"{prefix}*", count=1000)])
    for k in keys:
        name = k.decode()[len(prefix):]
        kind = (await client.type(k)).decode()
        if kind == "hash":
            val: Any = sorted((f.decode(), v.decode(errors="replace")) for f, v in (await client.hgetall(k)).items())
        elif kind == "zset":
            val = [(m.decode(errors="replace"), s) for m, s in await client.zrange(k, 0, -1, withscores=True)]
        elif kind == "list":
            val = [v.decode(errors="replace") for v in await client.lrange(k, 0, -1)]
        elif kind == "string":
            raw = await client.get(k)
            val = hashlib.sha256(raw).hexdigest() if name.startswith("model:blob") else raw.decode(errors="replace")
        else:
            val = kind
        out[name] = val
    return out


async def record(args: argparse.Namespace) -> None:
    base = Settings().model_copy(update={"redis_url": os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
                                         "key_prefix": f"bench:score:{os.getpid()}:",
                                         "model_min_labels": 20, "model_min_positives": 1,
                                         "model_champion_margin": 0.0})
    calls: list[tuple[Any, ...]] = []
    real = scorer_module.score_one

    def capture(rules: Any, raw: RawCustomerState, now_ms: int, key: Any, triggers: Any, model: Any) -> Scored:
        copy = RawCustomerState(raw.customer_id, dict(raw.main), dict(raw.days), dict(raw.seen), dict(raw.tickets),
                                raw.dedupe_days)
        out = real(rules, raw, now_ms, key, triggers, model)
        calls.append((copy, now_ms, key, list(triggers), model, scored_bytes(out)))
        return out

    scorer_module.score_one = capture  # type: ignore[assignment]
    client = redis_client(base)
    outputs = JsonOutputs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "history.jsonl"
            write_jsonl(path, Simulator(SimConfig(customers=args.customers, days=args.days, seed=args.seed,
                                                  activity_scale=args.activity_scale)).events())
            history = scan_history(path, base)
            clock = [0.0]
            ingestor = Ingestor(StateStore(client, base), base, outputs, clock=lambda: clock[0], inline_learner=True)
            batch: list[Record] = []
            for ts, rec in ordered_records(path, history, base):
                batch.append(rec)
                clock[0] = max(clock[0], ts / 1000)
                if len(batch) >= base.batch_max:
                    await ingestor.handle(batch)
                    batch = []
            if batch:
                await ingestor.handle(batch)
            while ingestor.held() and await ingestor.pump():
                pass
            state = await dump_keys(client, base.key_prefix)
    finally:
        await delete_prefix(client, base.key_prefix)
        await client.aclose()
        scorer_module.score_one = real  # type: ignore[assignment]
    golden = {"alerts": outputs.alerts_json, "scores": outputs.scores_json, "state": state}
    text = json.dumps(golden, sort_keys=True, indent=0)
    print(f"{len(calls)} scorings, {len(outputs.alerts_json)} alerts, {len(outputs.scores_json)} snapshots, "
          f"{len(state)} keys; sha256 {hashlib.sha256(text.encode()).hexdigest()}")
    if args.golden:
        Path(args.golden).write_text(text)
    if args.calls:
        Path(args.calls).write_bytes(pickle.dumps((base, calls), protocol=pickle.HIGHEST_PROTOCOL))


def sync_into(target: RawCustomerState, source: RawCustomerState) -> None:
    """Make ``target``'s dicts equal ``source``'s in place, keeping unchanged values' objects."""
    for mine, theirs in ((target.main, source.main), (target.days, source.days), (target.seen, source.seen),
                         (target.tickets, source.tickets)):
        for f in [f for f in mine if f not in theirs]:
            del mine[f]
        for f, v in theirs.items():
            if mine.get(f) != v:
                mine[f] = v
    target.dedupe_days = source.dedupe_days


def time_calls(args: argparse.Namespace) -> None:
    settings, calls = pickle.loads(Path(args.calls).read_bytes())  # noqa: S301 - our own file
    rules = ScoreRules.of(settings.sections.scoring, PortfolioTracker(settings), settings.portfolio_enabled)
    if args.limit:
        calls = calls[:args.limit]
    best = float("inf")
    for rep in range(args.repeat):
        live: dict[str, RawCustomerState] = {}
        spent = 0.0
        mismatches = 0
        for raw, now_ms, key, triggers, model, expected in calls:
            if args.persistent:
                target = live.get(raw.customer_id)
                if target is None:
                    target = live[raw.customer_id] = RawCustomerState(raw.customer_id)
                sync_into(target, raw)
            else:
                target = RawCustomerState(raw.customer_id, dict(raw.main), dict(raw.days), dict(raw.seen),
                                          dict(raw.tickets), raw.dedupe_days)
            t0 = time.thread_time()
            out = score_one(rules, target, now_ms, key, triggers, model)
            spent += time.thread_time() - t0
            if rep == 0 and scored_bytes(out) != expected:
                mismatches += 1
                if mismatches <= 3:
                    print("MISMATCH", raw.customer_id, now_ms, file=sys.stderr)
        best = min(best, spent)
        print(f"run {rep + 1}: {len(calls)} calls, {spent / len(calls) * 1e6:.1f} us per score_one"
              + (f"; {mismatches} MISMATCHES" if rep == 0 and mismatches else ("; identical" if rep == 0 else "")))
        if rep == 0 and mismatches:
            sys.exit(1)
    print(f"best: {best / len(calls) * 1e6:.1f} us per score_one ({'persistent' if args.persistent else 'fresh'} state)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--customers", type=int, default=60)
    rec.add_argument("--days", type=int, default=40)
    rec.add_argument("--seed", type=int, default=7)
    rec.add_argument("--activity-scale", type=float, default=0.5)
    rec.add_argument("--golden", default=None)
    rec.add_argument("--calls", default=None)
    tm = sub.add_parser("time")
    tm.add_argument("--calls", required=True)
    tm.add_argument("--persistent", action="store_true")
    tm.add_argument("--repeat", type=int, default=3)
    tm.add_argument("--limit", type=int, default=0)
    args = ap.parse_args()
    if args.cmd == "record":
        asyncio.run(record(args))
    else:
        time_calls(args)


if __name__ == "__main__":
    main()
