"""Scale-out of a running deployment on the Tansu broker: 2 -> 6 partitions with a worker process.

Tansu cannot add partitions (it does not implement CreatePartitions), so this runs the
new-topics path of ``stream-app partitions migrate``; the add-partitions path differs only in
how the partitions come to exist. A customer's offsets in its hash must be forgotten there: the
new topics' offsets restart at 0 and most customers keep their partition number, so without it
their first new records would be taken for redeliveries and dropped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import redis

from stream_app.state import layout
from stream_app.state.layout import Keys
from support.e2e import HOUR, T0_MS, line, run_cli, wait_handled

CUSTOMERS = [f"cust-{i:02d}" for i in range(24)]


def start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "stream_app.tools.cli", "worker"], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def events(phase: int) -> list[str]:
    out = []
    for i, c in enumerate(CUSTOMERS):
        base = T0_MS + phase * 48 * HOUR
        if phase == 0:
            out.append(line("subscriptions", f"{c}-b", c, base, status="started", mrr=100 + i, plan="growth"))
        for k in range(3 + i % 3):
            out.append(line("activity", f"{c}-a{phase}-{k}", c, base + k * HOUR + i, action="login", user_id="u1"))
        if phase == 1:  # a producer retry of an event already applied before the migration
            out.append(line("activity", f"{c}-a0-0", c, T0_MS + i, action="login", user_id="u1"))
    return out


def test_migrate_two_to_six_partitions_loses_and_double_counts_nothing(
        e2e_env: dict[str, str], tmp_path: Path) -> None:
    old = {**e2e_env, "TOPIC_PARTITIONS": "2"}
    new = {**e2e_env, "TOPIC_PARTITIONS": "6", "TOPIC_PREFIX": "n" + e2e_env["TOPIC_PREFIX"]}
    first, second = events(0), events(1)
    (tmp_path / "one.jsonl").write_text("\n".join(first) + "\n")
    (tmp_path / "two.jsonl").write_text("\n".join(second) + "\n")
    run_cli(old, "replay", str(tmp_path / "one.jsonl"))
    worker = start(old, tmp_path / "worker-old.log")
    try:
        wait_handled(old, len(first))
        check = run_cli(old, "partitions", "check", check=False)
        assert check.returncode == 0, check.stderr  # drained; the worker still runs
        assert "member(s)" in check.stderr
        refused = run_cli(old, "partitions", "migrate", "--to", "6", "--new-topic-prefix", new["TOPIC_PREFIX"],
                          check=False)
        assert refused.returncode == 1 and "stop every worker" in refused.stderr, refused.stderr
    finally:
        stop(worker)
    # Tansu 0.6 never drops a departed member from the group (measured: still "Stable" with it
    # after 20 s, past SESSION_TIMEOUT_S): the operator vouches with --workers-stopped
    stopped = "--workers-stopped"

    # this broker cannot add partitions: refused, nothing changed, the new-topics path named
    refused = run_cli(old, "partitions", "migrate", "--to", "6", stopped, check=False)
    assert refused.returncode == 1 and "cannot add partitions" in refused.stderr, refused.stderr
    assert "--new-topic-prefix" in refused.stderr
    done = run_cli(old, "partitions", "migrate", "--to", "6", "--new-topic-prefix", new["TOPIC_PREFIX"], stopped,
                   check=False)
    assert done.returncode == 0, done.stderr
    assert "forgot the old topics' offsets of 24 customers" in " ".join(done.stderr.split())
    again = run_cli(old, "partitions", "migrate", "--to", "6", "--new-topic-prefix", new["TOPIC_PREFIX"], stopped)
    assert "nothing to do" in again.stderr  # idempotent

    # the old topics with the new count: the worker refuses at start, naming both and the command
    wrong = subprocess.run([sys.executable, "-m", "stream_app.tools.cli", "worker"], env={**old, "TOPIC_PARTITIONS": "6"},
                           capture_output=True, text=True, timeout=120)
    message = " ".join(wrong.stderr.split())
    assert wrong.returncode == 2, wrong.stderr
    assert "has 2 partitions but TOPIC_PARTITIONS=6" in message and "stream-app partitions migrate --to 6" in message

    run_cli(new, "replay", str(tmp_path / "two.jsonl"))
    worker = start(new, tmp_path / "worker-new.log")
    try:
        wait_handled(new, len(second))
    finally:
        stop(worker)

    # the Redis the worker wrote to: the test Redis, or the cluster of the cluster variant
    on_cluster = e2e_env["REDIS_CLUSTER"] == "true"
    r = (redis.RedisCluster.from_url(e2e_env["REDIS_URL"]) if on_cluster else redis.Redis.from_url(e2e_env["REDIS_URL"]))
    keys = Keys(e2e_env["KEY_PREFIX"])
    expected = {c: 0 for c in CUSTOMERS}
    for text in first + second:
        event = json.loads(text)
        expected[event["customer_id"]] += 1
    for c in CUSTOMERS:
        expected[c] -= 1  # the re-sent event
    for c in CUSTOMERS:
        main = r.hgetall(keys.customer(c).main)
        assert int(main[layout.EVENTS.encode()]) == expected[c], c  # nothing lost
        assert int(main[layout.DUPLICATES.encode()]) == 1, c  # the re-sent one counted once
        assert layout.HEALTH_SCORE.encode() in main, c  # scored
    # the new partitions took records: the scale-out is real
    used = [p for p in range(6) if int(r.hget(keys.progress(new["TOPIC_PREFIX"] + "activity", p), layout.PROGRESS_OFFSET)
                                       or -1) >= 0]
    assert any(p >= 2 for p in used), used
    assert r.get(keys.partitioning) == f"{new['TOPIC_PREFIX']}|6".encode()
    r.close()
