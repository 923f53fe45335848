"""End to end through Kafka: a simulated history -> `stream-app replay` -> broker -> worker ->
Redis; the live portfolio sums equal the batch reference over the same events, and a second
replay of the file changes nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from support.e2e import env_settings, keys_per_node, run_cli, wait_handled

from stream_app.pipeline.clients import redis_client
from stream_app.portfolio.kpi_batch import EVENT_FIELDS, reference_sums
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.tools.simulator import SimConfig, Simulator, write_jsonl



def live_sums(env: dict[str, str], periods: list[Any]) -> dict[Any, dict[str, dict[str, int]]]:
    settings = env_settings(env)

    async def read() -> Any:
        client = redis_client(settings)
        try:
            return await PortfolioTracker(settings).sums(client, periods)
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_portfolio_through_kafka_matches_the_reference(
    e2e_env: dict[str, str], worker: subprocess.Popen[bytes], tmp_path: Path  # noqa: F811
) -> None:
    sim = Simulator(SimConfig(customers=25, days=80, seed=21, activity_scale=0.02,
                              start=datetime(2026, 1, 1, tzinfo=timezone.utc)))
    path = tmp_path / "history.jsonl"
    n = write_jsonl(str(path), sim.events())
    events = [json.loads(line) for line in path.read_text().splitlines()]
    run_cli(e2e_env, "replay", str(path))
    wait_handled(e2e_env, n)
    ref = reference_sums(events)
    periods = sorted(ref)
    live = live_sums(e2e_env, periods)
    for p in periods:
        got = {g: {f: v for f, v in s.items() if f in EVENT_FIELDS} for g, s in live[p].items()
               if g == "*" or g.startswith("c")}
        assert {g: s for g, s in got.items() if s} == ref[p], p.label
    kpis = json.loads(run_cli(e2e_env, "kpis", "--json", "--periods", "3").stdout)
    assert [k["period"] for k in kpis["periods"]] == ["2026-01", "2026-02", "2026-03"]
    assert kpis["periods"][-1]["customers_end"] == ref[periods[2]]["*"]["a1"]
    # the same file again: all duplicates, nothing counted twice
    run_cli(e2e_env, "replay", str(path))
    wait_handled(e2e_env, 2 * n)
    assert live_sums(e2e_env, periods) == live
    if e2e_env["REDIS_CLUSTER"] == "true":
        per_node = keys_per_node(e2e_env)
        assert sum(1 for n in per_node.values() if n > 0) >= 2, per_node
