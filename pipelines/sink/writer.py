"""Writing a batch of records into the read models: one DuckLake transaction, exactly once.

A batch (:data:`Batch`) holds each topic's records as one Arrow table
(:data:`TOPIC_SCHEMA`): the sink gathers it record by record in a :class:`Staging`, a
replay column by column from its consumer. :meth:`LakeWriter.write_batch` writes it in
**one** transaction: every table's rows and the next offset of each (topic, partition)
in ``sink_offsets``, so rows and offsets commit together or not at all. After a restart
:attr:`LakeWriter.next_offsets` says where each partition stands, and records below it
are dropped before anything is written: the same batch written twice leaves the same
rows. A commit costs tens of milliseconds whatever its size: one per batch, never one
per partition or per row.

Each topic's JSON is parsed once, vectorised, into a temp table before the transaction
(:mod:`pipelines.sink.feeds` says what each topic's rows are); the transaction then
inserts every table's rows straight from it. Only the rows pre-aggregates are rolled up
from (orders, order lines, returns, questions) and the latest stock levels are
materialised first.

Several writers on one catalog (sink replicas on PostgreSQL, one consumer group) keep
those guarantees: each partition has one owner at a time, and inside the transaction the
writer checks the stored offsets of the partitions it writes, so records another replica
wrote before the partition moved are dropped, not written twice. Two commits that
conflict (both replace stock levels) fail one of them as a whole in DuckLake;
:meth:`LakeWriter.write_batch` then writes the same records again, up to
:data:`readmodels.transactions.ATTEMPTS` times, before it gives up with the error.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.sink.feeds import Feed, lineage_select
from readmodels import schema as t
from readmodels.generations import Generation
from readmodels.transactions import (
    ATTEMPTS,
    WriteLock,
    backoff,
    error_line,
    is_conflict,
    transaction,
)
from shopstream.events import APP_HEADER, EMITTED_AT_HEADER

log = logging.getLogger("pipelines.sink")

HEADER_TYPE = pa.list_(pa.struct([("k", pa.string()), ("v", pa.binary())]))
TOPIC_SCHEMA = pa.schema(
    [
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_ts", pa.int64()),
        ("key", pa.binary()),
        ("value", pa.binary()),
        ("app_header", pa.binary()),
        ("emitted_at_header", pa.binary()),
        ("headers", HEADER_TYPE),
    ]
)
"""One topic's records in a :data:`Batch`. The two headers the lineage reads have columns
of their own; ``headers`` holds all of a record's headers only for topics whose rows read
more (dead letters: :attr:`pipelines.sink.feeds.Feed.reads_headers`), else nulls."""
Batch = dict[str, pa.Table]
"""Records to write: topic name -> its records (:data:`TOPIC_SCHEMA`)."""


class Tables:
    """A :data:`Batch` that later batches can be appended to (without copying)."""

    __slots__ = ("batch",)

    def __init__(self, batch: Batch | None = None) -> None:
        self.batch: Batch = batch if batch is not None else {}

    def __len__(self) -> int:
        return sum(table.num_rows for table in self.batch.values())

    def absorb(self, other: Tables) -> None:
        """Append ``other``'s records (which come after these) to these."""
        for topic, table in other.batch.items():
            mine = self.batch.get(topic)
            self.batch[topic] = table if mine is None else pa.concat_tables([mine, table])
        other.batch = {}
Headers = list[tuple[str, bytes | None]]
Record = tuple[str, int, int, int, bytes | None, bytes | None, Headers | None]
"""``(topic, partition, offset, timestamp, key, value, headers)`` as Quix hands them over."""

UNREADABLE = """
    SELECT kafka_partition, kafka_offset, 'unreadable', 'the sink could not read this record',
           NULL, 'sink', topic, kafka_partition, kafka_offset, TRY(decode(key)),
           substring(value::VARCHAR, 1, 2000), octet_length(value), false, NULL, NULL,
           to_timestamp(kafka_ts / 1000.0)
    FROM {src} WHERE e IS NULL"""
"""Dead-letter rows for records of event topics the sink cannot parse (not from the router)."""


THREADS = 1
"""DuckDB threads of the sink's writer connection. It shares its process with Quix's loop,
writes batches of every topic, most of them small, on a small machine: measured on 2 cores,
320,357 records of every topic in one write took 1.67 s on one thread, 2.83 s on two. (A
replay's batches of 200,000 orders are another matter: :mod:`pipelines.replay.engine`.)"""


