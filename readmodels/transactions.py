"""One DuckLake transaction, run again when another writer got in first.

Several processes write one lake: the sink, a replay beside it, sink replicas on a
PostgreSQL catalog. DuckLake refuses a commit that conflicts with another writer's
(or, on SQLite, finds the catalog locked by it); the whole transaction is then rolled
back and may simply be run again. :func:`in_transaction` does that, with a short,
growing, jittered wait, and gives up with the error after :data:`ATTEMPTS`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import duckdb

log = logging.getLogger("readmodels")

ATTEMPTS = 8
FIRST_WAIT_S = 0.05
"""First wait after a conflict; doubled each time, with jitter, at most a second."""

T = TypeVar("T")


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


def backoff(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (1-based)."""
    return min(FIRST_WAIT_S * 2 ** (attempt - 1), 1.0) * random.uniform(0.5, 1.0)


def in_transaction(
    con: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T], what: str
) -> T:
    """``work(con)`` inside BEGIN ... COMMIT, all or nothing; run again on a conflict."""
    attempt = 0
    while True:
        attempt += 1
        con.execute("BEGIN")
        try:
            result = work(con)
            con.execute("COMMIT")
            return result
        except BaseException as exc:
            rollback(con)
            if not is_conflict(exc) or attempt >= ATTEMPTS:
                raise
            wait = backoff(attempt)
            log.info("%s conflicted with another writer's commit; again in %.0f ms",
                     what, wait * 1000)  # fmt: skip
            time.sleep(wait)
