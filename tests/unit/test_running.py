"""The run loop every pipeline app runs in (``pipelines.runtime.running.run_app``), with
stand-ins for the Quix app: what is retried and what ends the process."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException
from quixstreams.exceptions.assignment import PartitionAssignmentError
from quixstreams.models.topics.exceptions import TopicNotFoundError

from pipelines.runtime.running import BuiltApp, run_app
from shopstream.errors import BrokerUnreachable, UserError
from shopstream.settings import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings whose broker address accepts TCP: the run loop's broker probe passes, so
    a failed run is judged on its error, not taken for an outage."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield load_settings(
            broker_address=f"127.0.0.1:{server.getsockname()[1]}", data_dir=tmp_path
        )


def test_a_failed_build_is_retried_like_a_failed_run(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Building a Quix app talks to the broker (its topics are created and checked); seen
    on Apache Kafka: the changelog topic it had just created 'not found'. That is retried,
    not the end of the process, and the broker's passing state is one line in the log,
    not a traceback."""
    builds: list[int] = []

    def build() -> BuiltApp:
        builds.append(1)
        if len(builds) == 1:
            raise TopicNotFoundError('Topic "changelog__x" not found on the broker')
        return BuiltApp(_StoppedApp(), None)  # type: ignore[arg-type]

    retried = _retries(settings, build, caplog)
    assert len(builds) == 2
    assert len(retried) == 1 and retried[0].exc_info is None
    assert "not in the broker's metadata yet" in retried[0].getMessage()


@pytest.mark.parametrize(
    ("code", "said"),
    [
        # Seen in CI as Apache Kafka began a controlled shutdown: Quix's watermark query
        # during partition assignment got NOT_LEADER_FOR_PARTITION (not flagged retriable
        # by librdkafka).
        (KafkaError.NOT_LEADER_FOR_PARTITION, "NOT_LEADER_FOR_PARTITION"),
        # Seen in CI in analytics after a Kafka restart: Quix's committed-offsets query
        # during partition assignment hit librdkafka's own deadline (not flagged
        # retriable either): the coordinator was slow, not wrong.
        (KafkaError._TIMED_OUT, "did not answer in time"),
    ],
)
def test_a_broker_in_motion_during_assignment_is_one_line(
    settings: Settings, caplog: pytest.LogCaptureFixture, code: int, said: str
) -> None:
    """Quix wraps what the broker answered during partition assignment in
    PartitionAssignmentError. A passing state: one line, no traceback, retried."""

    def in_motion() -> None:
        try:
            raise KafkaException(KafkaError(code))
        except KafkaException as exc:
            raise PartitionAssignmentError("Error during partition assignment") from exc

    app = _FailsFirstRun(in_motion)
    retried = _retries(settings, lambda: BuiltApp(app, None), caplog)  # type: ignore[arg-type]
    assert app.runs == 2
    assert len(retried) == 1 and retried[0].exc_info is None
    assert said in retried[0].getMessage()


def test_the_kafka_clients_lost_callback_error_is_one_line(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen in CI in notifications after a Kafka outage: confluent-kafka < 2.13 lost the
    exception a callback raised inside consume() and left this SystemError (its issue
    #865). The next run carries on from its checkpoint: one line, retried and counted."""

    def lost() -> None:
        try:
            raise SystemError(
                "<method 'consume' of 'cimpl.Consumer' objects> returned NULL without "
                "setting an exception"
            )
        except SystemError:
            # What Quix does before the run fails (a traceback in the app's log, CI).
            logging.getLogger("quixstreams.internal_consumer.consumer").exception(
                "Failed to consume a message from Kafka"
            )
            raise

    app = _FailsFirstRun(lost)
    retried = _retries(settings, lambda: BuiltApp(app, None), caplog)  # type: ignore[arg-type]
    assert app.runs == 2
    assert len(retried) == 1 and retried[0].exc_info is None
    assert "issue #865" in retried[0].getMessage()
    quix = [r for r in caplog.records if r.name.startswith("quixstreams")]
    assert len(quix) == 1 and quix[0].exc_info is None


def test_another_system_error_keeps_its_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def elsewhere() -> None:
        raise SystemError("<built-in function f> returned NULL without setting an exception")

    app = _FailsFirstRun(elsewhere)
    retried = _retries(settings, lambda: BuiltApp(app, None), caplog)  # type: ignore[arg-type]
    assert len(retried) == 1 and retried[0].exc_info is not None


def test_an_unknown_failure_keeps_its_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def refused() -> None:
        raise KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))

    app = _FailsFirstRun(refused)
    retried = _retries(settings, lambda: BuiltApp(app, None), caplog)  # type: ignore[arg-type]
    assert app.runs == 2
    assert len(retried) == 1 and retried[0].exc_info is not None


