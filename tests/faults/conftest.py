"""The fault-injection suite (``faults`` marker): profiles, known gaps, figures.

``SHOPSTREAM_FAULTS`` picks the profile: ``quick`` (the default, what CI runs with every
``pytest``), ``full`` (issue 14's sizes, on demand: ``SHOPSTREAM_FAULTS=full pytest -m
faults``) or ``off`` (skip the suite).

The ``broker``, ``settings`` and ``namespace`` fixtures come from ``tests/conftest.py``;
the ``known_gap`` marker with its ``claim`` fixture is that of
``tests/integration/conftest.py`` (see ``docs/testing.md``). pytest loads that conftest
only when it collects ``tests/integration``; this one makes them work for ``pytest
tests/faults`` alone too, and never twice. ``pipeline_broker`` is ``durable_kafka`` of
that conftest for a whole module: the kafka lane's broker that a test may SIGKILL.

Every test here notes what it measured (:func:`support.fault_suite.report`); the session
ends with them in a "Fault injection" section (the figures docs/testing.md reports).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from integration import conftest as integration

from shopstream.brokers import BrokerProcess
from support.fault_suite import Profile, profile

INTEGRATION_CONFTEST = Path(integration.__file__).resolve()
FAULTS_DIR = Path(__file__).parent.resolve()


@pytest.fixture(scope="session")
def faults_profile() -> Profile:
    return profile()


@pytest.fixture(scope="module")
def pipeline_broker(
    request: pytest.FixtureRequest, broker_lane: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrokerProcess]:
    """The broker a module's pipeline runs on: the session's embedded broker, or on the
    kafka lane an Apache Kafka of the module's own with a log directory (``durable_kafka``
    of tests/integration, module-scoped): kill it, ``start()`` it again, nothing is lost."""
    if broker_lane == "embedded":
        yield request.getfixturevalue("broker")
        return
    from shopstream.brokers.kafka_reference import KafkaReferenceBroker, unavailable_reason

    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kafka lane must run under CI but cannot: {reason}")
        pytest.skip(f"kafka lane skipped: {reason}")
    folder = tmp_path_factory.mktemp("durable-kafka")
    broker = KafkaReferenceBroker(log_path=folder / "broker.log", data_dir=folder / "kafka")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection suite (tests/faults)")
    integration.pytest_configure(config)  # the known_gap marker, for tests/faults alone


def _integration_plugin(config: pytest.Config) -> Any:
    """tests/integration/conftest.py as pytest loaded it, if it did."""
    for plugin in config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == INTEGRATION_CONFTEST and plugin is not integration:
            return plugin
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if FAULTS_DIR in Path(str(item.path)).resolve().parents]
    for item in ours:
        item.add_marker(pytest.mark.faults)
    if _integration_plugin(config) is None:
        # Not loaded: its hook that turns known_gap into strict xfails does not run.
        integration.pytest_collection_modifyitems(config, ours)


@pytest.fixture
def claim(request: pytest.FixtureRequest) -> Callable[[bool, str], None]:
    """``claim(condition, message)`` as in tests/integration: raises the BrokerGap the
    strict xfail of this item accepts (that conftest's, whichever copy marked it)."""
    loaded = _integration_plugin(request.config)
    gap = (loaded or integration).BrokerGap

    def check(condition: bool, message: str) -> None:
        if not condition:
            raise gap(message)

    return check
