"""Keeps the SQLite catalog's write-ahead log in place while the sink writes.

Why: DuckDB's ``sqlite`` extension opens a SQLite connection for each transaction and
closes it at the end. When the closing connection is the last one on the file, SQLite
checkpoints the log and deletes it under an exclusive lock on the database, and the next
connection builds it again. A reader in another process (the dashboard) that starts a
transaction meanwhile meets that lock, and the SQLite the extension carries is built
without ``usleep``: its busy handler sleeps a whole second. Measured with a writer
committing every 100 ms and a reader polling every 20 ms for 30-40 s: 5-6 reader queries
of about 1 s without a keeper, 0-1 with one.

:class:`CatalogKeeper` is a child process that holds one idle connection that has read
the catalog once. In WAL mode such a connection keeps a shared lock on the database file
until it closes, so no other connection is ever the last one: the log stays, and it is
checkpointed as usual (the keeper holds no read transaction, so it pins no snapshot).

A child process, not a connection of the sink's own: Python's ``sqlite3`` is another copy
of SQLite than the extension's, and two copies in one process share its POSIX locks (one
closing its file descriptor drops the other's locks), which SQLite warns corrupts
databases. The child ends when its standard input closes: when :meth:`close` is called, or
when the sink's process ends in any way, SIGKILL included.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("readmodels.keeper")

_HOLD_OPEN = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
con.execute("SELECT count(*) FROM sqlite_master").fetchall()
print("ready", flush=True)
sys.stdin.read()
"""
"""The child: read once (the shared lock), say so, wait for standard input to close."""


class CatalogKeeper:
    """One idle SQLite connection on ``catalog`` in a child process, until :meth:`close`."""

    def __init__(self, catalog: Path) -> None:
        """Start the child and wait until its connection holds the file (the catalog must
        exist: the sink's writer connection creates it)."""
        self.catalog = catalog
        self._child = subprocess.Popen(
            [sys.executable, "-I", "-c", _HOLD_OPEN, str(catalog)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._child.stdout is not None
        if self._child.stdout.readline().strip() == "ready":
            log.info("sink: %s held open by process %d, so readers never wait on its log",
                     catalog, self._child.pid)  # fmt: skip
        else:
            # Not fatal: the read models work without it, a reader now and then a second late.
            _, err = self._child.communicate(timeout=10)
            why = (err or "").strip().splitlines()[-1:] or ["it exited"]
            log.warning("sink: no keeper for %s (%s); readers may wait a second now and then",
                        catalog, why[0])  # fmt: skip

    @property
    def holding(self) -> bool:
        """Whether the child is there, holding its connection."""
        return self._child.poll() is None

    def close(self) -> None:
        """Let the connection go (the log is checkpointed and removed if it was the last)."""
        if self._child.stdin is not None and not self._child.stdin.closed:
            self._child.stdin.close()
        try:
            self._child.wait(10)
        except subprocess.TimeoutExpired:
            self._child.kill()
            self._child.wait(10)
        for stream in (self._child.stdout, self._child.stderr):
            if stream is not None:
                stream.close()
