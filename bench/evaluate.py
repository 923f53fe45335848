"""Evaluate scores, model and alerts against the simulator's ground truth, through the real pipeline.

    python bench/evaluate.py --customers 2000 --days 180 --json-out eval.json

Simulates a customer base (latent health, shocks, cancellations), replays it through Kafka
-> Faust worker -> Redis, then reads ``cs.alerts`` and the model checkpoint and reports:
the prequential ROC AUC / log loss of each candidate model and of the health prior, the
precision of ``churn_risk`` alerts (the customer cancelled within the label horizon after
the alert), the share of cancellations preceded by an alert, and the median lead time
(days from the first alert of the episode to the cancellation).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stack import Stack  # noqa: E402

from stream_app.model.evaluation import alert_metrics  # noqa: E402
from stream_app.tools.simulator import SimConfig, Simulator, write_jsonl  # noqa: E402

DAY = 86_400_000


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def cancellations_of(truth: list[Any]) -> dict[str, int]:
    """Customer -> epoch ms of its (first) cancellation, from the simulator's ground truth."""
    return {t.customer_id: ms(t.cancelled_ts) for t in truth if t.cancelled_ts}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--customers", type=int, default=2000)
    ap.add_argument("--days", type=int, default=180)
    ap.add_argument("--activity-scale", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--rate", type=float, default=None,
                    help="replay events/s; below the pipeline's capacity no backlog forms, as in live operation")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    with Stack() as stack:
        sim = Simulator(SimConfig(customers=args.customers, days=args.days, seed=args.seed,
                                  activity_scale=args.activity_scale))
        data = stack.tmp / "history.jsonl"
        t0 = time.monotonic()
        n = write_jsonl(data, sim.events())
        truth = sim.truth()
        print(f"simulated {n} events for {args.customers} customers x {args.days} days in {time.monotonic() - t0:.0f}s",
              flush=True)
        startup = stack.start_worker()
        t0 = time.monotonic()
        stack.replay(data, rate=args.rate)
        stack.wait_handled(n + 1, timeout=5400)
        elapsed = time.monotonic() - t0
        print(f"pipeline handled {n} events in {elapsed:.0f}s ({n / elapsed:,.0f}/s)", flush=True)
        # let the learner drain the last examples and checkpoint
        import redis

        r = redis.Redis.from_url(stack.settings.redis_url)
        last, stable = None, 0
        while stable < 4:
            v = r.get(f"{stack.settings.key_prefix}model:version")
            stable = stable + 1 if v == last else 0
            last = v
            time.sleep(2)
        summary = json.loads(r.get(f"{stack.settings.key_prefix}model:summary") or b"{}")
        alerts = asyncio.run(stack.read_topic("alerts"))
        horizon = stack.settings.label_horizon_days
        kinds = sorted({a["kind"] for a in alerts})
        start = {t.customer_id: ms(t.start_ts) for t in truth}
        onboarding = sum(1 for a in alerts if a["kind"] == "churn_risk"
                         and ms(a["ts"]) - start.get(a["customer_id"], 0) < 14 * DAY)
        if args.json_out:
            Path(args.json_out).with_suffix(".alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in alerts))
        result = {
            "customers": args.customers,
            "days": args.days,
            "events": n,
            "worker_startup_s": round(startup, 1),
            "replay_rate": args.rate,
            "pipeline_events_per_s": round(n / elapsed),
            "model": summary,
            "alerts_by_kind": {k: sum(1 for a in alerts if a["kind"] == k) for k in kinds},
            "churn_risk": alert_metrics(alerts, cancellations_of(truth), "churn_risk", horizon),
            "churn_risk_alerts_in_first_14_days_of_tenure": onboarding,
            "any_alert": alert_metrics([{**a, "kind": "any"} for a in alerts if a["kind"] != "detractor"],
                                       cancellations_of(truth), "any", horizon),
            "model_versions_in_alerts": sorted({a["model_version"].rsplit("-v", 1)[0] for a in alerts}),
        }
        print(json.dumps(result, indent=2))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
