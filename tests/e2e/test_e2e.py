"""End to end: JSON Lines -> `stream-app replay` -> Kafka -> Faust worker -> Redis -> `stream-app customer`.

A real worker process (``stream-app worker``) runs against the test broker and Redis with
its own topic prefix, key prefix and consumer group; on the plain Redis and on a three-node
Redis Cluster (``tests/e2e/conftest.py``), with the same assertions.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from support.e2e import build_file, customer_json, keys_per_node, run_cli, wait_handled
from stream_app.read.topics import read_topic

def test_replay_file_end_to_end(e2e_env: dict[str, str], worker: subprocess.Popen[bytes], tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    n_lines, invalid = build_file(path)
    out = run_cli(e2e_env, "replay", str(path))
    assert f"produced {n_lines} events" in out.stderr, out.stderr
    wait_handled(e2e_env, n_lines)
    assert worker.poll() is None, "the worker must survive bad input"

    acme = customer_json(e2e_env, "acme")
    w7, w30 = acme["windows"]["7d"], acme["windows"]["30d"]
    assert w7["activity_events"] == 10 and w7["active_users"] == 2 and w7["activity_duration_s"] == 300
    assert w30["activity_events"] == 14 and w30["actions"] == {"login": 10, "export": 4}
    assert w7["tickets_opened"] == 1 and w7["tickets_resolved"] == 1 and w7["mean_time_to_resolve_h"] == 3.0
    assert acme["open_tickets"] == 0
    assert w7["nps_detractors"] == 1 and acme["last_nps"] == 3
    assert acme["mrr"] == 400.0 and acme["subscription_status"] == "started"
    assert acme["duplicates_ignored"] == 2
    assert acme["events_applied"] == 15
    assert customer_json(e2e_env, "globex")["mrr"] == 90.0

    bootstrap = e2e_env["BROKER_URL"].split("://")[1]
    letters = asyncio.run(read_topic(bootstrap, e2e_env["TOPIC_PREFIX"] + "deadletter"))
    assert len(letters) == len(invalid)
    got = sorted((d["topic"].split(".", 1)[1], d["errors"][0]["rule"]) for d in letters)
    assert got == sorted(invalid)
    for d in letters:
        assert d["error"] and (d["payload_text"] or d["payload_base64"]) and d["partition"] >= 0

    # health, alerts and score snapshots on their topics, per the contract
    assert 0 <= acme["health"]["health_score"] <= 100 and acme["health"]["health_band"] in ("green", "yellow", "red")
    assert acme["health"]["model_version"] == "prior-health-v1"
    alerts = asyncio.run(read_topic(bootstrap, e2e_env["TOPIC_PREFIX"] + "alerts"))
    detractor = [a for a in alerts if a["kind"] == "detractor"]
    assert len(detractor) == 1 and detractor[0]["customer_id"] == "acme"
    from schemas import Alert, ScoreSnapshot

    assert all(Alert.model_validate(a) for a in alerts)
    scores = asyncio.run(read_topic(bootstrap, e2e_env["TOPIC_PREFIX"] + "scores"))
    assert {s["customer_id"] for s in scores} == {"acme", "globex"}
    assert all(ScoreSnapshot.model_validate(s) for s in scores)
    top = json.loads(run_cli(e2e_env, "top", "--n", "5", "--json").stdout)
    assert {r["customer_id"] for r in top} == {"acme", "globex"}
    assert top == sorted(top, key=lambda r: -r["churn_probability"])
    assert json.loads(run_cli(e2e_env, "model", "--json").stdout)["serving"] == "prior-health-v1"

    # replaying the same file again changes nothing but the duplicate counters
    before = {k: v for k, v in acme.items() if k != "duplicates_ignored"}
    run_cli(e2e_env, "replay", str(path))
    wait_handled(e2e_env, 2 * n_lines)
    again = customer_json(e2e_env, "acme")
    assert again["duplicates_ignored"] == 2 + 15 + 2
    assert {k: v for k, v in again.items() if k != "duplicates_ignored"} == before
    assert len(asyncio.run(read_topic(bootstrap, e2e_env["TOPIC_PREFIX"] + "alerts"))) == len(alerts)
    if e2e_env["REDIS_CLUSTER"] == "true":
        # the state really is spread: several nodes hold some of this run's keys
        per_node = keys_per_node(e2e_env)
        assert sum(1 for n in per_node.values() if n > 0) >= 2, per_node
