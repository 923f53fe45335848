"""Prometheus metrics of the worker (``GET /metrics``), in the Prometheus naming conventions.

Most figures already exist as the pipeline's own running counters (``Ingestor.stats``,
``Scorer.stats``), the model checkpoint's summary in Redis and the watchdog's view; a custom
collector reads them at scrape time, so the core carries no metrics code. Only what has no
counter of its own is recorded as it happens, through the ingestor's observer: records
consumed, the processing-latency histogram and agent crashes.

Every name starts with ``churnstream_``; counters end in ``_total``, durations are in
seconds (``_seconds``), timestamps are Unix seconds (``_timestamp_seconds``).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from stream_app.core import Record
    from stream_app.ops.watchdog import Report
    from stream_app.pipeline.ingest import IngestStats
    from stream_app.pipeline.scorer import ScoringStats

#: event produced -> stage reached: tens of milliseconds live, minutes during a backlog
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: the latency histogram's ``stage`` label values: handed to the ingestor; done (applied and
#: scored, alerts and scores published, or dead-lettered: the offset may be committed)
STAGE_RECEIVED = "received"
STAGE_PROCESSED = "processed"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("ok", "degraded", "stalled", "crashed")


@dataclass
class Sources:
    """Where the collector reads the pipeline's state at scrape time (None: not started yet)."""

    ingest: Callable[[], IngestStats | None]
    scoring: Callable[[], ScoringStats | None]
    alerts: Callable[[], Mapping[tuple[str, str], int]]
    model: Callable[[], Mapping[str, Any] | None]
    watchdog: Callable[[], Report | None]
    #: errors talking to Redis/the broker outside the ingestor, by component
    errors: Callable[[], Mapping[str, int]]


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


