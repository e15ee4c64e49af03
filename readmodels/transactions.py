"""One DuckLake transaction, run again when another writer got in first.

Several processes write one lake: the sink, a replay beside it, sink replicas on a
PostgreSQL catalog. DuckLake refuses a commit that conflicts with another writer's
(or, on SQLite, finds the catalog locked by it); the whole transaction is then rolled
back and may simply be run again. :func:`in_transaction` does that, with a short,
growing, jittered wait, and gives up with the error after :data:`ATTEMPTS`.

On a SQLite catalog the writers of every process also take turns: :class:`WriteLock`, an
exclusive lock on a file beside the catalog, held from BEGIN to COMMIT. Without it a
long transaction (a replay creating its model: about 2 s on a loaded machine) lost
every commit to the sink's, which commits every few hundred milliseconds: SQLite
refuses the write of a transaction whose snapshot another writer moved on from
(``database is locked``, at once, whatever the busy timeout), and retrying only met the
sink's next commit (a CI run gave up after 8 attempts). Taking turns, no SQLite commit is
refused and a long transaction delays the sink by its own length once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import duckdb

from readmodels.lake import LAKE, LakeLocation

log = logging.getLogger("readmodels")

ATTEMPTS = 8
FIRST_WAIT_S = 0.05
"""First wait after a conflict; doubled each time, with jitter, at most a second."""

T = TypeVar("T")

LOCK_WAIT_S = 120.0
"""How long a writer waits for its turn before it gives up with an error naming the lock.

Long enough for any one transaction of this project (the longest, a replay's model
creation, took seconds); a holder that is stopped (SIGSTOP) or hung blocks no one forever."""

POLL_S = 0.001
"""How often a waiting writer tries again: the sink lets go for the few milliseconds it
spends parsing its next batch, and a waiter must catch that gap."""


class WriteLock:
    """Turns at writing one SQLite catalog, for every process that writes it.

    An exclusive ``flock`` on ``<catalog>.write.lock``, taken before BEGIN and given back
    after COMMIT or ROLLBACK: the kernel gives it back too when a holder dies (SIGKILL),
    so a crashed writer never leaves it taken. Waiting polls every :data:`POLL_S` (a
    blocked ``flock`` has no deadline). A PostgreSQL catalog needs no turns (its writers
    meet DuckLake's conflict check and :func:`in_transaction`'s retries), nor does a
    connection with no lake: :meth:`held` then does nothing.
    """

    def __init__(self, catalog_file: Path | None) -> None:
        self.path = None if catalog_file is None else Path(f"{catalog_file}.write.lock")

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection) -> WriteLock:
        """The lock of the lake ``con`` (or a cursor of it) has attached."""
        row = con.execute(
            "SELECT path FROM duckdb_databases() WHERE database_name = ? AND type = 'ducklake'",
            [LAKE],
        ).fetchone()
        return cls(LakeLocation(str(row[0]), "").sqlite_file if row and row[0] else None)

    @contextlib.contextmanager
    def held(self, timeout: float = LOCK_WAIT_S) -> Iterator[float]:
        """Hold the lock for the ``with`` block; yields how long it waited (s)."""
        if self.path is None:
            yield 0.0
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            began = time.monotonic()
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - began
                    if waited >= timeout:
                        raise TimeoutError(
                            f"another process has held {self.path} for {waited:.0f} s "
                            f"(a writer of the same read models, stopped or hung)"
                        ) from None
                    time.sleep(POLL_S)
            yield time.monotonic() - began
        finally:
            os.close(fd)  # closing the last descriptor gives the lock back


def is_conflict(exc: BaseException) -> bool:
    """True if ``exc`` is DuckLake refusing a commit because another writer got in first:
    another transaction changed the same thing (or kept winning DuckLake's own retries), or,
    on a SQLite catalog, held its write lock: the transaction may be run again."""
    text = str(exc)
    return isinstance(exc, duckdb.TransactionException) and (
        "Transaction conflict" in text
        or "maximum retry count" in text
        or "database is locked" in text
    )


def error_line(exc: BaseException, limit: int = 200) -> str:
    """The line of a (DuckDB) error that says why: DuckDB puts the context first and the
    cause last (``Failed to commit DuckLake transaction.`` ... ``database is locked``)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[-1] if lines else type(exc).__name__
    if len(line) <= limit:
        return line
    # The cause ends the line (``Could not write file "<long path>": No space left on
    # device``): shorten the middle, never the end.
    head = limit // 3
    return f"{line[:head]}...{line[len(line) - (limit - head - 3):]}"


def rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back the open transaction, if any: a COMMIT that failed (a DuckLake conflict)
    has already ended it, and a second error would hide the first."""
    with contextlib.suppress(duckdb.TransactionException):  # no transaction is active
        con.execute("ROLLBACK")


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection, lock: WriteLock | None = None) -> Iterator[None]:
    """BEGIN ... COMMIT around the ``with`` block, in this process's turn at writing the
    catalog (``lock``, else the one of ``con``'s lake); rolled back if the block or the
    COMMIT fails."""
    with (lock or WriteLock.of(con)).held():
        con.execute("BEGIN")
        try:
            yield
            con.execute("COMMIT")
        except BaseException:
            rollback(con)
            raise


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (1-based)."""
    return min(FIRST_WAIT_S * 2 ** (attempt - 1), 1.0) * random.uniform(0.5, 1.0)


def in_transaction(
    con: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T], what: str
) -> T:
    """``work(con)`` inside BEGIN ... COMMIT, all or nothing, in this process's turn at
    writing the catalog (:class:`WriteLock`); run again on a conflict."""
    lock = WriteLock.of(con)
    attempt = 0
    while True:
        attempt += 1
        try:
            with transaction(con, lock):
                result = work(con)
            return result
        except BaseException as exc:
            if not is_conflict(exc) or attempt >= ATTEMPTS:
                raise
            wait = backoff(attempt)
            log.info("%s conflicted with another writer's commit; again in %.0f ms",
                     what, wait * 1000)  # fmt: skip
            time.sleep(wait)
