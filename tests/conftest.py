"""Shared fixtures: broker lanes, per-test settings, unique topic and group names.

Integration tests take the ``broker`` fixture and run once per broker lane:
``embedded`` (Tansu, what users get without Docker) and ``kafka`` (Apache Kafka,
the reference that judges delivery guarantees). Choose lanes with
``--lanes embedded,kafka`` (default: both). Without Java the Kafka lane skips
with the reason - except under CI (``CI=true``), where it must run.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess, make_broker
from shopstream.settings import Settings, load_settings
from shopstream.topics import Namespace, TopicSpec
from support.notes import NOTES

ALL_LANES = ("embedded", "kafka")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lanes",
        default=os.environ.get("SHOPSTREAM_TEST_LANES", ",".join(ALL_LANES)),
        help="comma-separated broker lanes for integration tests: embedded,kafka",
    )


def _lanes(config: pytest.Config) -> list[str]:
    lanes = [lane.strip() for lane in str(config.getoption("--lanes")).split(",") if lane.strip()]
    unknown = sorted(set(lanes) - set(ALL_LANES))
    if unknown:
        raise pytest.UsageError(f"unknown lane(s) {unknown}; choose from {ALL_LANES}")
    return lanes


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "broker_lane" in metafunc.fixturenames:
        lanes = _lanes(metafunc.config)
        only = metafunc.definition.get_closest_marker("lane")
        if only is not None:  # what it claims does not depend on the broker: one lane is enough
            lanes = [lane for lane in lanes if lane == only.args[0]]
        metafunc.parametrize("broker_lane", lanes, scope="session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lane(NAME): run on this broker lane only (a claim about our own code that "
        "the broker does not change, e.g. the read side's faults)",
    )  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "broker_lane" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    """xdist's controller: collect a finished worker's notes."""
    output = getattr(node, "workeroutput", {})
    NOTES.extend((section, line) for section, line in json.loads(output.get("notes", "[]")))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    sections: dict[str, list[str]] = {}
    for section, line in NOTES:
        sections.setdefault(section, []).append(line)
    for section, lines in sections.items():
        terminalreporter.section(section)
        for line in lines:
            terminalreporter.write_line(line)


_started: dict[str, BrokerProcess] = {}


@pytest.fixture(scope="session")
def broker(broker_lane: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker process of this lane, started once per session on a free port."""
    if broker_lane == "kafka":
        from shopstream.brokers.kafka_reference import unavailable_reason

        reason = unavailable_reason()
        if reason:
            if os.environ.get("CI") == "true":
                pytest.fail(f"kafka lane must run under CI but cannot: {reason}")
            pytest.skip(f"kafka lane skipped: {reason}")
    if broker_lane not in _started:
        log = tmp_path_factory.mktemp(f"broker-{broker_lane}") / "broker.log"
        _started[broker_lane] = make_broker(broker_lane, log_path=log).start()  # type: ignore[arg-type]
    yield _started[broker_lane]


@pytest.hookimpl(trylast=True)  # after the other conftests noted their figures
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for proc in _started.values():
        proc.stop()
    _started.clear()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller prints the notes
        workeroutput["notes"] = json.dumps(NOTES)


@pytest.fixture
def settings(broker: BrokerProcess, tmp_path: Path) -> Settings:
    """Settings for one test: this lane's broker, a private data dir."""
    return load_settings(broker_address=broker.address, data_dir=tmp_path / "data")


@pytest.fixture
def namespace() -> Namespace:
    """A namespace no other test uses: ``namespace.topic(ORDERS).name == "orders-3f9c1a2b"``."""
    return Namespace(uuid.uuid4().hex[:8])


@pytest.fixture
def unique(namespace: Namespace) -> Callable[[str], str]:
    """``unique("orders")`` -> ``"orders-3f9c1a2b"``: names no other test uses."""
    return namespace.name


@pytest.fixture
def isolated_topics(settings: Settings, namespace: Namespace) -> Callable[..., list[TopicSpec]]:
    """Create catalog topics in this test's namespace on this lane's broker."""

    def create(*specs: TopicSpec) -> list[TopicSpec]:
        renamed = namespace.topics(specs)
        create_topics(settings, renamed)
        return renamed

    return create
