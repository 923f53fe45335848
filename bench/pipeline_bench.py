"""In-process pipeline benchmark: the worker's per-record code without Kafka or Faust.

Feeds a simulated history through ``Ingestor -> Scorer -> Learner`` (the code the worker
runs on every batch: decode, validate, order, apply in Redis, score, alerts, portfolio) on a
real Redis under a throwaway key prefix, exactly as ``stream-app backtest`` does, and prints
events/s, CPU seconds per 1k events and where the time went (``--profile``: cProfile's top
functions by cumulative and own time). This isolates the pipeline's own cost from Faust's
stream machinery, which ``bench/perf.py`` measures end to end.

    python bench/pipeline_bench.py --customers 500 --days 30           # ~60k events
    python bench/pipeline_bench.py --smoke                             # a few seconds
    python bench/pipeline_bench.py --customers 500 --days 30 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import git_commit  # noqa: E402

from stream_app.pipeline.clients import redis_client  # noqa: E402
from stream_app.state.store import delete_prefix  # noqa: E402
from stream_app.tools.backtest.run import run_pipeline  # noqa: E402
from stream_app.tools.backtest.history import scan_history  # noqa: E402
from stream_app.tools.embedded import EmbeddedRedis, redis_reachable  # noqa: E402
from stream_app.settings import Settings  # noqa: E402
from stream_app.tools.simulator import SimConfig, Simulator, write_jsonl  # noqa: E402


async def redis_cpu_s(client: object) -> float:
    """The Redis server's CPU seconds so far (server-wide: anything else using it counts too)."""
    info = await client.info("cpu")  # type: ignore[attr-defined]
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def run_once(path: Path, settings: Settings) -> tuple[int, float, float, float]:
    client = redis_client(settings)
    try:
        history = scan_history(path, settings)
        rcpu0 = await redis_cpu_s(client)
        cpu0, t0 = time.process_time(), time.perf_counter()
        result = await run_pipeline(path, settings, client, history)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return result.events, wall, cpu, await redis_cpu_s(client) - rcpu0
    finally:
        await delete_prefix(client, settings.key_prefix)
        await client.aclose()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=500)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--activity-scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1, help="runs on the same data (the best is reported too)")
    ap.add_argument("--smoke", action="store_true", help="tiny run (CI)")
    ap.add_argument("--profile", action="store_true", help="cProfile the (first) run")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    if args.smoke:
        args.customers, args.days = 40, 10

    embedded = None
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    if not os.environ.get("REDIS_URL") and not redis_reachable(url):
        embedded = EmbeddedRedis().start()
        url = embedded.url
    base = Settings().model_copy(update={"redis_url": url})
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "history.jsonl"
            sim = Simulator(SimConfig(customers=args.customers, days=args.days, activity_scale=args.activity_scale))
            write_jsonl(path, sim.events())
            runs: list[dict[str, float]] = []
            for i in range(args.repeat):
                settings = base.model_copy(update={"key_prefix": f"bench:pipe:{os.getpid()}:{i}:"})
                prof = cProfile.Profile() if args.profile and i == 0 else None
                if prof:
                    prof.enable()
                n, wall, cpu, rcpu = asyncio.run(run_once(path, settings))
                if prof:
                    prof.disable()
                    out = io.StringIO()
                    stats = pstats.Stats(prof, stream=out)
                    stats.sort_stats("cumulative").print_stats(25)
                    stats.sort_stats("tottime").print_stats(25)
                    print(out.getvalue())
                runs.append({"events": n, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                             "events_per_s": round(n / wall, 1), "cpu_s_per_1k": round(cpu / n * 1000, 4),
                             "redis_cpu_s_per_1k": round(rcpu / n * 1000, 4)})
                print(f"run {i + 1}: {n:,} events in {wall:.2f} s = {n / wall:,.0f} events/s; "
                      f"CPU s per 1k events: {cpu / n * 1000:.3f} this process, {rcpu / n * 1000:.3f} Redis"
                      + (" [profiled]" if prof else ""))
    finally:
        if embedded is not None:
            embedded.stop()
    best = max(runs, key=lambda r: r["events_per_s"])
    result = {"commit": git_commit(), "cores": os.cpu_count(), "customers": args.customers, "days": args.days,
              "activity_scale": args.activity_scale, "runs": runs, "best": best}
    print(json.dumps(result, indent=2))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    if best["events"] <= 0:
        print("no events processed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
