"""The reference broker's SASL/SCRAM option, without a JVM: what it asks Kafka for.

That Kafka does it (a login with the right password works, a wrong one is refused) is
tests/integration/test_sasl.py, on a running broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shopstream.brokers.kafka_reference import SCRAM_MECHANISMS, KafkaReferenceBroker


def props(broker: KafkaReferenceBroker) -> dict[str, str]:
    """The effective server.properties: the last occurrence of a key wins, as in Java."""
    out: dict[str, str] = {}
    for line in broker.server_properties(Path("/tmp/data")).splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def test_scram_users_open_a_sasl_listener_beside_the_plaintext_one() -> None:
    broker = KafkaReferenceBroker(scram_users={"shop": "s3cret"})
    p = props(broker)
    assert broker.sasl_address == f"127.0.0.1:{broker.sasl_port}"
    assert len({broker.port, broker.sasl_port, broker.controller_port}) == 3
    assert p["listeners"].split(",") == [
        f"PLAINTEXT://127.0.0.1:{broker.port}",
        f"SASL_PLAINTEXT://{broker.sasl_address}",
        f"CONTROLLER://127.0.0.1:{broker.controller_port}",
    ]
    assert f"SASL_PLAINTEXT://{broker.sasl_address}" in p["advertised.listeners"]
    assert "SASL_PLAINTEXT:SASL_PLAINTEXT" in p["listener.security.protocol.map"]
    assert p["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,SCRAM-SHA-512"
    for mechanism in SCRAM_MECHANISMS:
        jaas = p[f"listener.name.sasl_plaintext.{mechanism.lower()}.sasl.jaas.config"]
        assert jaas.startswith("org.apache.kafka.common.security.scram.ScramLoginModule")
    assert p["inter.broker.listener.name"] == "PLAINTEXT"  # the broker's own traffic
    assert "SASL/SCRAM on" in broker.description


def test_without_users_there_is_no_sasl_listener() -> None:
    broker = KafkaReferenceBroker()
    assert "SASL" not in props(broker)["listeners"]
    with pytest.raises(ValueError, match="no SASL listener"):
        _ = broker.sasl_address


@pytest.mark.parametrize("user", [("sh op", "pw"), ("shop", "pw,]x"), ("", "pw")])
def test_credentials_the_storage_tool_could_misread_are_refused(user: tuple[str, str]) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        KafkaReferenceBroker(scram_users=dict([user]))
