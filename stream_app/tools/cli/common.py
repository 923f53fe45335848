"""What every ``stream-app`` command shares: the settings, logging, Redis access, formatting."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console
from rich.markup import escape

from stream_app.pipeline.clients import redis_client
from stream_app.portfolio.tracker import PortfolioTracker
from stream_app.settings import Settings, describe_settings_error, redact_url
from stream_app.state.store import StateStore

console = Console(stderr=True)


def load_settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError: name the variable and the rule, never the value
        console.print(f"[red]configuration error:[/red] {escape(describe_settings_error(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def broker_error(settings: Settings, exc: BaseException) -> str:
    """What failed when connecting to the broker, with the security settings that were used
    (user name and mechanism, never the password).

    >>> s = Settings(_env_file=None, broker_url="kafka://k:9093", broker_security_protocol="SASL_SSL",
    ...              broker_sasl_username="svc", broker_sasl_password="hunter2")
    >>> broker_error(s, ConnectionError("Unable to bootstrap"))
    "k:9093 (SASL_SSL, SCRAM-SHA-512 as 'svc'): ConnectionError: Unable to bootstrap; a rejected login or certificate is logged above by the Kafka client"
    """
    how = settings.broker_security_protocol
    if how.startswith("SASL"):
        how += f", {settings.broker_sasl_mechanism} as {settings.broker_sasl_username!r}"
    where = ",".join(redact_url(h) for h in settings.bootstrap_servers())
    return (f"{where} ({how}): {type(exc).__name__}: {exc}; "
            "a rejected login or certificate is logged above by the Kafka client")


def with_store(settings: Settings, fn: Any) -> Any:
    """Run ``await fn(store)`` against the configured Redis."""
    async def run() -> Any:
        client = redis_client(settings)
        try:
            return await fn(StateStore(client, settings))
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except (RedisError, OSError) as exc:  # say what failed and where, without credentials
        where = redact_url(settings.redis_url or "")
        console.print(f"[red]Redis at {escape(where)}:[/red] {type(exc).__name__}: {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)


def with_tracker(settings: Settings, fn: Any) -> Any:
    """Run ``await fn(tracker, redis)`` against the configured Redis (read side only)."""
    try:
        tracker = PortfolioTracker(settings)
    except ValueError as exc:  # PortfolioConfigError: names the field and the rule
        console.print(f"[red]portfolio configuration error:[/red] {exc}")
        sys.exit(2)
    return with_store(settings, lambda store: fn(tracker, store.redis))


def fmt(v: Any, pct: bool = False, money: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.1f}%"
    if money:
        return f"{v:,.2f}"
    return f"{v:,}" if isinstance(v, int) else f"{v:,.2f}"
