"""The Faust app, assembled from its parts as the data flow:

    cs.activity ┐                                ┌─> Redis: per-customer state (atomic per customer)
    cs.tickets  ├─> ingest agents ─> Ingestor ───┼─> cs.deadletter   invalid input, with reasons
    cs.surveys  │   (take_events    ordered by   ├─> cs.alerts       at-risk alerts
    cs.subscriptions┘  batches)     event time,  ├─> cs.scores       health snapshots
                                    + Scorer     └─> Redis: label snapshots ─> learner (leader timer)
                                                          ─> model checkpoints per event-time day ─> Scorer

This module only assembles: the agents and timers are in ``pipeline.runtime``, the ingestor in
``pipeline.ingest``, scoring in ``pipeline.scorer`` (rounds), ``pipeline.score`` (one customer)
and ``pipeline.commit`` (a drain's commit), operations in ``ops.health``, the dashboard in
``web.dashboard``. Resolved examples are also published to ``cs.model-examples`` as an audit
trail. Values stay raw bytes (``value_serializer="raw"``) so validation, not Faust, decides what
is bad input and a bad message can never crash the worker.
"""

from __future__ import annotations

from typing import NamedTuple

import faust

from stream_app.ops.health import Ops, mount_ops
from stream_app.pipeline.clients import broker_credentials
from stream_app.pipeline.faust_tuning import FaustTuning
from stream_app.pipeline.faust_tuning import install as install_tuning
from stream_app.pipeline.outputs import FaustOutputs
from stream_app.pipeline.runtime import Runtime, ingest_agent, wire_lifecycle
from stream_app.settings import EXAMPLES_TOPIC, INPUT_TOPICS, Settings
from stream_app.web.dashboard import mount_dashboard


class Worker(NamedTuple):
    """An assembled worker: the Faust app, the runtime its agents share, its operations."""

    app: faust.App
    runtime: Runtime
    ops: Ops


def create_worker(settings: Settings | None = None) -> Worker:
    """Assemble the worker for these settings: the Faust app (topics, agents, producer,
    consumer group), its runtime and its operations."""
    settings = settings or Settings()
    if not settings.broker_url:
        raise ValueError("broker_url: not set (BROKER_URL); `stream-app demo` starts an embedded broker")
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=broker_credentials(settings),
        store="memory://",
        web_enabled=settings.web_enabled,
        web_port=settings.web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=settings.commit_interval_s,
        producer_acks=-1,
        stream_wait_empty=False,
        logging_config=None,
    )
    install_tuning(app, FaustTuning(fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                                    fast_drain=settings.faust_fast_drain))
    topics = {
        logical: app.topic(
            settings.topic(logical),
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.topic_partitions,
        )
        for logical in INPUT_TOPICS
    }
    def out_topic(logical: str, partitions: int) -> faust.TopicT:
        return app.topic(settings.topic(logical), key_serializer="raw", value_serializer="raw", partitions=partitions)

    outputs = FaustOutputs({
        "deadletter": out_topic("deadletter", 1),
        "alerts": out_topic("alerts", settings.topic_partitions),
        "scores": out_topic("scores", settings.topic_partitions),
        "examples": out_topic(EXAMPLES_TOPIC, 1),
    })
    runtime = Runtime(settings, outputs)
    for logical, topic in topics.items():
        app.agent(topic, name=f"stream_app.ingest_{logical}")(ingest_agent(runtime))
    wire_lifecycle(app, runtime)
    ops = mount_ops(app, settings, runtime)  # /metrics, /health, watchdog, WEB_TOKEN (stream_app/ops/health.py)
    mount_dashboard(app, settings)  # the live dashboard, on the worker's web server (WEB_ENABLED)
    return Worker(app, runtime, ops)


def create_app(settings: Settings | None = None) -> faust.App:
    """The worker's Faust app (see :func:`create_worker`)."""
    return create_worker(settings).app
