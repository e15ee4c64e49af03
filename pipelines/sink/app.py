"""The DuckDB sink: every typed, service, dead-letter, alert and analytics topic into
DuckLake read models, exactly once (``shopstream run sink``, part of ``shopstream up``).

Wiring: one Quix app reads every topic of :data:`pipelines.sink.feeds.FEEDS` as raw bytes
into one :class:`LakeSink`. The sink stages records as they come (a tuple each, nothing
parsed) and writes them when Quix commits a checkpoint: one DuckLake transaction for all
tables with the offsets (:class:`pipelines.sink.writer.LakeWriter`). Records at offsets
the read models already hold are skipped, so a restart or a replayed checkpoint writes
nothing twice.

* **Generations.** The read models belong to one broker (:mod:`readmodels.generations`):
  on a new broker the sink starts a new generation and says so.
* **Backpressure.** If the lake cannot be written (disk full, catalog locked), the sink
  tells Quix to pause for a while and retry the same records (``SinkBackpressureError``),
  says why in its log and its status, and goes on once it can: nothing is lost.
* **Housekeeping**, in the sink's own process, every :data:`HOUSEKEEPING_EVERY_S`:
  merge small files, expire snapshots older than :data:`SNAPSHOT_RETENTION`, delete files
  no snapshot needs, keep one ``sink_offsets`` row per partition, drop old generations.
* **Freshness.** The sink commits every :data:`COMMIT_INTERVAL_S`, so an event is in the
  read models well within a second or two of its topic (``benchmarks/sink_throughput.py``).

Quix runs the sink at-least-once: exactly-once comes from the offsets stored with the
rows; Kafka transactions would add cost and nothing else (the sink produces nothing).
The consumer reads ``read_committed``: records of aborted transactions never reach it
(on brokers that hide them; the embedded broker does not, see docs/testing.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
from quixstreams.sinks import BaseSink, SinkBackpressureError

from pipelines.runtime.outputs import AppCounters
from pipelines.runtime.quix import input_topic, quix_app
from pipelines.runtime.running import BuiltApp, run_app
from pipelines.sink.feeds import FEEDS, Feed
from pipelines.sink.writer import LakeWriter, Record
from readmodels import schema as t
from readmodels.generations import Generation, drop_old, generations, open_for
from readmodels.lake import LAKE, LakeLocation, connect
from readmodels.transactions import error_line
from shopstream.admin import create_topics
from shopstream.apps import AppSpec
from shopstream.identity import broker_identity
from shopstream.settings import Settings
from shopstream.topics import CATALOG, Namespace

if TYPE_CHECKING:
    from quixstreams import Application

log = logging.getLogger("pipelines.sink")

APP_NAME = "sink"
GROUP = "shopstream-sink"
COMMIT_INTERVAL_S = 0.3
"""Short: freshness is the user's clock (produced -> visible to a dashboard query)."""
HOUSEKEEPING_EVERY_S = 60.0
SNAPSHOT_RETENTION = timedelta(hours=6)
"""Snapshots kept for "as of" views and for the replay comparison."""
BACKPRESSURE_S = 5.0
"""How long Quix pauses the sink's partitions when the lake cannot be written."""
MERGED_FILE_BYTES = 16 * 1024 * 1024
"""Housekeeping merges files smaller than this, and leaves larger ones alone.

DuckLake's default target (512 MB) made every minute's merge rewrite each table whole,
its small new files with the big one of the minute before: after an hour of ``up`` the
lineage table's file had been written 60 times (61 -> 99 MB) and housekeeping took 8 s."""
REWRITE_DELETED_SHARE = 0.1
"""A data file with at least this share of its rows deleted is rewritten without them.

The latest stock level per store and SKU is replaced every checkpoint (a delete and an
insert), which leaves files mostly deleted that merging never touches: after an hour of
``up`` ``stock_levels`` was 989 files, 514 with delete files, for about 15,000 live
rows, and the inventory queries took 240-260 ms. Rewritten: 46 files, 63-66 ms."""


