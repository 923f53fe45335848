"""``stream-app deliver``: the delivery service, its dry run and a test message per sink."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from datetime import datetime, timezone

import aiohttp
import click
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.markup import escape

from schemas import Alert, Reason
from stream_app.delivery.config import DeliveryConfig, DeliveryConfigError, SlackSink, load_config
from stream_app.delivery.routing import Context
from stream_app.delivery.service import DeliveryService, parse
from stream_app.delivery.sinks import ALERTS, Planner
from stream_app.delivery.transport import HttpSender, RateLimiter
from stream_app.settings import UNDELIVERED_TOPIC, Settings
from stream_app.tools.cli.common import broker_error, console, load_settings, setup_logging
from stream_app.tools.embedded import ensure_topics


def _config(settings: Settings) -> DeliveryConfig:
    if not settings.delivery_file:
        console.print("[red]configuration error:[/red] delivery_file: not set (DELIVERY_FILE)")
        sys.exit(2)
    try:
        return load_config(settings.delivery_file)
    except DeliveryConfigError as exc:
        console.print(f"[red]delivery configuration error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def _host(url: str) -> str:
    """Scheme and host of a URL, never its path (a Slack webhook's path is its secret)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].rsplit('@', 1)[-1]}/…"


async def _serve(settings: Settings, config: DeliveryConfig) -> None:
    s = settings
    await ensure_topics(s.bootstrap_servers(), {s.topic(t): s.topic_partitions for t in ("alerts", "scores", UNDELIVERED_TOPIC)},
                        s.topic_replication, s.kafka_client_kwargs())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    service = DeliveryService(s, config)
    task = asyncio.create_task(service.run(stop, ready))
    await asyncio.wait([task, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
    if ready.is_set():
        console.print(f"delivering {', '.join(service.topics)} to {', '.join(x.name for x in config.sinks)}"
                      + (f"; /metrics on :{s.delivery_port}" if s.delivery_port else ""))
    await task


async def _dry_run(settings: Settings, config: DeliveryConfig, limit: int, idle_s: float) -> int:
    """Read the alerts topic from the start (no consumer group: a running service is not
    disturbed) and print what each sink would send."""
    topic = settings.topic(ALERTS)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers(), enable_auto_commit=False,
                                **settings.kafka_client_kwargs())  # type: ignore[arg-type]
    await consumer.start()
    planner = Planner(config, settings.dashboard_url)
    shown = 0
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        await consumer.seek_to_beginning()
        last = time.monotonic()
        while shown < limit and time.monotonic() - last < idle_s:
            batch = await consumer.getmany(timeout_ms=300, max_records=limit - shown)
            for msgs in batch.values():
                for m in msgs:
                    last = time.monotonic()
                    msg = parse(m.value)
                    shown += 1
                    if msg is None:
                        click.echo(f"{m.partition}:{m.offset} not an alert: would be parked")
                        continue
                    click.echo(f"{m.partition}:{m.offset} {msg.get('alert_id')} ({msg.get('kind')}, {msg.get('severity')})")
                    for p in planner.plan(msg, m.value, ALERTS, Context()):
                        if p.request is None:
                            click.echo(f"  {p.sink.name}: skipped ({p.skipped})")
                        else:
                            r = p.request
                            click.echo(f"  {p.sink.name}: {r.method} {_host(r.url)} {r.body.decode()[:400]}")
    finally:
        await consumer.stop()
    return shown


def sample_alert() -> Alert:
    now = datetime.now(timezone.utc)
    return Alert(alert_id=f"test:{uuid.uuid4().hex[:12]}", customer_id="sample-customer", ts=now, kind="churn_risk",
                 severity="warning", health_score=42.0, health_band="yellow", churn_probability=0.31,
                 reasons=[Reason(factor="logins_7d", value=1, impact=-12.0)], model_version="test")


async def _test(settings: Settings, config: DeliveryConfig, name: str) -> bool:
    sink = config.sink(name)
    alert = sample_alert()
    raw = alert.model_dump_json().encode()
    plan = Planner(config, settings.dashboard_url).plan(orjson.loads(raw), raw, ALERTS, Context(), only=sink)[0]
    assert plan.request is not None
    limiter = RateLimiter(sink.rate_per_s) if isinstance(sink, SlackSink) else None
    async with aiohttp.ClientSession() as session:
        outcome = await HttpSender(session).deliver(plan.request, sink.timeout_s, sink.retry, limiter)
    verdict = "[green]accepted[/green]" if outcome.accepted else f"[red]not accepted[/red]: {escape(outcome.last_error)}"
    console.print(f"{name} ({sink.type}): {verdict} after {outcome.attempts} attempt(s), "
                  f"HTTP {outcome.last_status}, alert {alert.alert_id}", highlight=False)
    return outcome.accepted


@click.group(invoke_without_command=True)
@click.option("--dry-run", is_flag=True, help="Print what each sink would send for the alerts on the topic; send nothing")
@click.option("--limit", type=int, default=20, show_default=True, help="--dry-run: alerts to show")
@click.pass_context
def deliver(ctx: click.Context, dry_run: bool, limit: int) -> None:
    """Deliver alerts to the sinks of DELIVERY_FILE (webhooks, Slack, CRM); own consumer group."""
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings()
    setup_logging(settings.log_level)
    config = _config(settings)
    try:
        if dry_run:
            n = asyncio.run(_dry_run(settings, config, limit, idle_s=3.0))
            console.print(f"{n} alert(s) shown; nothing sent")
            return
        asyncio.run(_serve(settings, config))
    except (OSError, ConnectionError) as exc:
        console.print(f"[red]cannot use the broker:[/red] {escape(broker_error(settings, exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)


@deliver.command("test")
@click.argument("sink")
def test_sink(sink: str) -> None:
    """Send one sample alert to SINK (routing ignored) and say whether it was accepted."""
    settings = load_settings()
    config = _config(settings)
    try:
        ok = asyncio.run(_test(settings, config, sink))
    except KeyError as exc:
        console.print(f"[red]{escape(str(exc.args[0]))}[/red]")
        sys.exit(2)
    sys.exit(0 if ok else 1)
