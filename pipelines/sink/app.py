"""The DuckDB sink: every typed, service, dead-letter, alert and analytics topic into
DuckLake read models, exactly once (``shopstream run sink``, part of ``shopstream up``).

Wiring: one Quix app reads every topic of :data:`pipelines.sink.feeds.FEEDS` as raw bytes
into one :class:`LakeSink`. The sink stages records as they come (column by column,
nothing parsed) and, at each checkpoint, hands them to its writer thread, which writes
them behind the consumer: one DuckLake transaction for all tables with the offsets
(:class:`pipelines.sink.writer.LakeWriter`). The offsets stored with the rows are the
truth: every partition the sink is given starts there (:func:`own_positions`), and
records at offsets the read models already hold are dropped, so a crash, a restart or a
replayed checkpoint writes nothing twice and loses nothing.

* **Generations.** The read models belong to one broker (:mod:`readmodels.generations`):
  on a new broker the sink starts a new generation and says so.
* **Backpressure.** If the lake cannot be written (disk full, catalog locked), the sink
  tells Quix to pause for a while and retry the same records (``SinkBackpressureError``),
  says why in its log and its status, and goes on once it can: nothing is lost.
* **Housekeeping**, in the sink's own process, in a thread and through a connection of its
  own beside the writes, every :data:`HOUSEKEEPING_EVERY_S`: merge small files, expire
  snapshots older than :data:`SNAPSHOT_RETENTION`, delete files no snapshot needs, keep
  one ``sink_offsets`` row per partition, drop old generations.
* **Freshness and throughput.** Checkpoints come every :data:`COMMIT_INTERVAL_S` and cost
  the consumer almost nothing; the writer writes whatever came while it wrote the last
  batch, so at a trickle an event is written within a write's time of its checkpoint,
  and under load the writes grow; reading a backlog (:data:`BACKLOG_RECORDS`), they
  wait for a larger batch (:data:`CATCH_UP`) (``benchmarks/freshness.py``,
  ``benchmarks/sink_throughput.py``).

Quix runs the sink at-least-once: exactly-once comes from the offsets stored with the
rows; Kafka transactions would add cost and nothing else (the sink produces nothing).
The consumer reads ``read_committed``: records of aborted transactions never reach it
(on brokers that hide them; the embedded broker does not, see docs/testing.md).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import duckdb
from confluent_kafka import KafkaException
from quixstreams.sinks import BaseSink, SinkBackpressureError

from pipelines.runtime.memory import use_jemalloc_for_arrow
from pipelines.runtime.outputs import AppCounters
from pipelines.runtime.quix import input_topic, quix_app
from pipelines.runtime.running import BuiltApp, run_app
from pipelines.sink.behind import CatchUp, WriteBehind, WriteFailing
from pipelines.sink.feeds import FEEDS, Feed
from pipelines.sink.writer import THREADS, LakeWriter, Tables, WriteResult
from readmodels import schema as t
from readmodels.generations import Generation, drop_old, generations, open_for
from readmodels.keeper import CatalogKeeper
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
COMMIT_INTERVAL_S = 0.1
"""Short: freshness is the user's clock (produced -> visible to a dashboard query), and a
checkpoint only hands its records to the writer thread (Kafka's offset commit is the
rest)."""
HOUSEKEEPING_EVERY_S = 60.0
SNAPSHOT_RETENTION = timedelta(hours=6)
"""Snapshots kept for "as of" views and for the replay comparison."""
BACKPRESSURE_S = 5.0
"""How long Quix pauses the sink's partitions when the lake cannot be written."""
MAX_GATHERED = 250_000
"""Records handed over and not yet written before a checkpoint waits for the writer:
bounds the sink's memory (records are about 300 bytes) when the lake is slower than Kafka."""
MERGED_FILE_BYTES = 16 * 1024 * 1024
"""Housekeeping merges files smaller than this, and leaves larger ones alone.

DuckLake's default target (512 MB) made every minute's merge rewrite each table whole,
its small new files with the big one of the minute before: after an hour of ``up`` the
lineage table's file had been written 60 times (61 -> 99 MB) and housekeeping took 8 s."""
CATCH_UP = CatchUp(batch_records=100_000, wait_s=1.0)
"""While the sink reads a backlog, writes wait up to 1 s for 100,000 records
(:class:`pipelines.sink.behind.CatchUp` says why). Measured from a backlog of 300,204
records: 4-5 writes instead of 18-22, the writer busy 1.5-1.8 s instead of 4.4-5.0 s.
Larger (200,000, 2 s) made the last write after the last record 0.35-0.65 s."""
BACKLOG_RECORDS = 10_000
"""The sink reads a backlog while its partitions' lag (the broker's last offsets the
consumer saw, less its positions) adds up to this many records: 10 s of ``up``'s traffic
at 1,000 events/s; live, a checkpoint finds a few hundred at most."""
GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young collections in the sink's process (see :func:`tune_process`)."""
REWRITE_DELETED_SHARE = 0.1
"""A data file with at least this share of its rows deleted is rewritten without them.

The latest stock level per store and SKU is replaced every checkpoint (a delete and an
insert), which leaves files mostly deleted that merging never touches: after an hour of
``up`` ``stock_levels`` was 989 files, 514 with delete files, for about 15,000 live
rows, and the inventory queries took 240-260 ms. Rewritten: 46 files, 63-66 ms."""


