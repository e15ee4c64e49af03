"""The run loop of every pipeline app: status, broker outages, failed runs resumed.

:func:`run_app` is what ``shopstream run NAME`` ends in. It builds the app, runs it
until SIGINT/SIGTERM, and keeps it running through what would otherwise stop it:

* **Broker outages.** librdkafka reconnects by itself and Quix has no deadline here
  (:func:`pipelines.runtime.quix.quix_app`); what the user needs is to know. While the
  broker is unreachable, the client's connection errors are held back
  (:class:`BrokerWatch`): the log gets one line when the broker goes and one when it is
  back, with how long it was gone, and the status says ``broker down``. A run that
  fails meanwhile (a transaction that timed out) is rebuilt once the broker answers;
  its Kafka producer is destroyed at once, so that nothing of the failed run is sent
  after the broker is back (:func:`pipelines.runtime.quix.destroy_producer`).
* **A record the broker refuses.** The run fails; :class:`~pipelines.runtime.outputs.
  Outputs` has learned the record, so the next run diverts it (dead letters or
  counted) and goes on. No restart loop.
* **A known passing failure** (a leader or coordinator moving, a topic just created and
  not listed yet, the Kafka client's lost callback error) is one warning line, retried
  like any failed run.
* **Anything else** is logged with its traceback and retried with exponential backoff
  (tenacity), at most :data:`MAX_FAILED_RUNS` times in a row; then the process exits
  non-zero and ``shopstream up`` restarts it.

Every run of the Quix app resumes from the last committed checkpoint, so what the
failed run had not committed is processed again: exactly once under exactly-once, at
least once otherwise (the services are idempotent on the causing event).
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, KafkaException
from quixstreams.models.topics.exceptions import TopicNotFoundError
from tenacity import wait_exponential

from pipelines.runtime.outputs import AppCounters, Outputs
from pipelines.runtime.quix import destroy_producer, end_hanging_offset_commits_of
from shopstream.errors import BrokerUnreachable, UserError
from shopstream.kafka import unreachable_reason
from shopstream.logs import configure_logging
from shopstream.settings import Settings
from shopstream.signals import STOP as EARLY_STOP
from shopstream.status import ProcessStatus, StatusPublisher

if TYPE_CHECKING:
    from quixstreams import Application

log = logging.getLogger("pipelines.run")

MAX_FAILED_RUNS = 5
"""Failed runs in a row (without a broker outage or a learned record to explain them)
before the process gives up and exits non-zero."""
PROBE_EVERY_S = 2.0
AFTERMATH_S = 30.0
"""After the broker is back, client complaints of the outage keep arriving for a while
(transactions that timed out, a fenced predecessor, coordinators loading): they are the
outage's, not news, and stay held back this long."""
_BACKOFF = wait_exponential(multiplier=1, min=1, max=30)
_CLIENT_LOGGERS = ("quixstreams", "librdkafka", "confluent_kafka")