class LakeSink(BaseSink):
    """Stages records per checkpoint and writes them in one transaction on flush."""

    def __init__(
        self,
        writer: LakeWriter,
        counters: AppCounters,
        reopen: Callable[[], duckdb.DuckDBPyConnection] | None = None,
    ) -> None:
        """``reopen`` (optional) opens a fresh writer connection; the sink swaps it in
        after each housekeeping (see :meth:`_reopen`)."""
        super().__init__()
        self.writer = writer
        self.counters = counters
        self._reopen_connection = reopen
        self.skipped = 0
        self.paused_reason: str | None = None
        self._staged: list[Record] = []
        self._skip = writer.next_offsets
        self._next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY_S

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        self.counters.consumed += 1
        if offset < self._skip.get((topic, partition), 0):
            self.skipped += 1  # already in the read models: a restart or a replayed batch
            return
        self._staged.append((topic, partition, offset, timestamp, key, value, headers))

    def flush(self) -> None:
        staged, self._staged = self._staged, []
        if not staged:
            return
        try:
            result = self.writer.write(staged)
        except (duckdb.IOException, duckdb.TransactionException, OSError) as exc:
            reason = f"{type(exc).__name__}: {error_line(exc)}"
            if self.paused_reason is None:
                log.warning(
                    "sink: cannot write the read models (%s); pausing %.0fs and retrying the "
                    "same records, nothing is lost", reason, BACKPRESSURE_S,
                )  # fmt: skip
            self.paused_reason = reason
            self.counters.error(f"lake write paused: {reason}")
            self.counters.note = f"paused, retrying: {reason}"
            raise SinkBackpressureError(retry_after=BACKPRESSURE_S) from exc
        if self.paused_reason is not None:
            log.info("sink: writing the read models again (was: %s)", self.paused_reason)
            self.paused_reason = None
            self.counters.note = None
        self.counters.produced += result.records
        if time.monotonic() >= self._next_housekeeping:
            self._next_housekeeping = time.monotonic() + HOUSEKEEPING_EVERY_S
            try:
                housekeeping(self.writer.con)
            except duckdb.Error as exc:
                # Housekeeping only tidies what is committed: sink replicas on one catalog
                # tidy at once and conflict now and then. It runs again next time.
                log.warning(
                    "sink housekeeping did not finish (%s: %s); it runs again in %.0fs",
                    type(exc).__name__, error_line(exc), HOUSEKEEPING_EVERY_S,
                )  # fmt: skip
            self._reopen()

    def _reopen(self) -> None:
        """Swap the writer's connection for a fresh one, between checkpoints.

        Why: a DuckLake attach keeps in memory what it learned of every snapshot it
        committed, and the sink commits one every 0.3 s - measured 80-120 KB per commit
        (RSS +1 GB in an hour of ``up``) with one connection, flat when it is opened again
        every 100 commits. A fresh attach costs about 0.3 s once a minute."""
        if self._reopen_connection is None:
            return
        try:
            fresh = self._reopen_connection()
        except Exception as exc:  # keep writing through the old one; try again next time
            log.warning("sink: could not open a fresh lake connection (%s)", error_line(exc))
            return
        self.writer.con.close()
        self.writer.con = fresh

    def on_paused(self) -> None:
        self._staged = []  # Quix seeks back: these records come again


def housekeeping(con: duckdb.DuckDBPyConnection) -> None:
    """Rewrite mostly deleted files, merge small ones, expire old snapshots, delete files no
    snapshot needs, compact the offsets table, drop old generations; log what it did and
    how long it took."""
    started = time.perf_counter()
    files_before = data_files(con)
    # First, the files no snapshot needs since the last round (merged or rewritten away,
    # or of expired snapshots): deleted one round after they were let go, since a query
    # that listed them before may still be reading (a reader's queries take milliseconds;
    # `older_than` is not used: DuckLake 1.5.5 misreads times on a SQLite catalog, below).
    # Before this, every round merged files away and none was deleted: 16,505 of the
    # 18,143 files on disk (6.6 GB) after an hour of `up`.
    removed = con.execute(f"CALL ducklake_cleanup_old_files('{LAKE}', cleanup_all => true)")
    unused = len(removed.fetchall())
    con.execute(
        f"CALL ducklake_rewrite_data_files('{LAKE}', delete_threshold => {REWRITE_DELETED_SHARE})"
    )
    con.execute(
        f"CALL ducklake_merge_adjacent_files('{LAKE}', max_file_size => {MERGED_FILE_BYTES})"
    )
    # By version, not `older_than`: with a SQLite catalog, DuckLake 1.5.5 expired every
    # snapshot for cutoffs within about 12 h of now (measured: a 6 h cutoff kept 1 of 7
    # snapshots a second old). tests/unit/test_lake_writer.py checks recent ones survive.
    # Snapshots replays compare against are kept as long as the replay (pipelines/replay).
    kept = _replay_snapshots(con)
    old = con.execute(
        f"SELECT list(snapshot_id) FROM ducklake_snapshots('{LAKE}') WHERE snapshot_time < ? "
        f"AND snapshot_id < (SELECT max(snapshot_id) FROM ducklake_snapshots('{LAKE}')) "
        "AND NOT list_contains(?, snapshot_id)",
        [datetime.now(UTC) - SNAPSHOT_RETENTION, kept],
    ).fetchone()
    versions = list(old[0] or []) if old else []
    if versions:  # their files are deleted next round
        con.execute(f"CALL ducklake_expire_snapshots('{LAKE}', versions => ?)", [versions])
    newest = generations(con)[-1:]
    for generation in newest:
        offsets = generation.table(t.OFFSETS.name)
        con.execute(
            f"DELETE FROM {offsets} WHERE (topic, kafka_partition, next_offset) NOT IN "
            f"(SELECT topic, kafka_partition, max(next_offset) FROM {offsets} GROUP BY ALL)"
        )
    dropped = drop_old(con)
    log.info(
        "sink housekeeping: data files %d -> %d, %d snapshots expired, %d unused files "
        "deleted, %s in %.2fs",
        files_before, data_files(con), len(versions), unused,
        f"dropped {', '.join(g.schema for g in dropped)}" if dropped else "no generation dropped",
        time.perf_counter() - started,
    )  # fmt: skip