def test_each_runs_kafka_producer_is_destroyed_before_the_next_run_is_built(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Quix leaves a failed run's producer to the garbage collector, which let it retry
    under its old epoch after a broker outage (docs/running.md)."""
    apps: list[_AppStandIn] = []

    def build() -> BuiltApp:
        assert all(app.producer_destroyed for app in apps)
        apps.append(_FailsFirstRun(refused) if not apps else _StoppedApp())
        return BuiltApp(apps[-1], None)  # type: ignore[arg-type]

    def refused() -> None:
        raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))

    _retries(settings, build, caplog)
    assert len(apps) == 2 and all(app.producer_destroyed for app in apps)


def test_a_broker_gone_between_two_runs_is_waited_for(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen in CI: a run failed as Kafka began a controlled shutdown, and the rebuild
    found no broker. Having answered before, the broker is in an outage: the process
    waits for it and goes on, it does not exit as it would on a wrong address."""
    builds: list[int] = []

    def build() -> BuiltApp:
        builds.append(1)
        if len(builds) == 2:
            raise BrokerUnreachable(settings.broker_address, "connection refused")
        app = _FailsFirstRun(leader_moved) if len(builds) == 1 else _StoppedApp()
        return BuiltApp(app, None)  # type: ignore[arg-type]

    def leader_moved() -> None:
        raise KafkaException(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION))

    _retries(settings, build, caplog)
    assert len(builds) == 3


def test_an_unreachable_broker_on_the_first_build_ends_the_process(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)

    def build() -> BuiltApp:
        raise BrokerUnreachable(settings.broker_address, "connection refused")

    with pytest.raises(BrokerUnreachable):
        run_app(settings, "probe", build)


def test_a_user_error_while_building_is_not_retried(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)

    def build() -> BuiltApp:
        raise UserError("state in data/state belongs to another broker")

    with pytest.raises(UserError):
        run_app(settings, "probe", build)


def _retries(
    settings: Settings, build: Callable[[], BuiltApp], caplog: pytest.LogCaptureFixture
) -> list[logging.LogRecord]:
    """Run ``build``'s app in the run loop; its "running again" log records."""
    with caplog.at_level(logging.INFO, logger="pipelines.run"):
        run_app(settings, "probe", build)
    return [r for r in caplog.records if "running again" in r.getMessage()]


class _KafkaProducer:
    """librdkafka's producer, as far as :func:`destroy_producer` uses it."""

    def __init__(self) -> None:
        self.purged = False

    def purge(self, **_: bool) -> None:
        self.purged = True


class _AppStandIn:
    """A Quix app stand-in: its producer sits where Quix keeps it
    (``app._producer._producer._inner_producer``, tests/unit/test_quix_internals.py)."""

    def __init__(self) -> None:
        # At-least-once: no offset commits of its own to look for (pipelines.runtime.quix.
        # end_hanging_offset_commits_of).
        self.config = SimpleNamespace(
            processing_guarantee="at-least-once", producer_extra_config={}, consumer_group="g"
        )
        self.kafka_producer = _KafkaProducer()
        self._producer = SimpleNamespace(
            _producer=SimpleNamespace(_inner_producer=self.kafka_producer)
        )

    @property
    def producer_destroyed(self) -> bool:
        wrapper = self._producer._producer
        return self.kafka_producer.purged and wrapper._inner_producer is not self.kafka_producer


class _StoppedApp(_AppStandIn):
    """A Quix app stand-in whose run() returns at once, as after SIGTERM."""

    def run(self) -> None:
        return None


class _FailsFirstRun(_AppStandIn):
    """A Quix app stand-in whose first run() calls ``fail`` and whose next returns."""

    def __init__(self, fail: Callable[[], None]) -> None:
        super().__init__()
        self.fail = fail
        self.runs = 0

    def run(self) -> None:
        self.runs += 1
        if self.runs == 1:
            self.fail()