# What librdkafka and Quix log when no broker answers (codes and texts): such a line
# makes the watch probe at once instead of at its next turn.
_OUTAGE_MARKERS = (
    "_TRANSPORT", "_ALL_BROKERS_DOWN", "brokers are down", "Connection refused",
    "Disconnected", "transport failure", "Failed to resolve",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BuiltApp:
    """A ready-to-run Quix app and the object whose counters describe what it did."""

    app: Application
    processor: Any


class BrokerWatch(logging.Filter):
    """Knows whether the broker answers, and turns an outage into two log lines.

    :meth:`probe` (a TCP connect, every :data:`PROBE_EVERY_S` from the status thread)
    notices the broker going and coming back and logs one line each time. While the
    broker is down, and for :data:`AFTERMATH_S` after, the Kafka clients' own warnings
    and errors are held back (counted, and the count logged once it is over): they are
    the outage retold a hundred times.
    """

    def __init__(self, app_name: str, address: str) -> None:
        super().__init__()
        self.app_name = app_name
        self.address = address
        self.down_since: float | None = None
        self.back_at: float | None = None
        self.held_back = 0
        self._next_probe = 0.0
        self._lock = threading.Lock()

    @property
    def up(self) -> bool:
        return self.down_since is None

    @property
    def quiet(self) -> bool:
        """Down, or back for less than :data:`AFTERMATH_S`."""
        if self.down_since is not None:
            return True
        return self.back_at is not None and time.monotonic() - self.back_at < AFTERMATH_S

    def probe(self, force: bool = False) -> bool:
        """Check the broker (at most every :data:`PROBE_EVERY_S` unless ``force``);
        return whether it answers."""
        now = time.monotonic()
        if not force and now < self._next_probe:
            return self.up
        self._next_probe = now + PROBE_EVERY_S
        reason = unreachable_reason(self.address)
        with self._lock:
            if reason is not None and self.down_since is None:
                self.down_since = now
                log.warning(
                    "%s: broker at %s unreachable (%s); waiting for it, nothing is lost",
                    self.app_name, self.address, reason,
                )  # fmt: skip
            elif reason is None and self.down_since is not None:
                gone, self.down_since, self.back_at = now - self.down_since, None, now
                log.info("%s: broker at %s is back after %.0fs; carrying on", self.app_name,
                         self.address, gone)  # fmt: skip
            elif self.held_back and not self.quiet:
                log.info("%s: %d client messages about broker connectivity were held back",
                         self.app_name, self.held_back)  # fmt: skip
                self.held_back = 0
        return reason is None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and _lost_callback_error(record.exc_info[1]):
            # Quix logs it with its traceback before the run fails; the run loop says in
            # one line what it is (_known_passing_failure) and runs again.
            record.exc_info, record.exc_text = None, None
        if not record.name.startswith(_CLIENT_LOGGERS) or record.levelno < logging.WARNING:
            return True
        about_connectivity = any(m in record.getMessage() for m in _OUTAGE_MARKERS)
        if about_connectivity and not self.quiet:
            self.probe(force=True)
        if self.quiet or about_connectivity:
            # The probe has the last word on the broker; the clients' retelling is counted.
            self.held_back += 1
            return False
        return True

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)


def run_app(
    settings: Settings,
    app_name: str,
    build: Callable[[], BuiltApp],
    outputs: Outputs | None = None,
    *,
    counters: AppCounters | None = None,
    describe: str = "",
    on_stop: Callable[[BuiltApp], str] | None = None,
    status_name: str | None = None,
) -> None:
    """Build and run an app until SIGINT/SIGTERM, through outages and failed runs.

    ``build`` makes a fresh Quix app each time (a failed ``Application`` is not run
    twice); ``outputs`` is the app's :class:`Outputs`, kept across builds (or, for an
    app that produces nothing, ``counters`` its counters). ``describe``
    is logged once at start, ``on_stop(built)`` returns the line logged at the end.
    """
    configure_logging()
    if counters is None:
        counters = outputs.counters if outputs is not None else AppCounters()
    watch = BrokerWatch(app_name, settings.broker_address)
    watch.install()

    def refresh(status: ProcessStatus) -> None:
        watch.probe()
        status.consumed = counters.consumed
        status.produced = counters.produced
        status.dead_lettered = counters.dead_lettered
        status.errors = counters.errors
        status.last_error = counters.last_error
        status.note = counters.note
        status.broker_up = watch.up

    if EARLY_STOP.is_set():  # asked to stop while it got ready (shopstream.signals)
        return
    stop = EARLY_STOP  # one flag: a stop asked for before a run and between runs
    failures = 0
    built: BuiltApp | None = None
    with StatusPublisher(settings, status_name or app_name, refresh):
        if describe:
            log.info("%s: %s", app_name, describe)
        try:
            while not stop.is_set():
                progress = counters.consumed
                learned = outputs.learned if outputs is not None else 0
                try:
                    # Building talks to the broker too (Quix creates and checks its topics):
                    # what fails there is retried like a failed run.
                    built = build()
                    end_hanging_offset_commits_of(built.app, settings, app_name)
                    try:
                        built.app.run()
                    finally:
                        # Nothing of this run reaches the broker once it is over: a
                        # producer left to the garbage collector went on retrying.
                        destroy_producer(built.app)
                    return  # stopped by a signal
                except BrokerUnreachable:
                    if built is None:
                        raise  # never reached: a wrong address, or no broker started
                    # It answered before: the broker went between two runs (seen in CI:
                    # a run failed as Kafka began a controlled shutdown, and the rebuild
                    # found it gone). An outage: wait for it, as a run ended by one does.
                    log.debug("%s: broker gone before the next run", app_name)
                    _wait_for_signal_or(stop, lambda: watch.probe())
                    continue
                except UserError:
                    raise  # a setting or a state to fix: retrying would not change it
                except Exception as exc:
                    if stop.is_set():
                        return
                    if not watch.probe(force=True) or watch.quiet:
                        # The outage's doing: wait for the broker, resume, say no more.
                        log.debug("%s: run ended by the outage: %s", app_name, exc)
                        _wait_for_signal_or(stop, lambda: watch.probe())
                        failures = 0
                        continue
                    if outputs is not None and outputs.learned > learned:
                        continue  # the next run diverts the record that failed this one
                    if counters.consumed > progress:
                        failures = 0
                    failures += 1
                    counters.error(f"{type(exc).__name__}: {exc}")
                    if failures >= MAX_FAILED_RUNS:
                        log.error("%s: %d failed runs in a row; exiting", app_name, failures)
                        raise
                    delay = _BACKOFF(_Attempt(failures))
                    if (passing := _known_passing_failure(exc)) is not None:
                        log.warning("%s: %s: %s (%s); running again in %.0fs", app_name,
                                    type(exc).__name__, exc, passing, delay)  # fmt: skip
                    else:
                        log.exception("%s: run failed; running again in %.0fs", app_name, delay)
                    _wait_for_signal_or(stop, lambda: False, timeout=delay)
        finally:
            watch.uninstall()
            if built is not None and on_stop is not None:
                log.info("%s: stopped; %s", app_name, on_stop(built))


