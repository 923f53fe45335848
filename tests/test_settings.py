"""Settings from the environment, security options, and docker-compose consistency."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from stream_app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_URL", "kafka://k1:9092,kafka://k2:9092")
    monkeypatch.setenv("REDIS_URL", "rediss://app:pw@r:6380/2")
    monkeypatch.setenv("TOPIC_PREFIX", "acme.")
    monkeypatch.setenv("WINDOWS_DAYS", "[30, 7, 90, 7]")
    s = Settings(_env_file=None)
    assert s.bootstrap_servers() == ["k1:9092", "k2:9092"]
    assert s.topic("activity") == "acme.activity"
    assert s.windows_days == [7, 30, 90] and s.max_window_days == 90
    assert set(s.input_topics) == {"acme.activity", "acme.tickets", "acme.surveys", "acme.subscriptions"}


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"WINDOWS_DAYS": "[0, 7]"}, "windows_days"),
        ({"TOPIC_PARTITIONS": "0"}, "topic_partitions"),
        ({"BROKER_SECURITY_PROTOCOL": "SASL_SSL"}, "broker_sasl_username"),
        ({"BROKER_SECURITY_PROTOCOL": "TLS"}, "broker_security_protocol"),
        ({"PRIORITY_WEIGHTS": '{"low": 1}'}, "priority_weights"),
    ],
)
def test_invalid_settings_name_the_field(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], field: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValidationError) as exc:
        Settings(_env_file=None)
    assert field in str(exc.value)


def test_sasl_scram_and_tls_are_expressible(tmp_path: Path) -> None:
    import faust

    from stream_app.pipeline.clients import broker_credentials

    s = Settings(
        _env_file=None,
        broker_url="kafka://k:9093",
        broker_security_protocol="SASL_PLAINTEXT",
        broker_sasl_mechanism="SCRAM-SHA-256",
        broker_sasl_username="svc",
        broker_sasl_password="hunter2",
    )
    kw = s.kafka_client_kwargs()
    assert kw["sasl_mechanism"] == "SCRAM-SHA-256" and kw["sasl_plain_password"] == "hunter2"
    creds = broker_credentials(s)
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "svc"
    tls = Settings(_env_file=None, broker_url="kafka://k:9093", broker_security_protocol="SSL")
    assert isinstance(broker_credentials(tls), faust.SSLCredentials)
    assert "ssl_context" in tls.kafka_client_kwargs()


def test_secrets_never_printed() -> None:
    s = Settings(
        _env_file=None,
        redis_url="redis://app:topsecret@r:6379/0",
        redis_password="alsosecret",
        broker_security_protocol="SASL_SSL",
        broker_sasl_username="u",
        broker_sasl_password="kafkasecret",
    )
    text = repr(s) + str(s.redacted())
    for secret in ("alsosecret", "kafkasecret"):
        assert secret not in text
    assert "topsecret" not in str(s.redacted())


def test_redis_client_options_from_settings() -> None:
    from stream_app.pipeline.clients import redis_client

    s = Settings(_env_file=None, redis_url="rediss://r:6380/1", redis_username="svc", redis_password="pw")
    client = redis_client(s)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["username"] == "svc" and kwargs["password"] == "pw" and kwargs["db"] == 1
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"


def test_docker_compose_is_consistent_with_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "worker"} <= set(services)
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    env = services["worker"]["environment"]
    known = {name.upper() for name in Settings.model_fields}
    assert set(env) <= known, set(env) - known
    s = Settings(_env_file=None, **{k.lower(): v for k, v in env.items() if k != "WINDOWS_DAYS"})
    assert s.bootstrap_servers() == ["kafka:9092"]
    host = s.redis_url.split("//")[1].split(":")[0]  # type: ignore[union-attr]
    assert host in services and s.bootstrap_servers()[0].split(":")[0] in services
    assert (ROOT / services["worker"]["build"] / "Dockerfile").exists()


def test_every_setting_is_in_a_section_with_the_same_value() -> None:
    from stream_app.settings import Sections

    s = Settings(_env_file=None, topic_prefix="acme.", model_lag_days=3, web_token="t0k3n")
    fields = set(Settings.model_fields)
    assert fields == set().union(*(set(kind.model_fields) for kind in Sections.KINDS))
    for section in s.sections.model_dump(round_trip=True):
        view = getattr(s.sections, section)
        for name in type(view).model_fields:
            assert getattr(view, name) == getattr(s, name), (section, name)
    assert s.sections.kafka.topic("activity") == "acme.activity" and s.sections.model.model_lag_days == 3
    with pytest.raises(ValidationError):
        s.sections.model.model_lag_days = 5  # type: ignore[misc]
