"""The run loop of every pipeline app: status, broker outages, failed runs resumed.

:func:`run_app` is what ``shopstream run NAME`` ends in. It builds the app, runs it
until SIGINT/SIGTERM, and keeps it running through what would otherwise stop it:

* **Broker outages.** librdkafka reconnects by itself and Quix has no deadline here
  (:func:`pipelines.runtime.quix.quix_app`); what the user needs is to know. While the
  broker is unreachable, the client's connection errors are held back
  (:class:`BrokerWatch`): the log gets one line when the broker goes and one when it is
  back, with how long it was gone, and the status says ``broker down``. A run that
  fails meanwhile (a transaction that timed out) is rebuilt once the broker answers.
* **A record the broker refuses.** The run fails; :class:`~pipelines.runtime.outputs.
  Outputs` has learned the record, so the next run diverts it (dead letters or
  counted) and goes on. No restart loop.
* **Anything else** is logged with its traceback and retried with exponential backoff
  (tenacity), at most :data:`MAX_FAILED_RUNS` times in a row; then the process exits
  non-zero and ``shopstream up`` restarts it.

Every run of the Quix app resumes from the last committed checkpoint, so what the
failed run had not committed is processed again: exactly once under exactly-once, at
least once otherwise (the services are idempotent on the causing event).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from tenacity import wait_exponential

from pipelines.runtime.outputs import AppCounters, Outputs
from shopstream.kafka import unreachable_reason
from shopstream.logs import configure_logging
from shopstream.settings import Settings
from shopstream.status import ProcessStatus, StatusPublisher

if TYPE_CHECKING:
    from quixstreams import Application

log = logging.getLogger("pipelines.run")

MAX_FAILED_RUNS = 5
"""Failed runs in a row (without a broker outage or a learned record to explain them)
before the process gives up and exits non-zero."""
PROBE_EVERY_S = 2.0
_BACKOFF = wait_exponential(multiplier=1, min=1, max=30)

# What librdkafka and Quix log while no broker answers (codes and texts).
_OUTAGE_MARKERS = (
    "_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "_MSG_TIMED_OUT", "_TIMED_OUT",
    "Connection refused", "Disconnected", "transport failure", "brokers are down",
    "Failed to resolve", "Connect to ipv4", "Broker transport", "timed out",
    "Coordinator load in progress", "NOT_COORDINATOR", "COORDINATOR_NOT_AVAILABLE",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class BuiltApp:
    """A ready-to-run Quix app and the object whose counters describe what it did."""

    app: Application
    processor: Any


class BrokerWatch(logging.Filter):
    """Turns a broker outage into two log lines and a flag.

    Installed on the root handlers: a client log line about an unreachable broker is
    held back; the first one starts a probe (a TCP connect every
    :data:`PROBE_EVERY_S`), which logs when the broker went and when it is back.
    """

    def __init__(self, app_name: str, address: str) -> None:
        super().__init__()
        self.app_name = app_name
        self.address = address
        self.down_since: float | None = None
        self._lock = threading.Lock()
        self._back = threading.Event()

    @property
    def up(self) -> bool:
        return self.down_since is None

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("quixstreams", "librdkafka", "confluent")):
            return True
        text = record.getMessage()
        if not any(marker in text for marker in _OUTAGE_MARKERS):
            return True
        if self.down_since is not None:
            return False  # already said
        if unreachable_reason(self.address) is None:
            return True  # the broker answers: a real error, keep it
        self.went_down(text)
        return False

    def went_down(self, detail: str = "") -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self._back.clear()
        reason = unreachable_reason(self.address) or detail[:120]
        log.warning(
            "%s: broker at %s unreachable (%s); waiting for it, nothing is lost meanwhile",
            self.app_name, self.address, reason,
        )  # fmt: skip
        threading.Thread(target=self._probe, name="broker-probe", daemon=True).start()

    def _probe(self) -> None:
        while unreachable_reason(self.address) is not None:
            time.sleep(PROBE_EVERY_S)
        with self._lock:
            since, self.down_since = self.down_since, None
        gone = time.monotonic() - since if since is not None else 0.0
        log.info("%s: broker at %s is back after %.0fs; carrying on", self.app_name,
                 self.address, gone)  # fmt: skip
        self._back.set()

    def wait_until_back(self, stop: threading.Event) -> None:
        while not self.up and not stop.is_set():
            self._back.wait(0.5)

    def install(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.addFilter(self)
        # librdkafka lines from Quix's clients go through these loggers.
        for name in ("quixstreams", "librdkafka"):
            logging.getLogger(name).addFilter(self)

    def uninstall(self) -> None:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self)
        for name in ("quixstreams", "librdkafka"):
            logging.getLogger(name).removeFilter(self)


def run_app(
    settings: Settings,
    app_name: str,
    build: Callable[[], BuiltApp],
    outputs: Outputs | None = None,
    *,
    describe: str = "",
    on_stop: Callable[[BuiltApp], str] | None = None,
    status_name: str | None = None,
) -> None:
    """Build and run an app until SIGINT/SIGTERM, through outages and failed runs.

    ``build`` makes a fresh Quix app each time (a failed ``Application`` is not run
    twice); ``outputs`` is the app's :class:`Outputs`, kept across builds. ``describe``
    is logged once at start, ``on_stop(built)`` returns the line logged at the end.
    """
    configure_logging()
    counters = outputs.counters if outputs is not None else AppCounters()
    watch = BrokerWatch(app_name, settings.broker_address)
    watch.install()
    stop = threading.Event()

    def refresh(status: ProcessStatus) -> None:
        status.consumed = counters.consumed
        status.produced = counters.produced
        status.dead_lettered = counters.dead_lettered
        status.errors = counters.errors
        status.last_error = counters.last_error
        status.broker_up = watch.up

    failures = 0
    built: BuiltApp | None = None
    with StatusPublisher(settings, status_name or app_name, refresh):
        if describe:
            log.info("%s: %s", app_name, describe)
        try:
            while not stop.is_set():
                built = build()
                progress = counters.consumed
                learned = outputs.learned if outputs is not None else 0
                try:
                    built.app.run()
                    return  # stopped by a signal
                except Exception as exc:
                    if _stop_requested(stop):
                        return
                    if not watch.up or unreachable_reason(settings.broker_address):
                        watch.went_down(str(exc))
                        _wait_for_signal_or(stop, lambda: watch.up)
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
                    log.exception("%s: run failed; running again in %.0fs", app_name, delay)
                    _wait_for_signal_or(stop, lambda: False, timeout=delay)
        finally:
            watch.uninstall()
            if built is not None and on_stop is not None:
                log.info("%s: stopped; %s", app_name, on_stop(built))


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What tenacity's wait strategies read from a retry state."""

    attempt_number: int


def _stop_requested(stop: threading.Event) -> bool:
    return stop.is_set()


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