def _known_passing_failure(exc: BaseException) -> str | None:
    """Why ``exc``, or an exception that caused it, is a known passing failure rather than
    a fault: a state the broker passes through, or the Kafka client's lost callback error
    (the run is retried and counted all the same, but the log gets one line, not a
    traceback), or None."""
    seen: BaseException | None = exc
    while seen is not None:
        if _lost_callback_error(seen):
            # confluent-kafka before 2.13 (its issue #865, fixed by its PR #2019; Quix 3.28
            # requires < 2.13) loses the exception a callback raised inside consume() when
            # other Python code runs before consume() returns: this SystemError is what is
            # left. Seen in CI in notifications twice after a Kafka outage; the next run
            # carried on from its checkpoint.
            return (
                "the Kafka client lost the error one of its callbacks raised "
                "(confluent-kafka < 2.13, its issue #865)"
            )
        if isinstance(seen, TopicNotFoundError):
            # Quix checks a topic right after creating it; a loaded broker may not list
            # it in its metadata yet (seen in CI on Apache Kafka, for a changelog topic).
            return "a topic just created, not in the broker's metadata yet"
        err = seen.args[0] if isinstance(seen, KafkaException) and seen.args else None
        # librdkafka flags retriable() on some paths only: the watermark query Quix makes
        # while partitions are assigned raised NOT_LEADER_FOR_PARTITION unflagged, as a
        # broker began a controlled shutdown (CI, Apache Kafka).
        if isinstance(err, KafkaError) and (err.retriable() or err.code() in _IN_MOTION):
            return f"the broker answered {err.name()}, which is worth retrying"
        if isinstance(err, KafkaError) and err.code() == KafkaError._TIMED_OUT:
            # The client's own deadline, not flagged retriable: seen in CI after a Kafka
            # restart, as Quix asked the group coordinator for committed offsets during
            # partition assignment while the coordinator was still loading its groups.
            return "the broker did not answer in time"
        seen = seen.__cause__ or seen.__context__
    return None


def _lost_callback_error(exc: BaseException | None) -> bool:
    """Whether ``exc`` is what confluent-kafka < 2.13 leaves of an exception a callback
    raised inside consume() (see :func:`_known_passing_failure`)."""
    return isinstance(exc, SystemError) and bool(_LOST_CALLBACK_ERROR.search(str(exc)))


_LOST_CALLBACK_ERROR = re.compile(r"of 'cimpl\.\w+' objects> returned NULL without setting")
"""What CPython says when a confluent-kafka method fails without an exception: consume()
after a callback's exception was lost (see :func:`_known_passing_failure`)."""

_IN_MOTION = frozenset({
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
})  # fmt: skip
"""Kafka protocol errors marked retriable in the protocol's error table that a broker
gives while leadership or coordinators move (a restart, a controlled shutdown)."""


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What tenacity's wait strategies read from a retry state."""

    attempt_number: int


def _wait_for_signal_or(
    stop: threading.Event, ready: Callable[[], bool], timeout: float | None = None
) -> None:
    """Wait until ``ready()``, ``timeout`` or SIGINT/SIGTERM (which sets ``stop``)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    deadline = time.monotonic() + timeout if timeout is not None else None
    try:
        while not stop.is_set() and not ready():
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.2)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