@dataclass(slots=True)
class WriteResult:
    """What one write did."""

    records: int = 0
    """Records written."""
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: int = 0
    """Records dropped before writing: at offsets the lake already held."""
    conflicts: int = 0
    """Commits that lost to another writer's and were written again."""
    already_written: int = 0
    """Records dropped because another writer had written them (found in the transaction)."""


class AlreadyWritten(Exception):
    """Some records of the batch are below the offsets the lake already holds: another
    writer wrote them (the partition moved to this one since)."""

    def __init__(self, stored: dict[tuple[str, int], int]) -> None:
        super().__init__(f"already written up to {stored}")
        self.stored = stored


STAGED_FIELDS = 7
"""Values :meth:`Staging.add` keeps per record, in :data:`TOPIC_SCHEMA`'s order (its
columns but ``headers``)."""


class Staging:
    """Records gathered for one write, per topic, in one flat list of
    :data:`STAGED_FIELDS` values per record.

    :meth:`add` is on the sink's hot path (once per record): one list extend, and no
    object kept per record, so the garbage collector has nothing new to walk. (A flat
    list, not a list per column: one call instead of seven, and the columns are sliced
    out at C speed once per write. Measured on 289,921 records in checkpoints of 10,000,
    add and :func:`to_batch` together: 0.37-0.44 s against 0.45-0.51 s.) Of a record's
    headers it keeps the two the lineage reads (``app``, ``emitted_at``), and the whole
    list only for ``all_headers`` topics. Why: a record's headers are about 20 Python
    objects, two thirds of what a staged record holds; kept until the checkpoint's write,
    the consumer touched new memory for every record (measured on 300,204 records:
    110,000 page faults instead of 49,000, and 0.3-0.5 s more of the consumer thread's
    time). The Arrow tables are made once per write (:func:`to_batch`).
    """

    __slots__ = ("_all_headers", "_topics")

    def __init__(self, all_headers: Collection[str] = ()) -> None:
        self._all_headers = frozenset(all_headers)
        self._topics: dict[str, tuple[list[Any], list[Headers | None] | None]] = {}

    def add(
        self,
        topic: str,
        partition: int,
        offset: int,
        timestamp: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None,
    ) -> None:
        staged = self._topics.get(topic)
        if staged is None:
            staged = self._topics[topic] = ([], [] if topic in self._all_headers else None)
        fields, all_headers = staged
        app = emitted_at = None
        if headers:
            # Every app's outputs end with these two (pipelines.runtime.outputs): looked up
            # there first, the whole list only otherwise (measured: add's own time halved).
            if (len(headers) > 1 and headers[-1][0] == EMITTED_AT_HEADER
                    and headers[-2][0] == APP_HEADER):  # fmt: skip
                app, emitted_at = headers[-2][1], headers[-1][1]
            else:
                for name, content in headers:
                    if name == APP_HEADER:
                        app = content
                    elif name == EMITTED_AT_HEADER:
                        emitted_at = content
        fields += (partition, offset, timestamp, key, value, app, emitted_at)
        if all_headers is not None:
            all_headers.append(headers)

    def extend(self, records: Iterable[Record]) -> Staging:
        for record in records:
            self.add(*record)
        return self

    def __len__(self) -> int:
        return sum(len(fields) for fields, _ in self._topics.values()) // STAGED_FIELDS

    def topics(self) -> dict[str, tuple[list[Any], list[Headers | None] | None]]:
        """Topic -> ``(fields, all headers or None)``: ``fields`` holds each record's
        partition, offset, timestamp, key, value, app header and emitted_at header, one
        record after the other."""
        return self._topics


