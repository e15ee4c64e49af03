"""Generations of the read models: one per broker, because they are keyed by its offsets.

The sink stores, with the rows, the offset up to which it wrote each topic partition
(exactly-once). Those offsets mean something only on the broker they came from: the
embedded broker forgets every topic when it stops, and a new broker starts its offsets at
zero again. So the read models of each broker are a generation of their own - a DuckLake
schema ``gen_0001``, ``gen_0002`` ... - listed in ``lake.main.generations`` with the
broker's id (:mod:`shopstream.identity`). The sink writes into the newest generation if it
belongs to the broker at hand, else starts a new one and says so; readers read the
newest. Older generations stay, for analysis, until housekeeping drops them (the last
:data:`KEEP_GENERATIONS` are kept).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from readmodels.lake import LAKE
from readmodels.schema import GENERATIONS, TABLES
from readmodels.transactions import WriteLock, transaction

KEEP_GENERATIONS = 3
OPEN_ATTEMPTS = 5
"""Tries to open a generation when other sinks create one at the same moment."""
REGISTRY = f"{LAKE}.main.{GENERATIONS.name}"


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation of the read models."""

    number: int
    schema: str
    broker_id: str
    created_at: datetime | None = None

    def table(self, name: str) -> str:
        """The qualified name of a read-model table of this generation."""
        return f"{LAKE}.{self.schema}.{name}"

    def __str__(self) -> str:
        return f"generation {self.number} ({self.schema}, broker {self.broker_id})"


def schema_name(number: int) -> str:
    return f"gen_{number:04d}"


def _registry_exists(con: duckdb.DuckDBPyConnection) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'"
        " AND table_name = ?",
        [LAKE, GENERATIONS.name],
    ).fetchone()
    return bool(found and found[0])


def generations(con: duckdb.DuckDBPyConnection) -> list[Generation]:
    """Every generation, oldest first (none before the sink first ran)."""
    if not _registry_exists(con):
        return []
    rows = con.execute(
        f"SELECT generation, schema_name, broker_id, created_at FROM {REGISTRY} "
        "ORDER BY generation"
    ).fetchall()
    return [Generation(int(n), str(s), str(b), c) for n, s, b, c in rows]


def current(con: duckdb.DuckDBPyConnection) -> Generation | None:
    """The newest generation, the one the sink writes and readers read."""
    found = generations(con)
    return found[-1] if found else None


def open_for(con: duckdb.DuckDBPyConnection, broker_id: str) -> tuple[Generation, bool]:
    """The generation of ``broker_id``: the newest one if it is that broker's, else a new
    one, created with every table in one transaction. Returns ``(generation, created)``.

    Safe when several sinks (replicas on a shared catalog) start at once: they race to
    create the same generation, DuckLake lets one commit and fails the others (a
    conflict, or the schema already there); a loser rolls back, reads the registry again
    and takes the winner's generation (``created`` False). Exactly one ``created`` True.
    """
    for attempt in range(1, OPEN_ATTEMPTS + 1):
        newest = current(con)
        if newest is not None and newest.broker_id == broker_id:
            return newest, False
        number = newest.number + 1 if newest is not None else 1
        made = Generation(number, schema_name(number), broker_id)
        try:
            _create(con, made)
        except (duckdb.TransactionException, duckdb.CatalogException):
            if attempt == OPEN_ATTEMPTS:
                raise
            continue  # another sink created it first: read the registry again
        return made, True
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _create(con: duckdb.DuckDBPyConnection, made: Generation) -> None:
    with transaction(con):
        if not _registry_exists(con):
            con.execute(f"CREATE TABLE {REGISTRY} ({GENERATIONS.columns})")
        con.execute(f"CREATE SCHEMA {LAKE}.{made.schema}")
        for table in TABLES:
            con.execute(f"CREATE TABLE {made.table(table.name)} ({table.columns})")
        con.execute(
            f"INSERT INTO {REGISTRY} VALUES (?, ?, ?, now(), ?)",
            [made.number, made.schema, made.broker_id, "read models of this broker"],
        )


def drop_old(con: duckdb.DuckDBPyConnection, keep: int = KEEP_GENERATIONS) -> list[Generation]:
    """Drop every generation but the newest ``keep``; return what was dropped."""
    dropped = generations(con)[:-keep] if keep > 0 else []
    lock = WriteLock.of(con)
    for old in dropped:
        # If another replica's housekeeping dropped it first, this fails: next time.
        with transaction(con, lock):
            con.execute(f"DROP SCHEMA IF EXISTS {LAKE}.{old.schema} CASCADE")
            con.execute(f"DELETE FROM {REGISTRY} WHERE generation = ?", [old.number])
    return dropped
