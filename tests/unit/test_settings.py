"""Settings: defaults that work locally, environment overrides, readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.runtime.quix import quix_app
from shopstream.errors import UserError
from shopstream.kafka import connection_config, consumer_config, producer_config, transactional_id
from shopstream.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("SHOPSTREAM_"):
            monkeypatch.delenv(name)


def test_defaults_run_locally() -> None:
    s = load_settings()
    assert s.broker_address == "127.0.0.1:19092"
    assert s.processing_guarantee == "exactly-once"
    assert (s.session_timeout_ms, s.heartbeat_interval_ms) == (6000, 500)
    assert s.data_dir == Path("data")
    assert s.security_protocol == "PLAINTEXT"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPSTREAM_BROKER_ADDRESS", "redpanda:9092,redpanda2:9092")
    monkeypatch.setenv("SHOPSTREAM_PROCESSING_GUARANTEE", "at-least-once")
    s = load_settings()
    assert s.broker_address == "redpanda:9092,redpanda2:9092"
    assert s.processing_guarantee == "at-least-once"


def test_settings_are_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        load_settings().broker_address = "x:1"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("var", "value", "fragment"),
    [
        ("SHOPSTREAM_BROKER_ADDRESS", "localhost", "expected host:port"),
        ("SHOPSTREAM_BROKER_ADDRESS", "localhost:99999", "expected host:port"),
        ("SHOPSTREAM_PROCESSING_GUARANTEE", "twice", "exactly-once"),
        ("SHOPSTREAM_SESSION_TIMEOUT_MS", "soon", "valid integer"),
        ("SHOPSTREAM_SASL_MECHANISM", "MD5", "PLAIN"),
    ],
)
def test_bad_settings_give_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, fragment: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(UserError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert var in message and fragment in message


def test_security_settings_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPSTREAM_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("SHOPSTREAM_SASL_USERNAME", "shop")
    monkeypatch.setenv("SHOPSTREAM_SASL_PASSWORD", "secret")
    monkeypatch.setenv("SHOPSTREAM_TLS_CA_FILE", "/etc/ca.pem")
    s = load_settings()
    assert "secret" not in repr(s)
    expected = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "shop",
        "sasl.password": "secret",
        "ssl.ca.location": "/etc/ca.pem",
    }
    for config in (connection_config(s), producer_config(s), consumer_config(s, "g")):
        assert expected.items() <= config.items()
    # The connection path of every pipeline: the Quix application built from the settings.
    app = quix_app(s, "finance", "shopstream-finance", state_dir=Path("/tmp/unused"))
    quix = app.config.broker_address.as_librdkafka_dict()
    assert {k: v for k, v in expected.items() if k != "security.protocol"}.items() <= quix.items()
    assert quix["security.protocol"].upper() == "SASL_SSL"
    assert app.config.producer_extra_config["transactional.id"] == "shopstream-finance-0"
    assert app.config.consumer_extra_config["session.timeout.ms"] == 6000


def test_partitions_and_replication_are_settings_with_local_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert (load_settings().partitions, load_settings().replication_factor) == (3, 1)
    monkeypatch.setenv("SHOPSTREAM_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("SHOPSTREAM_PARTITIONS", "12")
    assert (load_settings().partitions, load_settings().replication_factor) == (12, 3)


def test_clients_get_durable_producers_and_fast_group_joins() -> None:
    s = Settings()
    p = producer_config(s)
    assert (p["enable.idempotence"], p["acks"], p["compression.type"]) == (True, "all", "lz4")
    assert p["partitioner"] == "murmur2_random"  # the partitioner of Quix and Java clients
    c = consumer_config(s, "g")
    assert c["session.timeout.ms"] == 6000 and c["heartbeat.interval.ms"] == 500
    assert c["isolation.level"] == "read_committed"


def test_transactional_id_is_stable_per_instance() -> None:
    assert transactional_id("finance", Settings()) == transactional_id("finance", Settings())
    other = load_settings(instance_id="7")
    assert transactional_id("finance", other) != transactional_id("finance", Settings())


def test_with_broker_keeps_the_rest() -> None:
    s = load_settings(data_dir=Path("/tmp/x")).with_broker("10.0.0.1:9092")
    assert s.broker_address == "10.0.0.1:9092" and s.data_dir == Path("/tmp/x")
