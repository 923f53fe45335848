"""Fault injection against real workers (slow: run by .ci/run as its own step).

Every test replays the same simulated history (52,236 events: the issue asks for >= 50k) and compares the final Redis
state, the alerts (by id) and the score snapshots with a clean run's: equal, exactly.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.pipeline import Pipeline, diff
from stream_app.tools.embedded import EmbeddedBroker
from stream_app.tools.simulator import SimConfig, Simulator, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

HISTORY = SimConfig(customers=190, days=60, seed=21, activity_scale=0.4)  # 52,236 events


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    path = tmp_path_factory.mktemp("history") / "history.jsonl"
    n = write_jsonl(path, Simulator(HISTORY).events())
    assert n >= 50_000
    return path, n


Outcome = tuple[dict[str, Any], dict[str, dict[str, Any]], Any]


def outcome(p: Pipeline) -> Outcome:
    alerts, _ = p.alerts()
    scores, _ = p.scores()
    return p.state(), alerts, set(scores)


def assert_same(clean: Outcome, got: Outcome, dump: Path | None = None) -> None:
    state, alerts, scores = got
    if state != clean[0] and dump is not None:  # both states, for a post-mortem
        import pickle

        dump.write_bytes(pickle.dumps({"clean": clean[0], "got": state}))
        print(f"\nstates differ: both written to {dump}")
    assert state == clean[0], diff(clean[0], state)
    assert alerts == clean[1], diff(clean[1], alerts)
    assert scores == clean[2], (len(scores - clean[2]), len(clean[2] - scores))


@pytest.fixture(scope="module")
def clean(broker_url: str, redis_url: str, history: tuple[Path, int],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    path, n = history
    p = Pipeline(broker_url, redis_url, tmp_path_factory.mktemp("clean"))
    try:
        p.cli("replay", str(path))
        p.start_worker()
        p.wait_done(n)
        got = outcome(p)
        alerts, dups = p.alerts()
        assert len(alerts) > 20 and dups == 0  # a clean run publishes each alert once
        yield got
    finally:
        p.cleanup()


def test_sigkill_at_random_points_changes_nothing(broker_url: str, redis_url: str, history: tuple[Path, int],
                                                  clean: Outcome, tmp_path: Path) -> None:
    path, n = history
    p = Pipeline(broker_url, redis_url, tmp_path)
    rng = random.Random(int(os.environ.get("FAULT_SEED", "5")))
    try:
        p.cli("replay", str(path))
        kills = 0
        while kills < 10:
            proc = p.start_worker()
            if kills % 4 == 3:
                time.sleep(rng.uniform(0.5, 6.0))  # now and then during start-up
            else:
                # during processing: after a random number of further records are handled
                target = p.handled() + rng.randint(800, 4000)
                t0 = time.monotonic()
                while p.handled() < min(target, n - 1000) and time.monotonic() - t0 < 120:
                    time.sleep(0.05)
            p.kill(proc)
            kills += 1
        p.start_worker()
        p.wait_done(n)
        got = outcome(p)
        _, dup_alerts = p.alerts()
        _, dup_scores = p.scores()
        print(f"\nSIGKILL x{kills}: {n} events, {len(got[1])} alerts compared, {len(got[2])} distinct score "
              f"snapshots; re-published duplicates: {dup_alerts} alerts, {dup_scores} scores")
        assert_same(clean, got, tmp_path / "states.pkl")
    finally:
        p.cleanup()


def test_two_workers_share_then_one_takes_over(broker_url: str, redis_url: str, history: tuple[Path, int],
                                               clean: Outcome, tmp_path: Path) -> None:
    path, n = history
    p = Pipeline(broker_url, redis_url, tmp_path)
    try:
        p.cli("replay", str(path))
        a = p.start_worker()
        p.start_worker()
        t0 = time.monotonic()
        while p.handled() < n // 3 and time.monotonic() - t0 < 300:
            time.sleep(0.1)
        first_log = (tmp_path / "worker-1.log").read_text(errors="replace")
        assert min(assigned_counts(first_log), default=4) < 4, "the two workers must have shared the partitions"
        p.kill(a)  # the survivor takes over its partitions after the session timeout
        p.wait_done(n)
        survivor_log = (tmp_path / "worker-2.log").read_text(errors="replace")
        assert assigned_counts(survivor_log)[-1] == 4, "the survivor must own every partition at the end"
        got = outcome(p)
        print(f"\ntwo workers, one killed: {n} events, {len(got[1])} alerts and {len(got[0])} keys compared")
        assert_same(clean, got, tmp_path / "states.pkl")
    finally:
        p.cleanup()


def assigned_counts(log: str) -> list[int]:
    """How many partitions of the activity topic each assignment in a worker log gave it
    (Faust's table: ``| <prefix>.activity | {0, 2} |`` or ``{0-3}``)."""
    counts = []
    for text in re.findall(r"\.activity\s+\|\s+\{([0-9, -]+)\}", log):
        n = 0
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            n += int(hi or lo) - int(lo) + 1
        counts.append(n)
    return counts


def _own_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)], stdout=subprocess.DEVNULL)
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


