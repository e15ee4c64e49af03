"""The whole pipeline as child processes, for fault injection.

* :class:`Fleet` - every pipeline app of one namespace (router, the four services,
  analytics, the sink), each ``python -m shopstream run NAME --namespace S``: start them,
  SIGKILL one and start it again at once, and time how long the new life takes to work
  (its status file, ``shopstream.status``, under its new pid with records consumed).
* :class:`ProducerThread` - ``producers.app.run_produce`` in a thread, its stats kept.
* :func:`name_the_broker` - the broker's identity, named before anything else starts.
* :func:`kill_broker` - SIGKILL a broker process (the JVM of Apache Kafka): no clean
  shutdown, no flush of anything the process holds; :func:`broker_report` - is it
  running, and how its log ends.
* :func:`read_all` - every record of some topics from offset zero, bytes as they are
  (no decoding: a ground truth is computed from them, not from the project's parsers).
* :func:`whereabouts` - where ids a check found missing are on the broker, committed or
  not: whether an app never wrote an event or the sink never wrote it down.
"""

from __future__ import annotations

import io
import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from producers.app import ProduceOptions, run_produce
from producers.sender import ProduceStats, Stop
from shopstream.brokers import BrokerProcess
from shopstream.settings import Settings
from shopstream.status import ProcessStatus, read_statuses, run_dir
from shopstream.topics import Namespace
from support.processes import AppProcess, ReadRecord, TopicReader, log_tail

PIPELINE = (
    "sink", "stock", "finance", "customer-relations", "notifications", "analytics", "router",
)  # fmt: skip
"""Every pipeline app, in start order: readers before writers (``shopstream up``'s order)."""


class App(AppProcess):
    """An :class:`AppProcess` that tells its pid (a restart gets a new one)."""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None


@dataclass
class Kill:
    """One SIGKILL and the restart that followed it."""

    app: str
    at: float
    """``time.monotonic()`` of the kill."""
    old_pid: int
    new_pid: int
    up_after: float | None = None
    """Seconds from the kill until the new life published its status (run loop began)."""
    recovered_after: float | None = None
    """Seconds from the kill until the new life had consumed records (None: not yet)."""


@dataclass
class Fleet:
    """The pipeline apps of ``namespace`` as processes (see the module docstring)."""

    settings: Settings
    namespace: Namespace
    log_dir: Path
    names: Sequence[str] = PIPELINE
    apps: dict[str, App] = field(default_factory=dict)
    kills: list[Kill] = field(default_factory=list)
    exits: list[tuple[str, int]] = field(default_factory=list)
    """Apps found exited without being killed or stopped: (app, exit code)."""

    def start(self) -> Fleet:
        for name in self.names:
            self.apps[name] = App(name, self.namespace, self.settings, self.log_dir).start()
        return self

    def status(self, name: str) -> ProcessStatus | None:
        return read_statuses(run_dir(self.settings)).get(self.namespace.app(name))

    def working(self, name: str) -> bool:
        """The app's current life has published a status with records consumed."""
        status = self.status(name)
        return status is not None and status.pid == self.apps[name].pid and status.consumed > 0

    def kill(self, name: str) -> Kill:
        """SIGKILL ``name`` and start it again at once."""
        app = self.apps[name]
        old = app.pid
        assert old is not None and app.running, f"{name} is not running\n{app.log_tail()}"
        app.kill()
        at = time.monotonic()
        app.start()
        kill = Kill(name, at, old, app.pid or 0)
        self.kills.append(kill)
        return kill

    def check(self) -> None:
        """Note recoveries, and apps that exited on their own."""
        now = time.monotonic()
        for kill in self.kills:
            if kill.recovered_after is not None or self.apps[kill.app].pid != kill.new_pid:
                continue
            status = self.status(kill.app)
            if status is not None and status.pid == kill.new_pid:
                if kill.up_after is None:
                    kill.up_after = now - kill.at
                if status.consumed > 0:
                    kill.recovered_after = now - kill.at
        for name, app in self.apps.items():
            code = app.returncode
            if code is not None and (name, code) not in self.exits:
                self.exits.append((name, code))

    def recovered(self, name: str) -> bool:
        """No kill of ``name`` is waiting for its recovery."""
        return all(k.recovered_after is not None for k in self.kills if k.app == name)

    def wait_started(self, timeout: float) -> None:
        """Wait until every app's current life publishes its status (its run loop began)."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [
                n for n, app in self.apps.items()
                if (status := self.status(n)) is None or status.pid != app.pid
            ]  # fmt: skip
            if not waiting:
                return
            assert time.monotonic() < deadline, f"not started in {timeout:.0f}s: {waiting}\n" + (
                self.tails(waiting)
            )
            self.check()
            assert not self.exits, f"an app exited: {self.exits}\n{self.tails()}"
            time.sleep(0.25)

    def wait_working(self, timeout: float) -> None:
        """Wait until every app's current life has consumed records."""
        deadline = time.monotonic() + timeout
        while not all(self.working(name) for name in self.apps):
            idle = [n for n in self.apps if not self.working(n)]
            assert time.monotonic() < deadline, f"not working after {timeout:.0f}s: {idle}\n" + (
                self.tails(idle)
            )
            self.check()
            time.sleep(0.25)

    def stop(self) -> dict[str, int]:
        """SIGTERM every app, writers first (router, ..., sink last); exit codes."""
        codes = {}
        for name in reversed(list(self.apps)):
            codes[name] = self.apps[name].stop(timeout=60)
        return codes

    def log(self, name: str) -> str:
        path = self.apps[name].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def tails(self, names: Iterable[str] | None = None, lines: int = 15) -> str:
        return "\n".join(
            f"--- {n}\n{self.apps[n].log_tail(lines)}" for n in (names or list(self.apps))
        )