class LakeWriter:
    """Writes batches into ``generation`` through ``con`` (the one writer).

    ``feeds`` maps each topic name read (catalog or namespaced) to its :class:`Feed`.
    ``lineage=False`` skips the ``events`` rows and ``rollups=False`` the pre-aggregates
    (a replay rebuilds the order history only: see :func:`pipelines.replay.engine.compare`).
    ``threads`` is DuckDB's (see :data:`THREADS`).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        generation: Generation,
        feeds: dict[str, Feed],
        *,
        lineage: bool = True,
        rollups: bool = True,
        threads: int | None = THREADS,
    ) -> None:
        self.threads = threads
        self.use(con)
        self.generation = generation
        self.feeds = feeds
        self.lineage = lineage
        self.rollups = rollups
        self.next_offsets: dict[tuple[str, int], int] = self._stored_offsets()
        self._all_headers = frozenset(topic for topic, feed in feeds.items() if feed.reads_headers)
        self._own: set[tuple[str, int]] = set()
        """Partitions this writer wrote since it last read their stored offsets: it is
        their only writer until they are assigned again (:meth:`refresh`), so their
        stored offsets are not read back in every transaction."""

    def use(self, con: duckdb.DuckDBPyConnection) -> None:
        """Write through ``con`` from now on, with DuckDB on :attr:`threads` threads
        (``None``: DuckDB's default, one per core)."""
        if self.threads is not None:
            con.execute(f"SET threads = {self.threads}")
        self.con = con
        self.lock = WriteLock.of(con)
        """This process's turns at writing the catalog (taken around each transaction)."""

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        rows = self.con.execute(
            f"SELECT topic, kafka_partition, max(next_offset) "
            f"FROM {self.generation.table(t.OFFSETS.name)} GROUP BY ALL"
        ).fetchall()
        return {(str(topic), int(p)): int(n) for topic, p, n in rows}

    def refresh(self) -> None:
        """Read the stored offsets again (partitions were assigned: another writer may
        have written some since), and check them again in the next transaction that
        writes each partition. Not while a write is in flight."""
        self.next_offsets.update(self._stored_offsets())
        self._own.clear()

    def staging(self) -> Staging:
        """An empty :class:`Staging` for this writer's feeds (all headers kept only of
        the topics whose rows read them)."""
        return Staging(self._all_headers)

    def batch_of(self, staging: Staging) -> Batch:
        """The Arrow tables of ``staging``'s records."""
        return to_batch(staging)

    def write(self, records: list[Record]) -> WriteResult:
        """:meth:`write_batch` for records as tuples (tests, benchmarks, the notebook's data)."""
        return self.write_batch(self.batch_of(self.staging().extend(records)))

    def write_batch(self, batch: Batch) -> WriteResult:
        """Write ``batch`` in one transaction; on any error nothing is written and the
        offsets stay as they were.

        Records at offsets the lake already holds (:attr:`next_offsets`) are dropped
        first. A commit that conflicts with another writer's is written again (after a
        short, growing wait); records another writer already holds are dropped first.
        Either way one transaction per attempt: rows and offsets commit together or not
        at all.
        """
        started = time.perf_counter()
        batch, skipped = _unwritten(batch, self.next_offsets)
        conflicts = dropped = 0
        while True:
            try:
                result = self._write_once(batch)
                break
            except AlreadyWritten as exc:
                for key, stored in exc.stored.items():
                    self.next_offsets[key] = max(self.next_offsets.get(key, 0), stored)
                batch, gone = _unwritten(batch, self.next_offsets)
                dropped += gone
                log.info(
                    "sink: %d records were already written by another writer (a partition "
                    "moved here); writing the other %d", gone, _records(batch),
                )  # fmt: skip
            except duckdb.TransactionException as exc:
                conflicts += 1
                if not is_conflict(exc) or conflicts >= ATTEMPTS:
                    raise
                wait = backoff(conflicts)
                log.info(
                    "sink: commit conflicted with another writer's (%s); writing the same "
                    "%d records again in %.0f ms (attempt %d of %d)",
                    error_line(exc, 160), _records(batch), wait * 1000,
                    conflicts + 1, ATTEMPTS,
                )  # fmt: skip
                time.sleep(wait)
        result.skipped, result.conflicts, result.already_written = skipped, conflicts, dropped
        result.seconds = time.perf_counter() - started
        return result

    def _write_once(self, batch: Batch) -> WriteResult:
        result = WriteResult(records=_records(batch))
        if not result.records:
            return result
        con = self.con.cursor()
        offsets = self.generation.table(t.OFFSETS.name)
        topics = sorted(batch)
        positions = _positions(batch)
        columns = [column.to_pylist() for column in positions.columns]
        written = {(str(tp), int(p)): int(end) for tp, p, _, end in zip(*columns, strict=True)}
        try:
            for i, topic in enumerate(topics):
                con.register(f"in_{i}", batch[topic])
            con.register("positions", positions)
            inserts, rollups = self._prepare(con, topics)
            staged = self._stage(con, inserts, rollups)
            sunk_at = {"sunk_at": datetime.now(UTC)}
            # One transaction, in its turn at the catalog (WriteLock says why).
            with transaction(con, self.lock):
                # In the transaction's snapshot: did another writer get here first? Asked
                # for the partitions this writer does not know it alone writes.
                if not self._own.issuperset(written):
                    ahead = con.execute(
                        f"SELECT o.topic, o.kafka_partition, max(o.next_offset) "
                        f"FROM {offsets} o JOIN positions p USING (topic, kafka_partition) "
                        "GROUP BY ALL HAVING max(o.next_offset) > min(p.first_offset)"
                    ).fetchall()
                    if ahead:
                        raise AlreadyWritten(
                            {(str(tp), int(p)): int(n) for tp, p, n in ahead}
                        )
                for table, parts in inserts.items():
                    target = self.generation.table(table)
                    if table in staged:
                        if table == t.LEVELS.name:  # the latest level per key: replace them
                            con.execute(
                                f"DELETE FROM {target} WHERE (store_id, sku) IN "
                                f"(SELECT store_id, sku FROM {staged[table]})"
                            )
                        sql = f"SELECT * FROM {staged[table]}"
                    else:
                        sql = " UNION ALL ".join(f"({part})" for part in parts)
                    params = sunk_at if "$sunk_at" in sql else None
                    found = con.execute(f"INSERT INTO {target} {sql}", params).fetchone()
                    if found and found[0]:
                        result.rows[table] = int(found[0])
                con.execute(
                    f"INSERT INTO {offsets} "
                    "SELECT topic, kafka_partition, next_offset, now() FROM positions"
                )
        finally:
            for i in range(len(topics)):
                con.unregister(f"in_{i}")
            con.unregister("positions")
            con.close()
        for (topic, partition), end in written.items():
            self.next_offsets[(topic, partition)] = max(
                self.next_offsets.get((topic, partition), 0), end
            )
        self._own.update(written)
        return result

    def _prepare(
        self, con: duckdb.DuckDBPyConnection, topics: list[str]
    ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
        """Parse each topic once into a temp table ``src_<i>``; return the SELECTs per
        target table, and per pre-aggregate the SELECTs over its source's rows."""
        inserts: dict[str, list[str]] = defaultdict(list)
        rollups: dict[str, list[str]] = defaultdict(list)
        for i, topic in enumerate(topics):
            feed = self.feeds[topic]
            src = f"src_{i}"
            unreadable = _parse(con, f"in_{i}", src, topic, feed.json_structure)
            for table, select in feed.inserts:
                inserts[table.name].append(select.format(src=src))
            for table, source, select in feed.rollups if self.rollups else ():
                rollups[table.name].append(select.format(rows=f"out_{source.name}"))
            if feed.lineage and self.lineage:
                inserts[t.EVENTS.name].append(lineage_select(feed).format(src=src))
            if unreadable:
                inserts[t.DEAD_LETTERS.name].append(UNREADABLE.format(src=src))
        inserts.update(rollups)  # after their sources: they read them
        return inserts, rollups

    def _stage(
        self,
        con: duckdb.DuckDBPyConnection,
        inserts: dict[str, list[str]],
        rollups: dict[str, list[str]],
    ) -> dict[str, str]:
        """Materialise, before the transaction, the rows that are read twice: the sources
        of the pre-aggregates and the latest stock levels (their keys are replaced).
        Returns ``table -> temp table``."""
        sources = {source.name for feed in self.feeds.values() for _, source, _ in feed.rollups}
        wanted = [table for table in inserts
                  if (table in sources and rollups) or table == t.LEVELS.name]  # fmt: skip
        staged: dict[str, str] = {}
        for table in wanted:
            temp = f"out_{table}"
            sql = " UNION ALL ".join(f"({part})" for part in inserts[table])
            con.execute(f"CREATE OR REPLACE TEMP TABLE {temp} ({t.TABLES_BY_NAME[table].columns})")
            con.execute(f"INSERT INTO {temp} {sql}")
            staged[table] = temp
        return staged


def to_batch(staging: Staging) -> Batch:
    """The Arrow tables (:data:`TOPIC_SCHEMA`) of ``staging``'s records."""
    batch: Batch = {}
    n = STAGED_FIELDS
    for topic, (fields, headers) in staging.topics().items():
        columns = [pa.array(fields[i::n], TOPIC_SCHEMA.field(i).type) for i in range(n)]
        columns.append(
            pa.nulls(len(fields) // n, HEADER_TYPE)
            if headers is None
            else pa.array(headers, HEADER_TYPE)
        )
        batch[topic] = pa.Table.from_arrays(columns, schema=TOPIC_SCHEMA)
    return batch


def _parse(
    con: duckdb.DuckDBPyConnection, records: str, src: str, topic: str, structure: str | None
) -> bool:
    """The Arrow table ``records`` (one topic's) into temp table ``src``, each value parsed
    with ``json_transform`` into ``e`` (``NULL`` if unreadable); ``key`` and ``value`` are
    kept only for unreadable records (the dead-letter rows quote them). Returns whether
    some records may be unreadable.

    Why two ways: ``TRY`` per value makes the parse 1.6x slower (measured: 0.445 s against
    0.276 s for 200,000 orders), and a topic's values are nearly always readable. So the
    batch is parsed without it first; if any value breaks the parse (not UTF-8, not JSON),
    the whole batch is parsed again value by value with ``TRY``. A value that is not
    there (a tombstone) or is JSON's ``null`` parses to ``NULL`` either way."""
    keep = (f"'{topic}' AS topic, kafka_partition, kafka_offset, kafka_ts, app_header, "
            "emitted_at_header, headers")
    if structure is None:  # nothing to parse: the rows read the records as they are
        con.execute(f"CREATE OR REPLACE TEMP VIEW {src} AS SELECT {keep}, key, value "
                    f"FROM {records}")  # fmt: skip
        return False
    unreadable_only = (
        "CASE WHEN e IS NULL THEN key END AS key, CASE WHEN e IS NULL THEN value END AS value"
    )
    create = f"CREATE OR REPLACE TEMP TABLE {src} AS SELECT {keep}, e, {unreadable_only} FROM "
    try:
        con.execute(
            f"{create}(SELECT *, json_transform(decode(value), '{structure}') AS e "
            f"FROM {records})"
        )
    except duckdb.Error:
        con.execute(
            f"{create}(SELECT *, TRY(json_transform(TRY(decode(value)), '{structure}')) AS e "
            f"FROM {records})"
        )
        return True
    nulls = con.execute(f"SELECT count(*) FROM {src} WHERE e IS NULL").fetchone()
    return bool(nulls and nulls[0])


def _records(batch: Batch) -> int:
    return sum(table.num_rows for table in batch.values())


def _positions(batch: Batch) -> pa.Table:
    """``topic, kafka_partition, first_offset, next_offset`` of each partition in ``batch``."""
    parts = []
    for topic, table in batch.items():
        if not table.num_rows:
            continue
        spans = table.group_by("kafka_partition").aggregate(
            [("kafka_offset", "min"), ("kafka_offset", "max")]
        )
        parts.append(pa.table({
            "topic": pa.array([topic] * spans.num_rows, pa.string()),
            "kafka_partition": spans["kafka_partition"],
            "first_offset": spans["kafka_offset_min"],
            "next_offset": pc.add(spans["kafka_offset_max"], 1),
        }))  # fmt: skip
    schema = pa.schema([("topic", pa.string()), ("kafka_partition", pa.int32()),
                        ("first_offset", pa.int64()), ("next_offset", pa.int64())])  # fmt: skip
    return pa.concat_tables(parts).cast(schema) if parts else schema.empty_table()


def _unwritten(batch: Batch, next_offsets: dict[tuple[str, int], int]) -> tuple[Batch, int]:
    """``batch`` without the records below ``next_offsets`` of their partition, and how
    many that dropped."""
    out: Batch = {}
    dropped = 0
    for topic, table in batch.items():
        below = None
        for (of_topic, partition), floor in next_offsets.items():
            if of_topic != topic or floor <= 0:
                continue
            mask = pc.and_(pc.equal(table["kafka_partition"], partition),
                           pc.less(table["kafka_offset"], floor))  # fmt: skip
            below = mask if below is None else pc.or_(below, mask)
        if below is not None:
            kept = table.filter(pc.invert(below))
            dropped += table.num_rows - kept.num_rows
            table = kept
        if table.num_rows:
            out[topic] = table
    return out, dropped