def _replay_snapshots(con: duckdb.DuckDBPyConnection) -> list[int]:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' "
        "AND table_name = ?",
        [LAKE, t.REPLAYS.name],
    ).fetchone()
    if not found or not found[0]:
        return []
    rows = con.execute(
        f"SELECT live_snapshot FROM {LAKE}.main.{t.REPLAYS.name} WHERE live_snapshot IS NOT NULL"
    ).fetchall()
    return [int(r[0]) for r in rows]


def data_files(con: duckdb.DuckDBPyConnection) -> int:
    """How many data files the lake's current snapshot uses."""
    found = con.execute(
        f"SELECT count(*) FROM __ducklake_metadata_{LAKE}.ducklake_data_file "
        "WHERE end_snapshot IS NULL"
    ).fetchone()
    return int(found[0]) if found else 0


def open_generation(con: duckdb.DuckDBPyConnection, settings: Settings) -> Generation:
    """The generation of the broker in ``settings`` (a new one if the newest is another's)."""
    identity = broker_identity(settings)
    previous = generations(con)
    generation, created = open_for(con, identity.broker_id)
    location = LakeLocation.of(settings).describe()
    if created and previous:
        log.info(
            "read models: new %s in %s, because %s belongs to another broker (kept for "
            "analysis)", generation, location, previous[-1],
        )  # fmt: skip
    elif created:
        log.info("read models: new %s in %s", generation, location)
    else:
        log.info("read models: resuming %s in %s", generation, location)
    return generation


def feeds_for(namespace: Namespace) -> dict[str, Feed]:
    """Each topic the sink reads in ``namespace`` -> its feed."""
    return {namespace.topic(feed.topic).name: feed for feed in FEEDS}


def build_sink(
    settings: Settings,
    namespace: Namespace = CATALOG,
    *,
    con: duckdb.DuckDBPyConnection | None = None,
    counters: AppCounters | None = None,
    **quix_options: Any,
) -> BuiltApp:
    """The sink as a Quix app over existing topics, writing through ``con`` (the process's
    one writer connection; opened here if not given)."""
    con = con or connect(settings, read_only=False)
    generation = open_generation(con, settings)
    feeds = feeds_for(namespace)
    sink = LakeSink(
        LakeWriter(con, generation, feeds), counters or AppCounters(),
        reopen=lambda: connect(settings, read_only=False),
    )  # fmt: skip
    group = quix_options.pop("consumer_group", namespace.group(GROUP))
    options: dict[str, Any] = {
        "processing_guarantee": "at-least-once",
        "commit_interval": COMMIT_INTERVAL_S,
    }
    app: Application = quix_app(
        settings, namespace.app(APP_NAME), group, **(options | quix_options)
    )
    for feed in FEEDS:
        app.dataframe(input_topic(app, namespace.topic(feed.topic))).sink(sink)
    return BuiltApp(app, sink)


def run(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run sink``: write the read models until SIGINT/SIGTERM."""
    create_topics(settings, namespace.topics(feed.topic for feed in FEEDS))
    counters = AppCounters()
    latest: list[BuiltApp] = []

    def build() -> BuiltApp:
        # A rebuild (after a failed run) keeps the writer connection, the latest one:
        # the sink opens a fresh one now and then (LakeSink._reopen).
        con = latest[0].processor.writer.con if latest else connect(settings, read_only=False)
        latest[:] = [build_sink(settings, namespace, con=con, counters=counters)]
        return latest[0]

    run_app(
        settings,
        namespace.app(APP_NAME),
        build,
        describe=f"writing {len(FEEDS)} topics into {LakeLocation.of(settings).describe()} "
        f"as group {namespace.group(GROUP)}",
        on_stop=lambda built: f"{counters.produced} records written, "
        f"{built.processor.skipped} skipped as already written",
        counters=counters,
    )


APP = AppSpec(
    name=APP_NAME,
    kind="sink",
    description="Writes every typed, service, dead-letter, alert and analytics topic into "
    "DuckLake read models, exactly once",
    run=run,
    build=lambda settings, namespace: build_sink(settings, namespace),
    group=GROUP,
    reads=tuple(feed.topic.name for feed in FEEDS),
    # Before the services and the router: the read models see the first events too.
    order=5,
    # One writer per DuckLake catalog on SQLite; replicas need the PostgreSQL catalog.
    scalable=False,
)