class ProducerThread:
    """``run_produce(settings, options)`` in a daemon thread; ``stats`` once it is done.

    It publishes its counters as ``name`` (:meth:`acked` reads them while it runs);
    :meth:`finish` stops it as SIGTERM would (flushing what it sent).
    """

    def __init__(self, settings: Settings, options: ProduceOptions, name: str) -> None:
        self.settings = settings
        self.options = options
        self.name = name
        self.stop = Stop()
        self.stats: ProduceStats | None = None
        self.error: BaseException | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _run(self) -> None:
        quiet = Console(file=io.StringIO(), force_terminal=False)
        self.started = time.monotonic()
        try:
            self.stats = run_produce(
                self.settings, self.options, console=quiet, stop=self.stop, status_name=self.name
            )
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self.finished = time.monotonic()

    def start(self) -> ProducerThread:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def acked(self) -> int:
        """Records the broker acknowledged so far (opening stock included)."""
        status = read_statuses(run_dir(self.settings)).get(self.name)
        return status.produced if status is not None else 0

    def finish(self, timeout: float = 120.0) -> ProduceStats:
        self.stop.set("signal")
        return self.join(timeout)

    def join(self, timeout: float) -> ProduceStats:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the producer did not finish in {timeout:.0f}s"
        if self.error is not None:
            raise self.error
        assert self.stats is not None
        return self.stats


def broker_report(broker: BrokerProcess, lines: int = 20) -> str:
    """Whether ``broker``'s process runs, and the tail of its log: for a test's message
    when the pipeline stalls (a broker that died is the first suspect)."""
    state = (
        f"running (pid {broker.pid})" if broker.alive
        else f"exited with code {broker.exit_code}" if broker.exit_code is not None
        else "not running"
    )  # fmt: skip
    tail = log_tail(broker.log_path, lines)
    return f"broker at {broker.address}: {state}; its log ends:\n{tail}"


def kill_broker(broker: BrokerProcess) -> None:
    """SIGKILL the broker's process (for Apache Kafka: the JVM) and forget it, so that
    ``broker.start()`` starts it again - on the same port and, for a durable broker,
    the same log directory. Nothing is shut down cleanly."""
    proc = broker._proc
    assert proc is not None and proc.poll() is None, "the broker is not running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    broker._proc = None


def read_all(
    settings: Settings, topics: Iterable[str], isolation: str = "read_uncommitted"
) -> list[ReadRecord]:
    """Every record of ``topics`` from offset zero, bytes as they are (not decoded), topic
    by topic; ``read_uncommitted`` by default: for topics nobody writes in transactions
    (what a producer sent to the ingress topics), everything that was acknowledged."""
    reader = TopicReader(settings, topics, isolation, decode=False)
    try:
        reader.drain(quiet=3.0, timeout=120.0)
        return reader.all_records()
    finally:
        reader.close()


def whereabouts(
    settings: Settings, topics: Iterable[str], ids: Iterable[str]
) -> dict[str, list[str]]:
    """Each of ``ids`` -> ``topic[partition]@offset`` of every record on ``topics`` whose
    bytes hold it, marked ``(not committed)`` where a ``read_committed`` reader does not
    see the record (its transaction aborted, or is still open). For a failed test's
    message: an id on its cause's topic and nowhere else was never acted on; one on an
    output topic, committed, and missing from the read models was not written down."""
    names = list(topics)
    wanted = [(i, i.encode()) for i in ids]
    seen = read_all(settings, names, "read_committed")
    committed = {(r.topic, r.partition, r.offset) for r in seen}
    found: dict[str, list[str]] = defaultdict(list)
    for rec in read_all(settings, names):
        value = rec.value or b""
        for text, needle in wanted:
            if needle in value:
                at = (rec.topic, rec.partition, rec.offset)
                mark = "" if at in committed else " (not committed)"
                found[text].append(f"{rec.topic}[{rec.partition}]@{rec.offset}{mark}")
    return {text: found.get(text, []) for text, _ in wanted}