class PipelineCollector(Collector):
    """Reads the pipeline's counters, the model summary and the watchdog at scrape time."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def describe(self) -> Iterable[Metric]:
        return []  # names vary with what the pipeline has seen; collected at scrape time only

    def collect(self) -> Iterable[Metric]:
        yield from self._ingest()
        yield from self._scoring()
        yield from self._model()
        yield from self._watchdog()

    def _ingest(self) -> Iterable[Metric]:
        st = self.sources.ingest()
        by_topic = {
            "applied": ("churnstream_events_applied", "Events applied to customer state, by input topic"),
            "duplicates": ("churnstream_events_duplicates",
                           "Events ignored as re-sent duplicates (event_id seen before), by input topic"),
            "redelivered": ("churnstream_events_redelivered",
                            "Records skipped as already applied (Kafka redelivery), by input topic"),
            "dead_lettered": ("churnstream_events_dead_lettered",
                              "Invalid records published to the dead-letter topic, by input topic"),
        }
        for attr, (name, doc) in by_topic.items():
            fam = _counter(name, doc, ["topic"])
            if st is not None:
                for topic, n in sorted(getattr(st, attr).items()):
                    fam.add_metric([topic], n)
            yield fam
        batches = _counter("churnstream_batches", "Input batches fully handled")
        batches.add_metric([], st.batches if st is not None else 0)
        yield batches
        errors = _counter(
            "churnstream_dependency_errors",
            "Errors from Redis (or the broker): retried by the ingestor, skipped by the metrics' model read",
            ["component"],
        )
        errors.add_metric(["ingest"], st.redis_retries if st is not None else 0)
        for component, n in sorted(self.sources.errors().items()):
            errors.add_metric([component], n)
        yield errors

    def _scoring(self) -> Iterable[Metric]:
        st = self.sources.scoring()
        for attr, name, doc in (
            ("scored", "churnstream_customers_scored", "Customer score refreshes (health, churn probability, alerts)"),
            ("scores_published", "churnstream_scores_published", "Health snapshots published to the scores topic"),
            ("snapshots", "churnstream_label_snapshots", "Model feature snapshots taken for delayed labels"),
            ("examples", "churnstream_training_examples", "Labelled examples sent to the learner"),
        ):
            fam = _counter(name, doc)
            fam.add_metric([], getattr(st, attr) if st is not None else 0)
            yield fam
        alerts = _counter("churnstream_alerts", "Alerts published, by kind and severity", ["kind", "severity"])
        for (kind, severity), n in sorted(self.sources.alerts().items()):
            alerts.add_metric([kind, severity], n)
        yield alerts

    def _model(self) -> Iterable[Metric]:
        summary = self.sources.model()
        if not summary:
            return
        labels = _counter("churnstream_model_labels", "Resolved labels the churn model has learnt from")
        labels.add_metric([], float(summary.get("labels_seen", 0)))
        yield labels
        positives = _counter("churnstream_model_positive_labels", "... of which positive (cancelled within the horizon)")
        positives.add_metric([], float(summary.get("positives", 0)))
        yield positives
        drifts = _counter("churnstream_model_drifts", "Concept drifts detected (ADWIN) on the serving model's error")
        drifts.add_metric([], float(summary.get("drifts_detected", 0)))
        yield drifts
        auc = GaugeMetricFamily("churnstream_model_prequential_roc_auc",
                                "Prequential ROC AUC (predict, then learn; exact, over the champion rule's recent window) by model", labels=["model"])
        logloss = GaugeMetricFamily("churnstream_model_prequential_log_loss",
                                    "Prequential log loss by candidate model", labels=["model"])
        for name, m in sorted((summary.get("prequential") or {}).items()):
            if "roc_auc" in m:  # NaN: too few positives in the recent window yet
                auc.add_metric([name], math.nan if m["roc_auc"] is None else float(m["roc_auc"]))
            if m.get("log_loss") is not None:
                logloss.add_metric([name], float(m["log_loss"]))
        yield auc
        yield logloss
        version = GaugeMetricFamily("churnstream_model_checkpoint_version", "Version of the model checkpoint in Redis")
        version.add_metric([], float(summary.get("checkpoint_version") or summary.get("version") or 0))
        yield version
        ready = GaugeMetricFamily("churnstream_model_ready", "1 when enough labels are learnt for a model to compete")
        ready.add_metric([], 1.0 if summary.get("ready") else 0.0)
        yield ready
        info = GaugeMetricFamily("churnstream_model_info", "The model serving churn probabilities", labels=["serving"])
        info.add_metric([str(summary.get("serving", "unknown"))], 1.0)
        yield info

    def _watchdog(self) -> Iterable[Metric]:
        rep = self.sources.watchdog()
        lag = GaugeMetricFamily("churnstream_consumer_lag_records",
                                "Records waiting per input partition (log-end offset - next offset to process)",
                                labels=["topic", "partition"])
        age = GaugeMetricFamily("churnstream_partition_progress_age_seconds",
                                "Seconds since the partition last made progress in this process",
                                labels=["topic", "partition"])
        stalled_for = GaugeMetricFamily("churnstream_partition_stalled_seconds",
                                        "Seconds with input waiting and no progress (0 when nothing waits)",
                                        labels=["topic", "partition"])
        last_ts = GaugeMetricFamily("churnstream_last_processed_event_timestamp_seconds",
                                    "Kafka timestamp of the last record processed, Unix seconds",
                                    labels=["topic", "partition"])
        healthy = GaugeMetricFamily("churnstream_worker_healthy", "1 when the watchdog finds the worker ok, else 0")
        status = GaugeMetricFamily("churnstream_worker_status", "The watchdog's verdict (1 for the current status)",
                                   labels=["status"])
        stalled = GaugeMetricFamily("churnstream_watchdog_stalled_partitions", "Input partitions stalled now")
        stalls = _counter("churnstream_watchdog_stalls", "Times the watchdog found the worker stalled")
        exit_in = GaugeMetricFamily("churnstream_watchdog_exit_in_seconds",
                                    "Seconds until the watchdog exits the process (-1: no exit pending)")
        if rep is not None:
            for p in rep.partitions:
                key = [p.topic, str(p.partition)]
                if p.lag is not None:
                    lag.add_metric(key, p.lag)
                if p.progress_age_s is not None:
                    age.add_metric(key, p.progress_age_s)
                stalled_for.add_metric(key, p.stalled_for_s)
                if p.last_event_ts is not None:
                    last_ts.add_metric(key, p.last_event_ts)
            healthy.add_metric([], 1.0 if rep.healthy else 0.0)
            for s in STATUSES:
                status.add_metric([s], 1.0 if rep.status == s else 0.0)
            stalled.add_metric([], sum(1 for p in rep.partitions if p.stalled))
            stalls.add_metric([], rep.stalls_total)
            exit_in.add_metric([], -1.0 if rep.exit_in_s is None else rep.exit_in_s)
        yield from (lag, age, stalled_for, last_ts, healthy, status, stalled, stalls, exit_in)


class BatchHistogram(Collector):
    """A labelled histogram fed a batch of observations at a time.

    ``prometheus_client.Histogram.observe`` takes a lock and walks the buckets per call, ~5 us;
    with two stages per record that was the largest cost of the observer. This one bisects
    into plain lists (the worker observes and is scraped on one event loop) and is exposed as
    an ordinary histogram.

    >>> h = BatchHistogram("x_seconds", "doc", "stage", (0.1, 1.0))
    >>> h.observe_many("a", [0.05, 0.5, 0.5, 7.0])
    >>> [(s.name, s.labels.get("le"), s.value) for s in next(iter(h.collect())).samples][:4]
    [('x_seconds_bucket', '0.1', 1), ('x_seconds_bucket', '1.0', 3), ('x_seconds_bucket', '+Inf', 4), ('x_seconds_count', None, 4)]
    """

    def __init__(self, name: str, doc: str, label: str, buckets: Sequence[float]) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.bounds = sorted(float(b) for b in buckets)
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe_many(self, value: str, observations: Sequence[float]) -> None:
        if not observations:
            return
        counts = self._counts.get(value)
        if counts is None:
            counts = self._counts[value] = [0] * (len(self.bounds) + 1)
            self._sums[value] = 0.0
        bounds, total = self.bounds, 0.0
        for v in observations:
            v = v if v > 0 else 0.0
            counts[bisect_left(bounds, v)] += 1
            total += v
        self._sums[value] += total

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        fam = HistogramMetricFamily(self.name, self.doc, labels=[self.label])
        for value, counts in sorted(self._counts.items()):
            cumulative, acc = [], 0
            for bound, n in zip([*self.bounds, float("inf")], counts):
                acc += n
                cumulative.append((floatToGoString(bound), acc))
            fam.add_metric([value], cumulative, sum_value=self._sums[value])
        yield fam


class PipelineMetrics:
    """The worker's own registry: recorded metrics plus the scrape-time collector."""

    def __init__(self, sources: Sources) -> None:
        # In the text format, ``*_created`` series appear as extra gauge families (``..._total_created``
        # is not even a counter name); nobody scrapes them. Process-wide, and this is the worker's registry.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.consumed = Counter(
            "churnstream_events_consumed", "Records handed to the ingestor, by input topic", ["topic"],
            registry=self.registry,
        )
        self.latency = BatchHistogram(
            "churnstream_event_latency_seconds",
            "Seconds from the record's Kafka timestamp (produced) to a pipeline stage: "
            "received (handed to the ingestor), processed (applied and scored, alerts and scores published)",
            "stage", LATENCY_BUCKETS,
        )
        self.registry.register(self.latency)
        self.crashes = Counter(
            "churnstream_agent_crashes", "Agent tasks that crashed, by agent", ["agent"], registry=self.registry,
        )
        self.registry.register(PipelineCollector(sources))

    def received(self, records: Sequence[Record]) -> None:
        for topic, n in Tally(r.topic for r in records).items():
            self.consumed.labels(topic).inc(n)

    def stage(self, stage: str, timestamps_ms: Iterable[int | None], now: float) -> None:
        """Observe the latency to ``stage`` of records with these Kafka timestamps (None: skipped)."""
        now_ms = now * 1000
        self.latency.observe_many(stage, [(now_ms - t) / 1000 for t in timestamps_ms if t])

    def render(self) -> bytes:
        """The exposition text (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry)
