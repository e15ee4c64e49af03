"""Replay: a new consumer reads the order history from offset zero (or from a time) at its
own pace and rebuilds the order-history model beside the live one - then compares them.

This is the course's promise of event streaming made checkable: the log keeps every event,
so a consumer that arrives late rebuilds the same model from it. A replay:

1. **plans** (:func:`plan`): the topics (``orders``, and ``returns`` / ``stock-questions``
   if asked), where to start (offset zero, or the offsets for a time), and where to stop:
   the offsets the *live* read models hold at their newest snapshot, so that the two can be
   compared at the same offsets (without live read models: the high watermarks);
2. **runs** (:class:`Replay`): one consumer assigned to every partition (no group join),
   in big batches; a thread consumes while the main thread writes: each batch is parsed
   and aggregated vectorised by DuckDB (the sink's own feed SQL) and written in one
   DuckLake transaction with its offsets into ``lake.replay_<name>`` - exactly once, so a
   replay stopped (Ctrl-C, SIGTERM) resumes where it stopped;
3. **compares** (:func:`compare`): the rebuilt model against the live model *as of the
   planned snapshot*: every row equal, or every difference listed. The ``*_minute``
   pre-aggregates are not written by the replay: they are rolled up once from the rebuilt
   rows with the sink's own rollup SQL, and the live ones, written batch by batch, must
   sum to them (writing them per batch cost a third of the replay's writes).

Progress per partition (offset against the high watermark and the target, events/s, time
left) goes to ``<data_dir>/run/replay-<name>.json`` for the CLI's progress bars and the
dashboard's Replay page.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from pipelines.sink.feeds import FEEDS, FEEDS_BY_TOPIC, Feed
from pipelines.sink.writer import TOPIC_SCHEMA, Batch, LakeWriter
from readmodels import schema as t
from readmodels.generations import Generation, current, generations, schema_name
from readmodels.lake import LAKE
from readmodels.transactions import in_transaction
from shopstream.errors import UserError
from shopstream.kafka import fetch_metadata, make_admin, make_consumer
from shopstream.settings import Settings
from shopstream.status import run_dir
from shopstream.topics import CATALOG, ORDERS, QUESTIONS, RETURNS, TOPICS_BY_NAME, Namespace

log = logging.getLogger("pipelines.replay")

REPLAYABLE = (ORDERS.name, RETURNS.name, QUESTIONS.name)
"""History topics a replay can rebuild (kept forever: ``TopicSpec.history``)."""
GROUP_PREFIX = "shopstream-replay-"
BATCH = 200_000
"""Records per write: a DuckLake commit costs tens of ms, so write few and large. DuckDB
works on them with every core (unlike the sink's small writes): 1M orders, writer busy
5.88 s on one thread against 3.69 s on two, 2 cores, the reader thread beside it."""
BATCH_WAIT_S = 0.5
IDLE_END_S = 3.0
"""Without a target (no live model), a partition is done after this long without records
past the high watermark (the embedded broker's high watermark is not the last offset)."""
REGISTRY = f"{LAKE}.main.{t.REPLAYS.name}"


def schema_of(name: str) -> str:
    return f"replay_{name}"


@dataclass(frozen=True, slots=True)
class Plan:
    """What a replay reads, from where to where, and what it compares with."""

    name: str
    topics: tuple[str, ...]
    start: dict[str, int]
    """``"topic:partition" -> first offset``."""
    target: dict[str, int]
    """``"topic:partition" -> offset to stop before`` (the live model's, or a watermark)."""
    live_snapshot: int | None
    generation: int | None
    namespace: str = ""
    """The topology copy replayed (``Namespace`` suffix; empty: the real catalog)."""

    def topic_name(self, catalog_topic: str) -> str:
        """The name of a catalog topic in this replay's namespace."""
        return Namespace(self.namespace).name(catalog_topic)

    @property
    def schema(self) -> str:
        return schema_of(self.name)

    @property
    def group(self) -> str:
        return GROUP_PREFIX + self.name


@dataclass(slots=True)
class PartitionProgress:
    topic: str
    partition: int
    start: int
    target: int
    position: int
    high_watermark: int

    @property
    def done(self) -> bool:
        return self.position >= self.target

    @property
    def fraction(self) -> float:
        span = self.target - self.start
        return 1.0 if span <= 0 else min(1.0, (self.position - self.start) / span)


@dataclass(slots=True)
class Progress:
    """What the replay did so far, as published for the CLI and the dashboard."""

    name: str
    state: str = "planned"
    """``planned``, ``running``, ``stopped`` (resumable), ``done`` or ``failed``."""
    partitions: list[PartitionProgress] = field(default_factory=list)
    events: int = 0
    started_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    rate: float = 0.0
    error: str | None = None
    pid: int = field(default_factory=os.getpid)

    @property
    def remaining(self) -> int:
        return sum(max(0, p.target - p.position) for p in self.partitions)

    @property
    def eta_s(self) -> float | None:
        return self.remaining / self.rate if self.rate > 0 else None


def progress_path(settings: Settings, name: str) -> Path:
    return run_dir(settings) / f"replay-{name}.json"


def publish(settings: Settings, progress: Progress) -> None:
    """Write the progress file atomically."""
    progress.updated_at = time.time()
    path = progress_path(settings, progress.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    doc = asdict(progress) | {"remaining": progress.remaining, "eta_s": progress.eta_s}
    tmp.write_text(json.dumps(doc, default=str))
    os.replace(tmp, path)


def read_progress(settings: Settings, name: str) -> Progress | None:
    """The published progress of replay ``name`` (``None`` if it never ran here)."""
    try:
        doc = json.loads(progress_path(settings, name).read_text())
    except (OSError, ValueError):
        return None
    doc.pop("remaining", None)
    doc.pop("eta_s", None)
    doc["partitions"] = [PartitionProgress(**p) for p in doc.get("partitions", [])]
    return Progress(**doc)


def _key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def _split(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


LiveOffsets = tuple[int, dict[str, int], Generation]


def live_offsets(con: duckdb.DuckDBPyConnection, topics: Iterable[str]) -> LiveOffsets | None:
    """``(snapshot, next offset per partition, generation)`` of the live model now."""
    generation = current(con)
    if generation is None:
        return None
    snapshot = con.execute(f"SELECT id FROM ducklake_current_snapshot('{LAKE}')").fetchone()
    assert snapshot is not None
    version = int(snapshot[0])
    names = list(topics)
    rows = con.execute(
        f"SELECT topic, kafka_partition, max(next_offset) FROM "
        f"{generation.table(t.OFFSETS.name)} AT (VERSION => {version}) "
        f"WHERE list_contains(?, topic) GROUP BY ALL",
        [names],
    ).fetchall()
    return version, {_key(str(a), int(b)): int(c) for a, b, c in rows}, generation


def plan(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    name: str,
    topics: Iterable[str] = (ORDERS.name,),
    from_time: datetime | None = None,
    compare_with_live: bool = True,
    namespace: Namespace = CATALOG,
) -> Plan:
    """Where the replay starts and stops (see the module docstring). ``topics`` are
    catalog names, read in ``namespace``."""
    chosen = tuple(dict.fromkeys(topics))
    unknown = [topic for topic in chosen if topic not in REPLAYABLE]
    if unknown or not chosen:
        raise UserError(f"cannot replay {unknown or 'nothing'} - choose from "
                        f"{', '.join(REPLAYABLE)}")  # fmt: skip
    for topic in chosen:
        assert TOPICS_BY_NAME[topic].history, f"{topic} is not kept forever"
    metadata = fetch_metadata(settings)
    actual = [namespace.name(topic) for topic in chosen]
    partitions = [
        (topic, p) for topic in actual if topic in metadata.topics
        for p in sorted(metadata.topics[topic].partitions)
    ]  # fmt: skip
    if not partitions:
        raise UserError(f"no topic {', '.join(chosen)} on {settings.broker_address} yet")
    consumer = make_consumer(settings, GROUP_PREFIX + name)
    try:
        start = dict.fromkeys((_key(tp, p) for tp, p in partitions), 0)
        if from_time is not None:
            at = int(from_time.timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(tp, p, at) for tp, p in partitions], timeout=10
            )
            for tp in found:
                # -1: no record at or after that time yet: start at the end.
                start[_key(tp.topic, tp.partition)] = (
                    tp.offset if tp.offset >= 0 else _watermark(consumer, tp.topic, tp.partition)
                )
        live = live_offsets(con, actual) if compare_with_live else None
        if live is not None:
            snapshot, offsets, generation = live
            target = {k: offsets.get(k, 0) for k in start}
            return Plan(
                name, chosen, start, target, snapshot, generation.number, namespace.suffix
            )
        target = {_key(tp, p): _watermark(consumer, tp, p) for tp, p in partitions}
        return Plan(name, chosen, start, target, None, None, namespace.suffix)
    finally:
        consumer.close()


def _watermark(consumer: Any, topic: str, partition: int) -> int:
    return int(consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1])


def registered(con: duckdb.DuckDBPyConnection, name: str) -> Plan | None:
    """The plan of replay ``name`` recorded in the lake (to resume it), if any."""
    if not _registry_exists(con):
        return None
    rows = con.execute(
        f"SELECT topics, start_offsets, target_offsets, live_snapshot, generation, namespace "
        f"FROM {REGISTRY} WHERE name = ?",
        [name],
    ).fetchall()
    if not rows:
        return None
    topics, start, target, snapshot, generation, namespace = rows[0]
    return Plan(
        name, tuple(json.loads(topics)), json.loads(start), json.loads(target),
        int(snapshot) if snapshot is not None else None,
        int(generation) if generation is not None else None, namespace or "",
    )  # fmt: skip


def replays(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every replay model in the lake, newest first."""
    if not _registry_exists(con):
        return []
    rows = con.execute(
        f"SELECT name, topics, live_snapshot, started_at, finished_at, events, seconds "
        f"FROM {REGISTRY} ORDER BY started_at DESC"
    ).fetchall()
    keys = ("name", "topics", "live_snapshot", "started_at", "finished_at", "events", "seconds")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _registry_exists(con: duckdb.DuckDBPyConnection) -> bool:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main'"
        " AND table_name = ?",
        [LAKE, t.REPLAYS.name],
    ).fetchone()
    return bool(found and found[0])


def create_model(con: duckdb.DuckDBPyConnection, p: Plan) -> None:
    """The empty replay model and its registry row, in one transaction."""

    def create(con: duckdb.DuckDBPyConnection) -> None:
        if not _registry_exists(con):
            con.execute(f"CREATE TABLE {REGISTRY} ({t.REPLAYS.columns})")
        con.execute(f"CREATE SCHEMA {LAKE}.{p.schema}")
        for table in t.REPLAY_TABLES:
            con.execute(f"CREATE TABLE {LAKE}.{p.schema}.{table.name} ({table.columns})")
        con.execute(
            f"INSERT INTO {REGISTRY} VALUES (?, ?, ?, ?, ?, ?, ?, ?, now(), NULL, 0, NULL)",
            [p.name, p.schema, p.generation, p.namespace, json.dumps(p.topics),
             json.dumps(p.start), json.dumps(p.target), p.live_snapshot],
        )  # fmt: skip

    in_transaction(con, create, f"creating replay model {p.schema}")


def drop(settings: Settings, con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Drop replay ``name``: its model, its registry row, its consumer group, its progress."""
    found = registered(con, name) is not None
    def forget(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"DROP SCHEMA IF EXISTS {LAKE}.{schema_of(name)} CASCADE")
        if _registry_exists(con):
            con.execute(f"DELETE FROM {REGISTRY} WHERE name = ?", [name])

    in_transaction(con, forget, f"dropping replay {name}")
    _delete_group(settings, GROUP_PREFIX + name)
    progress_path(settings, name).unlink(missing_ok=True)
    return found


def _delete_group(settings: Settings, group: str) -> None:
    admin = make_admin(settings)  # kept referenced until the future completes
    futures = admin.delete_consumer_groups([group], request_timeout=10)
    # A group that never committed does not exist: nothing to drop.
    with contextlib.suppress(KafkaException, TimeoutError):
        futures[group].result(15)


class Replay:
    """Runs a :class:`Plan` into its model (see the module docstring); resumable."""

    def __init__(
        self,
        settings: Settings,
        con: duckdb.DuckDBPyConnection,
        p: Plan,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.settings = settings
        self.con = con
        self.plan = p
        self.stop = threading.Event()
        self.on_progress = on_progress
        model = Generation(0, p.schema, "replay")
        feeds: dict[str, Feed] = {p.topic_name(topic): FEEDS_BY_TOPIC[topic] for topic in p.topics}
        self.writer = LakeWriter(con, model, feeds, lineage=False, rollups=False,
                                 threads=None)  # fmt: skip
        self.progress = Progress(p.name)
        self._batches: queue.Queue[pa.Table | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None

    def run(self) -> Progress:
        """Replay until every partition reached its target (or :attr:`stop` is set)."""
        p = self.plan
        resume = self.writer.next_offsets
        positions = {
            key: max(p.start[key], resume.get(_split(key), 0)) for key in p.start
        }
        consumer = make_consumer(
            self.settings, p.group,
            **{"fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024,
               "queued.max.messages.kbytes": 262144, "enable.partition.eof": True,
               # Prefetch up to the kbytes bound, not librdkafka's 100,000 messages: with
               # its default, consume() waited on the broker (measured 159k/s against
               # 317k/s for 500,000 orders on the embedded broker).
               "queued.min.messages": 1_000_000},
        )  # fmt: skip
        highs = {key: _watermark(consumer, *_split(key)) for key in p.start}
        self.progress.partitions = [
            PartitionProgress(*_split(key), p.start[key], p.target[key], positions[key], highs[key])
            for key in sorted(p.start)
        ]
        self.progress.state = "running"
        self._publish()
        pending = [key for key in sorted(p.start) if positions[key] < p.target[key]]
        if not pending:
            self._finish(consumer)
            return self.progress
        consumer.assign([TopicPartition(*_split(key), positions[key]) for key in pending])
        reader = threading.Thread(
            target=self._consume, args=(consumer, positions), name="replay-consume", daemon=True
        )
        started = time.monotonic()
        reader.start()
        try:
            while True:
                batch = self._batches.get()
                if batch is None:
                    break
                self.writer.write_batch(_by_topic(batch))
                self.progress.events += batch.num_rows
                for part in self.progress.partitions:
                    part.position = max(
                        part.position, self.writer.next_offsets.get((part.topic, part.partition), 0)
                    )
                elapsed = time.monotonic() - started
                self.progress.rate = self.progress.events / elapsed if elapsed > 0 else 0.0
                self._publish()
        finally:
            self.stop.set()
            reader.join(timeout=10)
        if self._error is not None:
            self.progress.state, self.progress.error = "failed", str(self._error)
            self._publish()
            raise self._error
        self._finish(consumer, time.monotonic() - started)
        return self.progress

    def _consume(self, consumer: Any, positions: dict[str, int]) -> None:
        """Consumer thread: batches of ``(topic, partition, offset, value)`` columns up to
        each partition's target, handed to the writer through a small queue.

        Per message only what cannot be avoided runs in Python (the calls that take its
        fields, in list comprehensions); targets and idle partitions are checked once per
        batch, on Arrow columns. Why: this thread holds the GIL while the writer's DuckDB
        work runs beside it, so its cost per message is the replay's ceiling."""
        targets = dict(self.plan.target)
        open_parts = {key for key, pos in positions.items() if pos < targets[key]}
        idle_since: dict[str, float] = {}
        no_target = self.plan.live_snapshot is None
        try:
            while open_parts and not self.stop.is_set():
                messages: list[Any] = []
                deadline = time.monotonic() + BATCH_WAIT_S
                while len(messages) < BATCH and time.monotonic() < deadline and open_parts:
                    got = consumer.consume(num_messages=10_000, timeout=0.1)
                    good = [m for m in got if m.error() is None]
                    if no_target and (idle_since or len(good) < len(got)):
                        _mark_idle(got, idle_since)
                    messages += good
                    if no_target:
                        now = time.monotonic()
                        for key in list(open_parts):
                            if key in idle_since and now - idle_since[key] >= IDLE_END_S:
                                open_parts.discard(key)
                if not messages:
                    continue
                batch = _columns(
                    [m.topic() for m in messages], [m.partition() for m in messages],
                    [m.offset() for m in messages], [m.value() for m in messages],
                )  # fmt: skip
                del messages
                batch = self._within_targets(batch, targets, open_parts, no_target)
                if batch.num_rows:
                    self._batches.put(batch)
            if no_target:
                for part in self.progress.partitions:
                    part.target = targets[_key(part.topic, part.partition)]
        except BaseException as exc:  # handed to the writer thread, which raises it
            self._error = exc
        finally:
            self._batches.put(None)

    @staticmethod
    def _within_targets(
        batch: pa.Table, targets: dict[str, int], open_parts: set[str], no_target: bool
    ) -> pa.Table:
        """``batch`` without records at or past their partition's target, nor records of
        partitions already done; closes the partitions that reached their target. Without
        targets (no live model), the targets follow the records."""
        ends = batch.group_by(["topic", "kafka_partition"]).aggregate([("kafka_offset", "max")])
        beyond = []
        for topic, partition, last in zip(*(c.to_pylist() for c in ends.columns), strict=True):
            key = _key(topic, partition)
            if key not in open_parts:  # done before this batch: drop what came after
                beyond.append((topic, partition, targets[key]))
            elif no_target:
                targets[key] = max(targets[key], last + 1)
            else:
                if last + 1 >= targets[key]:
                    open_parts.discard(key)
                if last >= targets[key]:
                    beyond.append((topic, partition, targets[key]))
        drop = None
        for topic, partition, target in beyond:
            of_partition = pc.and_(
                pc.equal(batch["topic"], topic), pc.equal(batch["kafka_partition"], partition)
            )
            past = pc.and_(of_partition, pc.greater_equal(batch["kafka_offset"], target))
            drop = past if drop is None else pc.or_(drop, past)
        return batch if drop is None else batch.filter(pc.invert(drop))

    def _finish(self, consumer: Any, seconds: float = 0.0) -> None:
        done = all(part.done for part in self.progress.partitions)
        if done:
            offsets = [
                TopicPartition(part.topic, part.partition, part.position)
                for part in self.progress.partitions
                if part.position > 0
            ]
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
            targets = {_key(p.topic, p.partition): p.target for p in self.progress.partitions}
            in_transaction(
                self.con,
                lambda con: con.execute(
                    f"UPDATE {REGISTRY} SET finished_at = now(), events = ?, seconds = ?, "
                    "target_offsets = ? WHERE name = ?",
                    [self.progress.events, seconds, json.dumps(targets), self.plan.name],
                ),
                f"recording replay {self.plan.name} as done",
            )
        consumer.close()
        self.progress.state = "done" if done else "stopped"
        self._publish()

    def _publish(self) -> None:
        publish(self.settings, self.progress)
        if self.on_progress is not None:
            self.on_progress(self.progress)


def _mark_idle(messages: list[Any], idle_since: dict[str, float]) -> None:
    """In order: a partition is idle from its end-of-partition event until a record."""
    for m in messages:
        err = m.error()
        if err is None:
            idle_since.pop(_key(m.topic(), m.partition()), None)
        elif err.code() == KafkaError._PARTITION_EOF:
            idle_since.setdefault(_key(m.topic(), m.partition()), time.monotonic())


READ_SCHEMA = pa.schema([("topic", pa.string()), *TOPIC_SCHEMA])
"""What the consumer thread hands over: the records of every topic, with their topic."""


def _columns(
    topics: list[str], partitions: list[int], offsets: list[int], values: list[bytes | None]
) -> pa.Table:
    n = len(values)
    return pa.Table.from_arrays(
        [
            pa.array(topics, pa.string()),
            pa.array(partitions, pa.int32()),
            pa.array(offsets, pa.int64()),
            pa.nulls(n, pa.int64()).fill_null(0),
            pa.nulls(n, pa.binary()),
            pa.array(values, pa.binary()),
            pa.nulls(n, pa.binary()),
            pa.nulls(n, pa.binary()),
            pa.nulls(n, TOPIC_SCHEMA.field("headers").type),
        ],
        schema=READ_SCHEMA,
    )


def _by_topic(records: pa.Table) -> Batch:
    """The writer's batch of ``records`` (:data:`READ_SCHEMA`): one table per topic."""
    topics = pc.unique(records["topic"]).to_pylist()
    if len(topics) == 1:
        return {topics[0]: records.drop_columns(["topic"])}
    return {
        topic: records.filter(pc.equal(records["topic"], topic)).drop_columns(["topic"])
        for topic in topics
    }


@dataclass(frozen=True, slots=True)
class TableComparison:
    """One table of the rebuilt model against the live one at the same offsets."""

    table: str
    replay_rows: int
    live_rows: int
    only_in_replay: int
    only_in_live: int
    samples: list[dict[str, Any]]

    @property
    def equal(self) -> bool:
        return self.only_in_live == 0 and self.only_in_replay == 0


COMPARED: dict[str, tuple[str, str]] = {
    # table -> (the columns compared, how rows are grouped first: "" = row by row)
    # The replay's pre-aggregates are rolled up from its rebuilt order rows with the sink's
    # own rollup SQL (_rolled_up): the live ones, written batch by batch, must sum to them.
    t.ORDERS.name: ("*", ""),
    t.ORDER_LINES.name: ("*", ""),
    t.SALES_MINUTE.name: (
        "minute, channel, store_id, sum(orders) AS orders, sum(units) AS units, "
        "sum(revenue) AS revenue", "minute, channel, store_id",
    ),
    t.SKU_MINUTE.name: (
        "minute, sku, sum(units) AS units, sum(revenue) AS revenue", "minute, sku",
    ),
    t.RETURNS.name: ("*", ""),
    t.QUESTIONS.name: ("*", ""),
}
"""Aggregate tables hold one row per group and write: compared after summing."""
ROLLUPS: dict[str, tuple[str, str]] = {
    table.name: (source.name, select) for feed in FEEDS for table, source, select in feed.rollups
}
"""Pre-aggregate -> (the table it is rolled up from, the sink's SQL over ``{rows}``)."""


def compare(con: duckdb.DuckDBPyConnection, name: str) -> list[TableComparison]:
    """The replay model of ``name`` against the live model at the planned snapshot."""
    p = registered(con, name)
    if p is None:
        raise UserError(f"no replay named {name!r} - see `shopstream replay list`")
    if p.live_snapshot is None or p.generation is None:
        raise UserError(f"replay {name!r} was planned without a live model to compare with")
    if p.generation not in {g.number for g in generations(con)}:
        raise UserError(f"the live generation {p.generation} of replay {name!r} was dropped")
    live_schema = schema_name(p.generation)
    from_start = all(offset == 0 for offset in p.start.values())
    tables = [t.ORDERS.name, t.ORDER_LINES.name]
    if from_start:
        tables += [t.SALES_MINUTE.name, t.SKU_MINUTE.name]
    if RETURNS.name in p.topics:
        tables.append(t.RETURNS.name)
    if QUESTIONS.name in p.topics:
        tables.append(t.QUESTIONS.name)
    results = []
    for table in tables:
        columns, group = COMPARED[table]
        live = f"{LAKE}.{live_schema}.{table} AT (VERSION => {p.live_snapshot})"
        mine = f"{LAKE}.{p.schema}.{table}" if table not in ROLLUPS else _rolled_up(con, p, table)
        if not from_start:
            live = _restricted(live, live_schema, table, p)
        grouped = f" GROUP BY {group}" if group else ""
        a = f"SELECT {columns} FROM {mine}{grouped}"
        b = f"SELECT {columns} FROM {live}{grouped}"
        only_replay = con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchone()
        only_live = con.execute(f"SELECT count(*) FROM ({b} EXCEPT ALL {a})").fetchone()
        samples = con.execute(
            f"(SELECT 'replay only' AS side, * FROM ({a} EXCEPT ALL {b}) LIMIT 5) UNION ALL "
            f"(SELECT 'live only' AS side, * FROM ({b} EXCEPT ALL {a}) LIMIT 5)"
        ).pl().to_dicts()
        counts = [con.execute(f"SELECT count(*) FROM ({q})").fetchone() for q in (a, b)]
        results.append(TableComparison(
            table, int(counts[0][0]), int(counts[1][0]),  # type: ignore[index]
            int(only_replay[0]), int(only_live[0]), samples,  # type: ignore[index]
        ))  # fmt: skip
    return results


def _rolled_up(con: duckdb.DuckDBPyConnection, p: Plan, table: str) -> str:
    """A temp table of the replay's pre-aggregate ``table``, rolled up from its rebuilt
    rows by the sink's own SQL; its name."""
    source, select = ROLLUPS[table]
    temp = f"replay_{table}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {temp} ({t.TABLES_BY_NAME[table].columns})")
    con.execute(f"INSERT INTO {temp} {select.format(rows=f'{LAKE}.{p.schema}.{source}')}")
    return temp


def _restricted(live: str, live_schema: str, table: str, p: Plan) -> str:
    """Live rows of events at or after the replay's start offsets (a replay from a time)."""
    events = f"{LAKE}.{live_schema}.{t.EVENTS.name} AT (VERSION => {p.live_snapshot})"
    starts = " OR ".join(
        f"(topic = '{_split(k)[0]}' AND kafka_partition = {_split(k)[1]} AND kafka_offset >= {v})"
        for k, v in p.start.items()
    )
    ids = f"SELECT event_id FROM {events} WHERE {starts}"
    if table == t.ORDER_LINES.name:
        orders = f"{LAKE}.{live_schema}.{t.ORDERS.name} AT (VERSION => {p.live_snapshot})"
        return (f"(SELECT * FROM {live} WHERE order_id IN "
                f"(SELECT order_id FROM {orders} WHERE event_id IN ({ids})))")  # fmt: skip
    return f"(SELECT * FROM {live} WHERE event_id IN ({ids}))"
