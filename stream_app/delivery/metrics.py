"""The delivery service's Prometheus metrics and its small HTTP server (``/metrics``,
``/health`` on ``DELIVERY_PORT``, behind ``WEB_TOKEN`` like the worker's; ``/health`` answers its
status code to anyone).

Names follow the worker's conventions (:mod:`stream_app.ops.metrics`): ``churnstream_`` prefix,
counters in ``_total``, seconds in ``_seconds``:

* ``churnstream_deliveries_total{sink,outcome}``: ``delivered``, ``parked`` (on the undelivered
  topic), ``retried`` (an attempt that will be tried again), ``skipped`` (routing, quiet period,
  no CRM trigger), ``invalid`` (a record that is no alert; parked too);
* ``churnstream_delivery_latency_seconds{sink}``: alert produced (Kafka timestamp) -> accepted;
* ``churnstream_delivery_queue_depth{sink}``: deliveries waiting or in progress;
* ``churnstream_delivery_in_flight_alerts``: records read and not yet settled;
* ``churnstream_delivery_oldest_undelivered_age_seconds``: age of the oldest of those (0: none).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_app.ops.metrics import CONTENT_TYPE, LATENCY_BUCKETS
from stream_app.ops.security import install_token_auth, is_authenticated
from stream_app.settings import Settings


class _Gauges(Collector):
    def __init__(self, depth: Callable[[], Mapping[str, int]], in_flight: Callable[[], int],
                 oldest_ms: Callable[[], int | None]) -> None:
        self.depth, self.in_flight, self.oldest_ms = depth, in_flight, oldest_ms

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        depth = GaugeMetricFamily("churnstream_delivery_queue_depth", "Deliveries waiting or in progress, by sink",
                                  labels=["sink"])
        for sink, n in sorted(self.depth().items()):
            depth.add_metric([sink], n)
        yield depth
        flight = GaugeMetricFamily("churnstream_delivery_in_flight_alerts",
                                   "Records read from Kafka and not yet delivered to every sink or parked")
        flight.add_metric([], self.in_flight())
        yield flight
        oldest = self.oldest_ms()
        age = GaugeMetricFamily("churnstream_delivery_oldest_undelivered_age_seconds",
                                "Seconds since the oldest record in flight was produced (0: none in flight)")
        age.add_metric([], 0.0 if oldest is None else max(0.0, time.time() - oldest / 1000))
        yield age


class DeliveryMetrics:
    """The delivery process's own registry."""

    def __init__(self, depth: Callable[[], Mapping[str, int]], in_flight: Callable[[], int],
                 oldest_ms: Callable[[], int | None]) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry()
        self.deliveries = Counter("churnstream_deliveries", "Deliveries by sink and outcome",
                                  ["sink", "outcome"], registry=self.registry)
        self.latency = Histogram("churnstream_delivery_latency_seconds",
                                 "Seconds from the alert's Kafka timestamp (produced) to its acceptance by the sink",
                                 ["sink"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(_Gauges(depth, in_flight, oldest_ms))

    def outcome(self, sink: str, outcome: str, n: int = 1) -> None:
        self.deliveries.labels(sink, outcome).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(settings: Settings, metrics: DeliveryMetrics, health: Callable[[], dict[str, object]]) -> web.Application:
    """``/metrics`` and ``/health`` of the delivery process."""
    app = web.Application()
    install_token_auth(app, settings)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def health_view(request: web.Request) -> web.Response:
        data = health()
        status = 200 if data.get("status") == "ok" else 503
        return web.json_response(data if is_authenticated(request) else {"status": data.get("status")}, status=status)

    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/health", health_view)
    return app
