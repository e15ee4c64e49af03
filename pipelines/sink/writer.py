"""Writing a checkpoint's records into the read models: one DuckLake transaction, exactly once.

:meth:`LakeWriter.write` takes the records a checkpoint staged (any topics, any
partitions) and, in **one** transaction, inserts every table's rows and the next offset
of each (topic, partition) it wrote into ``sink_offsets``. So rows and offsets commit
together or not at all; after a restart :attr:`LakeWriter.next_offsets` says where each
partition stands, and the sink skips what is already there: the same batch written twice
leaves the same rows. Parsing happens before the transaction, in temp tables, so the
transaction is short (a commit costs tens of milliseconds whatever its size: one per
checkpoint, never one per partition or per row).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.sink.feeds import Feed, lineage_select
from readmodels import schema as t
from readmodels.generations import Generation

log = logging.getLogger("pipelines.sink")

HEADER_TYPE = pa.list_(pa.struct([("k", pa.string()), ("v", pa.binary())]))
RAW_SCHEMA = pa.schema(
    [
        ("topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_ts", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("headers", HEADER_TYPE),
    ]
)
UNREADABLE = """
    SELECT kafka_partition, kafka_offset, 'unreadable', 'the sink could not read this record',
           NULL, 'sink', topic, kafka_partition, kafka_offset, TRY(decode(key)),
           substring(value::VARCHAR, 1, 2000), octet_length(value), false, NULL, NULL,
           to_timestamp(kafka_ts / 1000.0)
    FROM {src} WHERE e IS NULL"""
"""Dead-letter rows for records of event topics the sink cannot parse (not from the router)."""

Record = tuple[str, int, int, int, bytes | None, bytes | None, list[tuple[str, bytes]]]
"""``(topic, partition, offset, timestamp, key, value, headers)`` as Quix hands them over."""


@dataclass(slots=True)
class WriteResult:
    """What one write did."""

    records: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


class LakeWriter:
    """Writes staged records into ``generation`` through ``con`` (the one writer).

    ``feeds`` maps each topic name read (catalog or namespaced) to its :class:`Feed`.
    ``lineage=False`` skips the ``events`` rows (a replay rebuilds the order history only).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        generation: Generation,
        feeds: dict[str, Feed],
        *,
        lineage: bool = True,
    ) -> None:
        self.con = con
        self.generation = generation
        self.feeds = feeds
        self.lineage = lineage
        self.next_offsets: dict[tuple[str, int], int] = self._stored_offsets()

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.con.execute(
            f"SELECT topic, kafka_partition, max(next_offset) "
            f"FROM {self.generation.table(t.OFFSETS.name)} GROUP BY ALL"
        ).fetchall()
        return {(str(topic), int(p)): int(n) for topic, p, n in rows}

    def write(self, records: list[Record]) -> WriteResult:
        """Write ``records`` (already filtered against :attr:`next_offsets`) in one
        transaction; on any error nothing is written and the offsets stay as they were."""
        return self.write_arrow(_arrow(records))

    def write_arrow(self, raw: pa.Table) -> WriteResult:
        """:meth:`write` for records already in an Arrow table of :data:`RAW_SCHEMA`
        (``headers`` may be null when lineage is off)."""
        started = time.perf_counter()
        con = self.con.cursor()
        result = WriteResult(records=raw.num_rows)
        try:
            con.register("raw", raw)
            ends = con.execute(
                "SELECT topic, kafka_partition, max(kafka_offset) + 1 FROM raw GROUP BY ALL"
            ).fetchall()
            selects = self._prepare(con)
            outputs = self._materialize(con, selects)
            con.execute("BEGIN")
            try:
                for table, (temp, _) in outputs.items():
                    target = self.generation.table(table)
                    if table == t.LEVELS.name:  # the latest level per key: replace the keys
                        con.execute(
                            f"DELETE FROM {target} WHERE (store_id, sku) IN "
                            f"(SELECT store_id, sku FROM {temp})"
                        )
                    con.execute(f"INSERT INTO {target} SELECT * FROM {temp}")
                con.execute(
                    f"INSERT INTO {self.generation.table(t.OFFSETS.name)} "
                    "SELECT topic, kafka_partition, max(kafka_offset) + 1, now() FROM raw "
                    "GROUP BY ALL"
                )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            result.rows = {table: rows for table, (_, rows) in outputs.items()}
        finally:
            con.unregister("raw")
            con.close()
        for topic, partition, end in ends:
            key = (str(topic), int(partition))
            self.next_offsets[key] = max(self.next_offsets.get(key, 0), int(end))
        result.seconds = time.perf_counter() - started
        return result

    def _prepare(self, con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
        """Parse each topic once into a temp table; return the SELECTs per target table."""
        selects: dict[str, list[str]] = defaultdict(list)
        topics = [row[0] for row in con.execute("SELECT DISTINCT topic FROM raw").fetchall()]
        for i, topic in enumerate(sorted(topics)):
            feed = self.feeds[topic]
            src = f"src_{i}"
            structure = feed.json_structure
            parsed = (
                f"TRY(json_transform(TRY(decode(value)), '{structure}'))"
                if structure is not None
                else "NULL"
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {src} AS SELECT topic, kafka_partition, "
                f"kafka_offset, kafka_ts, key, value, headers, {parsed} AS e "
                "FROM raw WHERE topic = ?",
                [topic],
            )
            for table, select in feed.inserts:
                selects[table.name].append(select.format(src=src))
            if feed.lineage and self.lineage:
                selects[t.EVENTS.name].append(lineage_select(feed).format(src=src))
            if structure is not None:
                selects[t.DEAD_LETTERS.name].append(UNREADABLE.format(src=src))
        return selects

    def _materialize(
        self, con: duckdb.DuckDBPyConnection, selects: dict[str, list[str]]
    ) -> dict[str, tuple[str, int]]:
        """One temp table per target table with rows (the UNION of its feeds' SELECTs):
        ``table -> (temp table, rows)``."""
        sunk_at = datetime.now(UTC)
        outputs: dict[str, tuple[str, int]] = {}
        for table, parts in selects.items():
            temp = f"out_{table}"
            sql = " UNION ALL ".join(f"({part})" for part in parts)
            params = {"sunk_at": sunk_at} if "$sunk_at" in sql else None
            con.execute(f"CREATE OR REPLACE TEMP TABLE {temp} AS {sql}", params)
            found = con.execute(f"SELECT count(*) FROM {temp}").fetchone()
            if found and found[0]:
                outputs[table] = (temp, int(found[0]))
        return outputs


def _arrow(records: list[Record]) -> pa.Table:
    topics, partitions, offsets, stamps, keys, values, headers = (
        zip(*records, strict=True) if records else ([],) * 7
    )
    return pa.Table.from_arrays(
        [
            pa.array(topics, pa.string()),
            pa.array(partitions, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.array(stamps, pa.int64()),
            pa.array(keys, pa.binary()),
            pa.array(values, pa.binary()),
            pa.array([_headers(h) for h in headers], HEADER_TYPE),
        ],
        schema=RAW_SCHEMA,
    )


def _headers(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    return [(name, value if value is not None else b"") for name, value in headers]