@pytest.mark.skipif(not any(Path(d, "redis-server").exists() for d in os.environ.get("PATH", "").split(":")),
                    reason="needs a redis-server binary to stop and restart")
def test_redis_unreachable_for_30s_changes_nothing(broker_url: str, history: tuple[Path, int], clean: Outcome,
                                                   tmp_path: Path) -> None:
    path, n = history
    server, url = _own_redis(tmp_path)
    p = Pipeline(broker_url, url, tmp_path)
    try:
        p.cli("replay", str(path))
        worker = p.start_worker()
        t0 = time.monotonic()
        while p.handled() < n // 4 and time.monotonic() - t0 < 300:
            time.sleep(0.1)
        server.send_signal(signal.SIGSTOP)  # Redis hangs: every call times out
        time.sleep(30)
        assert worker.poll() is None, "the worker must wait Redis out, not crash"
        server.send_signal(signal.SIGCONT)
        p.wait_done(n)
        assert "dependency unavailable" in p.logs()
        got = outcome(p)
        print(f"\nRedis unreachable 30 s: worker kept running; {n} events, {len(got[1])} alerts and "
              f"{len(got[0])} keys compared")
        assert_same(clean, got, tmp_path / "states.pkl")
    finally:
        server.send_signal(signal.SIGCONT)
        p.cleanup()
        server.terminate()
        server.wait()


def test_broker_paused_for_30s_changes_nothing(redis_url: str, history: tuple[Path, int], clean: Outcome,
                                               tmp_path: Path) -> None:
    path, n = history
    broker = EmbeddedBroker().start()
    p = Pipeline(broker.url, redis_url, tmp_path)
    try:
        p.cli("replay", str(path))
        worker = p.start_worker()
        t0 = time.monotonic()
        while p.handled() < n // 4 and time.monotonic() - t0 < 300:
            time.sleep(0.1)
        broker.pause()
        time.sleep(30)
        broker.resume()
        p.wait_done(n)
        if worker.poll() is not None:  # it may give up on the broker; a supervisor restarts it
            p.start_worker()
            p.wait_done(n)
        got = outcome(p)
        _, dup_alerts = p.alerts()
        print(f"\nbroker paused 30 s: {len(got[1])} alerts compared, {dup_alerts} re-published")
        assert_same(clean, got, tmp_path / "states.pkl")
    finally:
        p.cleanup()
        broker.stop()


@pytest.mark.skipif(not any(Path(d, "redis-server").exists() for d in os.environ.get("PATH", "").split(":")),
                    reason="needs a redis-server binary to stop and restart")
def test_redis_restart_losing_everything_is_detected_and_rebuilt(broker_url: str, history: tuple[Path, int],
                                                                  clean: Outcome, tmp_path: Path) -> None:
    path, n = history
    server, url = _own_redis(tmp_path)
    port = url.rsplit(":", 1)[1].split("/")[0]
    p = Pipeline(broker_url, url, tmp_path)
    try:
        p.cli("replay", str(path))
        worker = p.start_worker()
        t0 = time.monotonic()
        while p.handled() < n // 3 and time.monotonic() - t0 < 300:
            time.sleep(0.1)
        server.kill()  # no persistence: it comes back empty
        server.wait()
        server = subprocess.Popen(["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        assert worker.wait(120) == 3, "the worker must stop on a lost state"
        assert "stream-app rebuild" in p.logs() and "lost" in p.logs()
        # a restarted worker refuses too: the group resumes mid-log on an empty Redis
        again = p.start_worker()
        assert again.wait(120) == 3
        out = p.cli("rebuild", "--yes")
        assert "rebuilt from" in out.stderr + out.stdout
        p.start_worker()
        p.wait_done(n)
        alerts, _ = p.alerts()
        state = p.state()
        assert_same(clean, (state, clean[1], clean[2]), tmp_path / "states.pkl")
        assert alerts == clean[1]  # the rebuild re-published nothing; the first run's alerts stand
        print(f"\nRedis restart losing everything: exit 3 twice, rebuilt; {len(state)} keys and "
              f"{len(alerts)} alerts compared")
    finally:
        p.cleanup()
        server.terminate()
        server.wait()