class LakeSink(BaseSink):
    """Gathers each checkpoint's records and writes them behind the consumer.

    A checkpoint hands its records to a :class:`~pipelines.sink.behind.WriteBehind` and
    returns: Quix goes on consuming while DuckDB writes in the writer thread (outside the
    GIL, on the other core), and what checkpoints hand over while a write is in flight is
    written next, as one batch (up to :data:`MAX_GATHERED` records; past that a
    checkpoint waits). So Kafka's committed offsets may run ahead of the read models; the
    offsets the read models store with their rows are the truth (:func:`own_positions`
    starts every partition there), and a crash in between loses nothing.

    A write that fails (disk full, catalog locked) keeps its records and is tried again,
    before anything newer, every :data:`BACKPRESSURE_S` and at each checkpoint; while it
    fails the sink asks Quix to pause that long and to deliver the checkpoint's records
    again (``SinkBackpressureError``), says why in its log and its status, and goes on
    once it can: nothing is lost and nothing is written out of order.
    """

    def __init__(
        self,
        writer: LakeWriter,
        counters: AppCounters,
        reopen: Callable[[], duckdb.DuckDBPyConnection] | None = None,
        keeper: CatalogKeeper | None = None,
    ) -> None:
        """``reopen`` (optional) opens a fresh writer connection: with it the sink keeps
        house in a thread of its own, every :data:`HOUSEKEEPING_EVERY_S`
        (:meth:`keep_house`). ``keeper`` (a SQLite catalog's) is closed with the sink."""
        super().__init__()
        self.writer = writer
        self._keeper = keeper
        self.counters = counters
        self._reopen_connection = reopen
        self.skipped = 0
        self.consumer: Any = None
        """The Kafka consumer, once it is given partitions (:func:`own_positions`)."""
        self.paused_reason: str | None = None
        self._staging = self.writer.staging()
        """This checkpoint's records (the consumer's thread only)."""
        self._behind: WriteBehind[Tables] = WriteBehind(
            self._write, Tables, errors=LAKE_ERRORS, failed=self._paused,
            limit=MAX_GATHERED, retry_after=BACKPRESSURE_S, catch_up=CATCH_UP,
            name="lake-writer",
        )  # fmt: skip
        self._fresh: duckdb.DuckDBPyConnection | None = None
        """A connection housekeeping opened, for the writer to write through next."""
        self._fresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._housekeeper: threading.Thread | None = None
        if reopen is not None:
            self._housekeeper = threading.Thread(
                target=self._keep_house_every, name="lake-housekeeping", daemon=True
            )
            self._housekeeper.start()

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
        # Once per record: nothing else here (the checkpoint counts them).
        self._staging.add(topic, partition, offset, timestamp, key, value, headers)

    def flush(self) -> None:
        """A checkpoint: its records go to the writer thread, which may wait for more
        while the sink reads a backlog (:data:`BACKLOG_RECORDS`, :data:`CATCH_UP`).

        Raises ``SinkBackpressureError`` while the read models cannot be written; this
        checkpoint's records are then dropped (Quix delivers them again), the earlier
        ones kept."""
        self._hand_over(backlog=self.lag() >= BACKLOG_RECORDS)

    def _hand_over(self, backlog: bool) -> None:
        checkpoint, self._staging = self._staging, self.writer.staging()
        self.counters.consumed += len(checkpoint)
        try:
            # Into Arrow here, in the consumer's thread: it reads Python objects under the
            # GIL, and in the writer's thread it took the GIL from the consumer in slices
            # of 5 ms (measured: a busy Python thread beside it slowed the consumer from
            # about 100,000 to 2,700 records/s; DuckDB's own work did not).
            self._behind.put(Tables(self.writer.batch_of(checkpoint)), behind=backlog)
        except WriteFailing as exc:
            raise SinkBackpressureError(retry_after=BACKPRESSURE_S) from exc

    def lag(self) -> int:
        """Records in the sink's partitions not read yet, as far as the consumer knows
        (the last offsets its fetches saw; 0 before the first assignment or once the
        consumer is closed). In the consumer's thread."""
        consumer = self.consumer
        if consumer is None:
            return 0
        behind = 0
        try:
            for tp in consumer.position(consumer.assignment()):
                if tp.offset < 0:
                    continue
                _, last = consumer.get_watermark_offsets(tp, cached=True)
                if last > tp.offset:
                    behind += last - tp.offset
        except (KafkaException, RuntimeError):  # closed (RuntimeError) or not answering
            return 0
        return behind

    def drain(self) -> None:
        """Write everything consumed so far, and wait for it (before partitions go, in
        tests). Raises like :meth:`flush`."""
        self._hand_over(backlog=False)
        try:
            self._behind.wait()
        except WriteFailing as exc:
            raise SinkBackpressureError(retry_after=BACKPRESSURE_S) from exc

    def discard(self) -> None:
        """Drop what is not written (once a write in progress ends): it is read again
        from the read models' offsets (:func:`own_positions`)."""
        self._behind.drop()
        self._staging = self.writer.staging()

    def close(self) -> None:
        """Write what is left if the read models take it, then end the writer thread and
        housekeeping (at the end of a run; the sink is not used again)."""
        try:
            self.drain()
        except Exception as exc:  # read again from the read models' offsets next time
            log.warning("sink: %d records not written at the end (%s); they are read again "
                        "at the next start", self._behind.pending, error_line(exc))  # fmt: skip
        self._behind.close()
        self._stop.set()
        if self._housekeeper is not None:
            self._housekeeper.join()
        with self._fresh_lock:
            fresh, self._fresh = self._fresh, None
        if fresh is not None:
            fresh.close()
        if self._keeper is not None:
            self._keeper.close()

    def on_paused(self) -> None:
        self._staging = self.writer.staging()  # Quix seeks back: these records come again

    def _write(self, tables: Tables) -> WriteResult:
        """In the writer thread: the records, through the freshest connection."""
        with self._fresh_lock:
            fresh, self._fresh = self._fresh, None
        if fresh is not None:
            self.writer.con.close()
            self.writer.use(fresh)
        result = self.writer.write_batch(tables.batch)
        self.counters.produced += result.records
        self.skipped += result.skipped
        if self.paused_reason is not None:
            log.info("sink: writing the read models again (was: %s)", self.paused_reason)
            self.paused_reason = None
            self.counters.note = None
        return result

    def _paused(self, exc: BaseException) -> None:
        """In the writer thread: a write failed (it is kept and tried again)."""
        reason = f"{type(exc).__name__}: {error_line(exc)}"
        if not isinstance(exc, LAKE_ERRORS):
            log.error("sink: a write failed (%s); its records are kept and written again",
                      reason, exc_info=exc)  # fmt: skip
        elif self.paused_reason is None:
            log.warning(
                "sink: cannot write the read models (%s); pausing %.0fs and retrying the "
                "same records, nothing is lost", reason, BACKPRESSURE_S,
            )  # fmt: skip
        self.paused_reason = reason
        self.counters.error(f"lake write paused: {reason}")
        self.counters.note = f"paused, retrying: {reason}"

    def keep_house(self) -> None:
        """One round of housekeeping, through a fresh connection of its own, beside the
        writes (they go on; a commit that conflicts with housekeeping's is written again,
        and housekeeping that fails runs again next round). That connection then becomes
        the writer's, swapped in between two writes.

        Why both: housekeeping held the writes for 3.7 s a minute when it ran in the
        writer's thread (the freshness p95 doubled); and a DuckLake attach keeps in memory
        what it learned of every snapshot it committed, and the sink commits several a
        second - measured 80-120 KB per commit (RSS +1 GB in an hour of ``up``) with one
        connection, flat when it is opened again every 100 commits."""
        assert self._reopen_connection is not None
        try:
            con = self._reopen_connection()
        except Exception as exc:  # the writer keeps its connection; next round tries again
            log.warning("sink: could not open a lake connection for housekeeping (%s)",
                        error_line(exc))  # fmt: skip
            return
        con.execute(f"SET threads = {THREADS}")  # beside the writer and the consumer
        try:
            housekeeping(con)
        except duckdb.Error as exc:
            # Housekeeping only tidies what is committed: it conflicts now and then with
            # a write (or with a sink replica's housekeeping). It runs again next round.
            log.warning(
                "sink housekeeping did not finish (%s: %s); it runs again in %.0fs",
                type(exc).__name__, error_line(exc), HOUSEKEEPING_EVERY_S,
            )  # fmt: skip
        with self._fresh_lock:
            old, self._fresh = self._fresh, con
        if old is not None:
            old.close()

    def _keep_house_every(self) -> None:
        while not self._stop.wait(HOUSEKEEPING_EVERY_S):
            self.keep_house()


