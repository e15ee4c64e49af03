"""What each running process is doing, as small JSON files any other process can read.

Every app (``shopstream run``, ``produce``, the dashboard) publishes its counters to
``<data_dir>/run/<name>.json`` about once a second: events in and out, dead letters,
errors and the last one, whether it sees its broker. ``shopstream up`` draws its live
status table from these files, and the dashboard's health page reads them too. A file is
replaced atomically (write, then rename), so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shopstream.settings import Settings

PUBLISH_EVERY_S = 1.0


@dataclass(slots=True)
class ProcessStatus:
    """One process's counters (monotonic within a process; a restart starts at zero)."""

    name: str
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    consumed: int = 0
    produced: int = 0
    dead_lettered: int = 0
    errors: int = 0
    last_error: str | None = None
    broker_up: bool = True
    url: str | None = None
    note: str | None = None
    """A short word on what the process is doing, e.g. ``restoring state``."""

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message[:300]


def run_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "run"


START_REQUEST = ".start"


def request_start(settings: Settings, name: str) -> Path:
    """Ask ``shopstream up`` to start app ``name`` again if it stopped (a file it watches)."""
    path = run_dir(settings) / f"{name}{START_REQUEST}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(time.time()))
    return path


def write_status(path: Path, status: ProcessStatus) -> None:
    """Replace ``path`` with ``status`` atomically."""
    status.updated_at = time.time()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(status)))
    os.replace(tmp, path)


def read_statuses(directory: Path) -> dict[str, ProcessStatus]:
    """Every status file in ``directory`` by process name (unreadable ones skipped)."""
    out: dict[str, ProcessStatus] = {}
    if not directory.is_dir():
        return out
    for path in directory.glob("*.json"):
        try:
            doc: dict[str, Any] = json.loads(path.read_text())
            out[path.stem] = ProcessStatus(**doc)
        except (OSError, ValueError, TypeError):
            continue
    return out


class StatusPublisher:
    """Publishes a process's :class:`ProcessStatus` from a daemon thread.

    ``refresh`` (optional) is called before each write to copy counters into the status
    (the hot path only increments plain attributes of its own). Use as a context
    manager; on exit the last figures are written once more.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        refresh: Callable[[ProcessStatus], None] | None = None,
        every: float = PUBLISH_EVERY_S,
    ) -> None:
        self.status = ProcessStatus(name)
        self.path = run_dir(settings) / f"{name}.json"
        self._refresh = refresh
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"status-{name}", daemon=True)

    def publish(self) -> None:
        if self._refresh is not None:
            self._refresh(self.status)
        with contextlib.suppress(OSError):  # best effort: a full disk must not stop the app
            write_status(self.path, self.status)

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self.publish()

    def __enter__(self) -> StatusPublisher:
        self.publish()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        self.publish()
