"""Runs the processes of ``shopstream up`` and keeps them running.

Each role's process is a child ``python -m shopstream <argv>`` with the same
settings passed through the environment, and its output in
``<data_dir>/logs/<name>.log``. A child that dies is restarted with backoff
(up to :data:`MAX_RESTARTS` times); on stop every child gets SIGTERM, in
reverse start order, then SIGKILL after a grace period.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from shopstream.plugins import UpProcess, load_up_processes
from shopstream.settings import Settings

log = logging.getLogger("shopstream.up")
MAX_RESTARTS = 5
STATUS_EVERY_S = 60.0
"""How often ``shopstream up`` logs which processes are alive."""


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a child process read exactly ``settings``."""
    env = dict(os.environ)
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"SHOPSTREAM_{name.upper()}"] = str(value)
    return env


@dataclass
class _Child:
    spec: UpProcess
    popen: subprocess.Popen[bytes]
    log_file: IO[bytes]
    restarts: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Supervisor:
    """Start, watch and stop the ``shopstream up`` processes of every role."""

    def __init__(self, settings: Settings, skip: set[str] | None = None) -> None:
        self.settings = settings
        self.skip = skip or set()
        self.log_dir = Path(settings.data_dir) / "logs"
        self._children: dict[str, _Child] = {}
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def start_all(self) -> list[str]:
        """Start every contributed process (except skipped ones); return their names."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        specs = [p for p in load_up_processes(self.settings) if p.name not in self.skip]
        if not specs:
            log.warning("no role contributed a process; only the broker and topics are up")
        for spec in specs:
            self._children[spec.name] = self._spawn(spec, restarts=0)
        self._watcher.start()
        return [s.name for s in specs]

    def _spawn(self, spec: UpProcess, restarts: int) -> _Child:
        log_path = self.log_dir / f"{spec.name}.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed when the child ends
        popen = subprocess.Popen(
            [sys.executable, "-m", "shopstream", *spec.argv],
            env=settings_env(self.settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.info(
            "started %s: shopstream %s (pid %d, log %s)",
            spec.name, " ".join(spec.argv), popen.pid, log_path,
        )  # fmt: skip
        return _Child(spec, popen, log_file, restarts)

    def _watch(self) -> None:
        next_status = time.monotonic() + STATUS_EVERY_S
        while not self._stopping.wait(1.0):
            if time.monotonic() >= next_status:
                next_status += STATUS_EVERY_S
                self._log_status()
            for name, child in list(self._children.items()):
                code = child.popen.poll()
                if code is None or self._stopping.is_set():
                    continue
                child.log_file.close()
                if code == 0:
                    log.info("%s finished", name)
                    del self._children[name]
                    continue
                if child.restarts >= MAX_RESTARTS:
                    log.error("%s exited with %d; gave up after %d restarts - see %s",
                              name, code, child.restarts, self.log_dir / f"{name}.log")
                    del self._children[name]
                    continue
                delay = min(2 ** child.restarts, 30)
                log.warning("%s exited with %d; restarting in %ds", name, code, delay)
                if self._stopping.wait(delay):
                    return
                self._children[name] = self._spawn(child.spec, child.restarts + 1)

    def _log_status(self) -> None:
        alive = self.running()
        restarts = sum(c.restarts for c in self._children.values())
        log.info(
            "%d process(es) running: %s; %d restart(s); logs in %s",
            len(alive), ", ".join(sorted(alive)) or "none", restarts, self.log_dir,
        )  # fmt: skip

    def running(self) -> dict[str, int]:
        """Names and pids of the children alive now."""
        return {n: c.popen.pid for n, c in self._children.items() if c.popen.poll() is None}

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM every child in reverse start order, SIGKILL those still alive after ``grace``."""
        self._stopping.set()
        children = list(self._children.values())[::-1]
        for child in children:
            if child.popen.poll() is None:
                child.popen.terminate()
        deadline = time.monotonic() + grace
        for child in children:
            try:
                child.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", child.spec.name, grace)
                child.popen.kill()
                child.popen.wait()
            child.log_file.close()
        self._children.clear()
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