LAKE_ERRORS = (duckdb.IOException, duckdb.TransactionException, OSError)
"""What a write that the lake refused raises: the sink pauses and retries, never fails."""


def own_positions(app: Application, sink: LakeSink) -> None:
    """Start every partition the sink is given at the read models' offsets, and let a
    partition go only once what was consumed from it is written.

    Why: the sink writes behind the consumer (:class:`LakeSink`), so Quix commits a
    checkpoint's offsets to Kafka before its records are in the read models. The offsets
    the read models store with their rows are the truth: each assignment seeks there (to
    offset 0 where they hold none of a partition: a new generation reads its broker's
    whole log), so a crash after the Kafka commit loses nothing. Before partitions are
    revoked the sink drains, so their next owner, seeking to the same offsets, writes
    nothing twice; lost partitions are dropped (their next owner reads them again).

    Quix has no public hook for this: ``Application`` subscribes with its own bound
    ``_on_assign`` / ``_on_revoke`` / ``_on_lost``, looked up on the instance when it
    runs, so they are wrapped here (tests/unit/test_quix_internals.py checks that).
    """
    quix_assign, quix_revoke, quix_lost = app._on_assign, app._on_revoke, app._on_lost

    def on_assign(consumer: Any, partitions: list[Any]) -> None:
        sink.consumer = consumer
        sink.writer.refresh()  # another replica may have written them since
        for tp in partitions:
            tp.offset = sink.writer.next_offsets.get((tp.topic, tp.partition), 0)
        quix_assign(consumer, partitions)

    def on_revoke(consumer: Any, partitions: list[Any]) -> None:
        try:
            sink.drain()
        except Exception:  # not written: the next owner reads it again
            sink.discard()
        quix_revoke(consumer, partitions)

    def on_lost(consumer: Any, partitions: list[Any]) -> None:
        sink.discard()
        quix_lost(consumer, partitions)

    app._on_assign, app._on_revoke, app._on_lost = on_assign, on_revoke, on_lost  # type: ignore[method-assign]


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
    # These calls do not wait for the catalog's write lock (readmodels.transactions), which
    # would hold the writer's commits behind them again: one that conflicts with a write
    # fails, and runs again next round.
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
    location = LakeLocation.of(settings)
    sink = LakeSink(
        LakeWriter(con, generation, feeds), counters or AppCounters(),
        reopen=lambda: connect(settings, read_only=False),
        # Readers of a SQLite catalog would now and then wait a whole second without it
        # (readmodels.keeper); PostgreSQL has no such wait.
        keeper=CatalogKeeper(location.sqlite_file) if location.sqlite_file else None,
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
    own_positions(app, sink)
    return BuiltApp(app, sink)


def tune_process() -> None:
    """Make the sink's process cheap to run (call once, after the imports): Python's
    garbage collector and Arrow's memory.

    * **Garbage collector.** A checkpoint's records stay alive until they are written,
      so young collections walk them and find nothing to free, then promote them, and
      full collections walk them again with every object the imports made. Frozen
      objects (all there is at start) are never walked again, and the young generation
      is collected every :data:`GC_YOUNG_THRESHOLD` allocations instead of 700. Measured
      on the sink's consumer alone (records staged, not written): 67-84k -> 90-111k
      records/s.
    * **Arrow's memory pool: jemalloc**
      (:func:`pipelines.runtime.memory.use_jemalloc_for_arrow` says why): the consumer's
      thread makes each checkpoint's Arrow tables and the writer's thread frees them.
    """
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 1000)
    use_jemalloc_for_arrow()


def run(settings: Settings, namespace: Namespace = CATALOG) -> None:
    """``shopstream run sink``: write the read models until SIGINT/SIGTERM."""
    create_topics(settings, namespace.topics(feed.topic for feed in FEEDS))
    tune_process()
    counters = AppCounters()
    latest: list[BuiltApp] = []

    def build() -> BuiltApp:
        # A rebuild (after a failed run) keeps the writer connection, the latest one
        # (housekeeping hands the writer a fresh one now and then: LakeSink.keep_house),
        # once the last sink is done with it.
        if latest:
            latest[0].processor.close()
        con = latest[0].processor.writer.con if latest else connect(settings, read_only=False)
        latest[:] = [build_sink(settings, namespace, con=con, counters=counters)]
        return latest[0]

    def stopped(built: BuiltApp) -> str:
        built.processor.close()
        return (f"{counters.produced} records written, {built.processor.skipped} skipped as "
                "already written")  # fmt: skip

    run_app(
        settings,
        namespace.app(APP_NAME),
        build,
        describe=f"writing {len(FEEDS)} topics into {LakeLocation.of(settings).describe()} "
        f"as group {namespace.group(GROUP)}",
        on_stop=stopped,
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
