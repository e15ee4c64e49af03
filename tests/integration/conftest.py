"""Integration-test helpers: known broker gaps as strict xfails, and broker start-up figures.

A claim that holds on Apache Kafka (the reference lane) but not on a broker with a
known gap is written once, for every lane:

    @pytest.mark.known_gap("embedded", "Tansu never expires a killed producer's transaction")
    def test_something(broker, claim):
        ...
        claim(observed == expected, f"what was seen: {observed}")

On the lanes the marker names, the test becomes ``xfail(strict=True)`` that
accepts only a failed ``claim`` (a :class:`BrokerGap`): any other failure is
still a failure, and a gap that closes turns into a failing XPASS, so nobody
keeps believing in a gap that is gone. On every other lane ``claim`` is a plain
assertion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from support.notes import note


class BrokerGap(AssertionError):
    """A claim about broker behaviour did not hold on this broker."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "known_gap(lane, reason): a claim() in this test fails on that broker lane for a "
        "known, named reason; it runs there as a strict xfail",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        lane = callspec.params.get("broker_lane") if callspec else None
        if lane is None:
            continue
        for mark in item.iter_markers("known_gap"):
            gap_lane, reason = mark.args
            if gap_lane == lane:
                item.add_marker(
                    pytest.mark.xfail(
                        reason=f"known gap of the {lane} broker: {reason}",
                        raises=BrokerGap,
                        strict=True,
                    )
                )


@pytest.fixture
def claim() -> Callable[[bool, str], None]:
    """``claim(condition, message)``: assert broker behaviour (see the module docstring)."""

    def check(condition: bool, message: str) -> None:
        if not condition:
            raise BrokerGap(message)

    return check


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Note how long assembling and starting Apache Kafka took in this run (CI notes)."""
    from shopstream.brokers.kafka_reference import startup_timings

    for timing in startup_timings():
        note("Apache Kafka reference broker",
             f"{timing.what}: {timing.seconds:.1f}s ({timing.detail})")  # fmt: skip


@pytest.fixture
def durable_kafka(broker_lane: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A fresh Apache Kafka with its own log directory (stop/start = a restart on the same
    log directory), for the tests that restart the broker; kafka lane only."""
    import os

    from shopstream.brokers.kafka_reference import KafkaReferenceBroker, unavailable_reason

    if broker_lane != "kafka":
        pytest.skip("the embedded broker keeps data in memory only: a restart loses everything")
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kafka lane must run under CI but cannot: {reason}")
        pytest.skip(reason)
    folder = tmp_path_factory.mktemp("durable-kafka")
    broker = KafkaReferenceBroker(log_path=folder / "broker.log", data_dir=folder / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
