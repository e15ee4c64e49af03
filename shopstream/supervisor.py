"""Runs the processes of ``shopstream up`` and keeps them running.

Each app of the registry (:func:`shopstream.apps.apps_for` ``"up"``) is a child
``python -m shopstream <command>`` with the same settings in its environment and its
output in ``<data_dir>/logs/<name>.log``.

Guarantees:

* A child that exits non-zero is restarted after a backoff (1, 2, 4 ... 30 s), at most
  :data:`MAX_RESTARTS` times in a row; a child that ran :data:`HEALTHY_AFTER_S` before
  dying starts a fresh budget, so a long-running stack survives occasional failures. A
  child that exits with code 2 (a problem only the user can fix: settings, stale state)
  is not restarted: its last log line is shown instead.
* Other children are never held up by one that is waiting to restart.
* If the broker ``up`` started dies, :meth:`Supervisor.wait` returns at once with
  :data:`BROKER_DIED`, so ``up`` can say so and exit non-zero instead of leaving the
  apps to retry against nothing.
* An app that finished or gave up is started again when asked
  (:func:`shopstream.status.request_start`).
* On stop every child gets SIGTERM, in reverse start order, then SIGKILL after a grace
  period.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self

from shopstream.apps import AppSpec
from shopstream.brokers.base import BrokerProcess
from shopstream.settings import Settings, settings_env
from shopstream.status import START_REQUEST, ProcessStatus, read_statuses, run_dir

log = logging.getLogger("shopstream.up")
MAX_RESTARTS = 5
HEALTHY_AFTER_S = 60.0
"""A child that ran this long before it died gets a fresh restart budget."""
MAX_BACKOFF_S = 30.0
EXIT_USER_ERROR = 2
STATUS_EVERY_S = 60.0
"""How often a plain (non-terminal) ``shopstream up`` logs which processes are alive."""

ChildState = Literal["running", "restarting", "finished", "failed"]
BROKER_DIED = "broker-died"


def backoff(restarts: int) -> float:
    """Seconds to wait before restart number ``restarts + 1``."""
    return min(2.0**restarts, MAX_BACKOFF_S)


@dataclass
class Child:
    """One supervised process and what happened to it."""

    spec: AppSpec
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    total_restarts: int = 0
    state: ChildState = "running"
    restart_at: float = 0.0
    last_exit: int | None = None

    def last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""


class Supervisor:
    """Start, watch and stop the ``shopstream up`` processes.

    Each app runs as ``<launcher> <app.command>``: ``python -m shopstream run NAME``
    and the like (tests pass another launcher).
    """

    def __init__(
        self,
        settings: Settings,
        apps: Iterable[AppSpec],
        broker: BrokerProcess | None = None,
        launcher: Sequence[str] = (sys.executable, "-m", "shopstream"),
    ) -> None:
        self.settings = settings
        self.launcher = tuple(launcher)
        self.apps = list(apps)
        self.broker = broker
        self.log_dir = Path(settings.data_dir) / "logs"
        self.children: dict[str, Child] = {}
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self.end_reason: str | None = None
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start_all(self) -> list[str]:
        """Start every app; return their names in start order."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.apps:
            log.warning("no role declared an app; only the broker and topics are up")
        for spec in self.apps:
            child = Child(spec, self.log_dir / f"{spec.name}.log")
            self.children[spec.name] = child
            self._spawn(child)
        self._watcher.start()
        return [s.name for s in self.apps]

    def _spawn(self, child: Child) -> None:
        child.log_file = open(child.log_path, "ab")  # noqa: SIM115 - closed when the child ends
        child.popen = subprocess.Popen(
            [*self.launcher, *child.spec.command],
            env=settings_env(self.settings),
            stdout=child.log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own session: Ctrl-C in the terminal reaches `up` alone, which then stops
            # the apps in order, before the broker they need to commit their last work.
            start_new_session=True,
        )
        child.started_at = time.monotonic()
        child.state = "running"
        log.info(
            "started %s: shopstream %s (pid %d, log %s)",
            child.spec.name, " ".join(child.spec.command), child.popen.pid, child.log_path,
        )  # fmt: skip

    def wait(self, timeout: float | None = None) -> str | None:
        """Block until the supervisor ends on its own (e.g. :data:`BROKER_DIED`) or
        ``timeout``; return why it ended (``None`` on timeout)."""
        self._ended.wait(timeout)
        return self.end_reason

    def _end(self, reason: str) -> None:
        self.end_reason = reason
        self._ended.set()

    def _watch(self) -> None:
        next_status = time.monotonic() + STATUS_EVERY_S
        while not self._stopping.wait(0.5):
            if self.broker is not None and not self.broker.alive:
                self._end(BROKER_DIED)
                return
            now = time.monotonic()
            for child in list(self.children.values()):
                self._check(child, now)
            if now >= next_status:
                next_status += STATUS_EVERY_S
                self._log_status()

    def _check(self, child: Child, now: float) -> None:
        if child.state in ("finished", "failed") and self._start_requested(child):
            log.info("%s: start requested; starting it again", child.spec.name)
            child.restarts = 0
            self._spawn(child)
            return
        if child.state == "restarting" and now >= child.restart_at:
            child.restarts += 1
            child.total_restarts += 1
            self._spawn(child)
            return
        if child.state != "running" or child.popen is None:
            return
        code = child.popen.poll()
        if code is None or self._stopping.is_set():
            return
        if child.log_file is not None:
            child.log_file.close()
        child.last_exit = code
        name = child.spec.name
        if code == 0:
            log.info("%s finished", name)
            child.state = "finished"
            return
        if now - child.started_at >= HEALTHY_AFTER_S:
            child.restarts = 0  # it was healthy for a while: a fresh budget
        if code == EXIT_USER_ERROR:
            child.state = "failed"
            log.error("%s stopped (exit 2, not restarted): %s", name, child.last_log_line())
            return
        if child.restarts >= MAX_RESTARTS:
            child.state = "failed"
            log.error(
                "%s exited with %d; gave up after %d restarts in a row - see %s",
                name, code, child.restarts, child.log_path,
            )  # fmt: skip
            return
        delay = backoff(child.restarts)
        log.warning("%s exited with %d; restarting in %.0fs", name, code, delay)
        child.state = "restarting"
        child.restart_at = now + delay

    def _start_requested(self, child: Child) -> bool:
        """A stopped app is started again when someone asks (``status.request_start``:
        the tour stops a service and starts it again)."""
        request = run_dir(self.settings) / f"{child.spec.name}{START_REQUEST}"
        if not request.exists():
            return False
        request.unlink(missing_ok=True)
        return True

    def _log_status(self) -> None:
        alive = self.running()
        restarts = sum(c.total_restarts for c in self.children.values())
        log.info(
            "%d process(es) running: %s; %d restart(s); logs in %s",
            len(alive), ", ".join(sorted(alive)) or "none", restarts, self.log_dir,
        )  # fmt: skip

    def running(self) -> dict[str, int]:
        """Names and pids of the children alive now."""
        return {
            n: c.popen.pid
            for n, c in self.children.items()
            if c.popen is not None and c.popen.poll() is None
        }

    def statuses(self) -> dict[str, ProcessStatus]:
        """What each child last published about itself (see :mod:`shopstream.status`)."""
        return read_statuses(run_dir(self.settings))

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every child in reverse start order, SIGKILL those still alive after ``grace``."""
        self._stopping.set()
        children = [c for c in list(self.children.values())[::-1] if c.popen is not None]
        for child in children:
            if child.popen is not None and child.popen.poll() is None:
                child.popen.terminate()
        deadline = time.monotonic() + grace
        for child in children:
            assert child.popen is not None
            try:
                child.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.spec.name, grace)
                child.popen.kill()
                child.popen.wait()
            if child.log_file is not None:
                child.log_file.close()
        self.children.clear()
        log.info("all processes stopped")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
