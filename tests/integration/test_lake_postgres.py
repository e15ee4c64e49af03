"""The read models on a DuckLake catalog in a real PostgreSQL server (``lake`` profile).

* Without a broker, races made to happen every time: a commit that loses to another
  writer's is written again; sinks that start at once open one generation.
* With a broker (every lane): two ``shopstream run sink`` replicas in one consumer group,
  one catalog and one data path, one of them SIGKILLed and restarted midway, write every
  order and stock level exactly once - checked against the topics themselves - and the
  query module reads the result.

The server is started by the tests (tests/support/postgres.py): without PostgreSQL
installed they skip, except under CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipelines.sink.app import feeds_for
from pipelines.sink.feeds import FEEDS
from pipelines.sink.writer import LakeWriter, Record
from readmodels.generations import Generation, generations, open_for
from readmodels.lake import connect
from readmodels.queries import NoReadModels, ReadModels
from shopstream.admin import create_topics
from shopstream.kafka import make_producer
from shopstream.settings import Settings, load_settings
from shopstream.topics import CATALOG, ORDERS, STOCK_LEVELS, Namespace
from support.lake import STOCK_KEYS, simulated_order_stream, stock_level
from support.postgres import PostgresServer, start_postgres, unavailable_reason
from support.processes import AppProcess, TopicReader

START_MS = 1_764_590_400_000


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the PostgreSQL catalog tests must run under CI but cannot: {reason}")
        pytest.skip(reason)
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def lake_on(postgres: PostgresServer, data: Path, base: Settings | None = None) -> Settings:
    """Settings whose read models live in a fresh database of ``postgres``."""
    dsn = postgres.create_database(f"lake_{uuid.uuid4().hex[:10]}")
    overrides = {"lake_catalog": f"postgres:{dsn}", "lake_data_path": f"{data / 'files'}/"}
    if base is None:
        return load_settings(data_dir=data / "data", **overrides)
    return load_settings(base=base, **overrides)


class CommitHook:
    """A DuckDB connection that runs ``before_commit`` once, right before the first COMMIT
    sent through it or its cursors: another writer commits inside this one's transaction."""

    def __init__(self, con: Any, before_commit: Callable[[], Any]) -> None:
        self._con = con
        self._pending: list[Callable[[], Any]] = [before_commit]
        self.commits = 0

    def _run(self, target: Any, sql: str, *args: Any) -> Any:
        if sql.strip().upper() == "COMMIT":
            self.commits += 1
            while self._pending:
                self._pending.pop()()
        return target.execute(sql, *args)

    def execute(self, sql: str, *args: Any) -> Any:
        return self._run(self._con, sql, *args)

    def cursor(self) -> Any:
        hook, cur = self, self._con.cursor()

        class Cursor:
            def execute(self, sql: str, *args: Any) -> Any:
                return hook._run(cur, sql, *args)

            def __getattr__(self, name: str) -> Any:
                return getattr(cur, name)

        return Cursor()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def level(partition: int, offset: int, store: str, sku: str, value: int) -> Record:
    doc = {"store_id": store, "sku": sku, "level": value, "as_of": "2026-12-01T12:00:00.000Z",
           "event_id": f"e-{partition}-{offset}"}  # fmt: skip
    return ("stock.levels", partition, offset, START_MS, f"{store}/{sku}".encode(),
            orjson.dumps(doc), [])  # fmt: skip


def test_a_commit_that_conflicts_with_another_writers_is_written_again(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    settings = lake_on(postgres, tmp_path)
    a_con = connect(settings, read_only=False)
    generation, _ = open_for(a_con, "b1")
    b = LakeWriter(connect(settings, read_only=False), generation, feeds_for(CATALOG))
    LakeWriter(a_con, generation, feeds_for(CATALOG)).write(
        [level(0, 0, "s1", "A", 5), level(1, 0, "s2", "B", 7)]
    )
    # Both replicas own stock.levels partitions and replace their keys' levels: a DELETE
    # and an INSERT on one table in both transactions. B commits inside A's.
    hook = CommitHook(a_con, lambda: b.write([level(1, 1, "s2", "B", 6)]))
    a = LakeWriter(hook, generation, feeds_for(CATALOG))

    result = a.write([level(0, 1, "s1", "A", 4)])

    assert result.conflicts == 1, "the interleaved commit did not conflict"
    assert hook.commits == 2 and result.records == 1
    rm = ReadModels(settings)
    levels = rm.stock_levels()
    assert sorted(zip(levels["store_id"], levels["sku"], levels["level"], strict=True)) == [
        ("s1", "A", 4), ("s2", "B", 6)
    ]  # fmt: skip
    assert rm.sink_offsets()["next_offset"].to_list() == [2, 2]
    assert a.next_offsets[("stock.levels", 0)] == 2


@pytest.mark.parametrize("other_broker", ["b1", "b2"])
def test_sinks_starting_at_once_open_one_generation(
    postgres: PostgresServer, tmp_path: Path, other_broker: str
) -> None:
    settings = lake_on(postgres, tmp_path)
    connect(settings, read_only=False).close()  # the catalog exists, no generation yet
    other = connect(settings, read_only=False)
    seen: list[tuple[Generation, bool]] = []
    hook = CommitHook(
        connect(settings, read_only=False), lambda: seen.append(open_for(other, other_broker))
    )

    mine = open_for(hook, "b1")  # type: ignore[arg-type]

    assert seen[0][1] is True, "the other sink did not create its generation first"
    made = [(g.number, g.broker_id) for g in generations(other)]
    if other_broker == "b1":  # the same broker: both write the one generation
        assert mine[1] is False and mine[0].schema == seen[0][0].schema == "gen_0001"
        assert made == [(1, "b1")]
    else:  # another broker's came first: this one starts the next
        assert mine[1] is True and mine[0].number == 2
        assert made == [(1, "b2"), (2, "b1")]


# --- two sink replicas on a broker ------------------------------------------------------

CHUNK = 200


def status_of(path: Path) -> dict[str, Any]:
    """A sink replica's status file (published every second), or {} before the first."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


@pytest.mark.timeout(900)
def test_two_sink_replicas_write_every_record_exactly_once(
    postgres: PostgresServer, settings: Settings, namespace: Namespace, tmp_path: Path
) -> None:
    shared = lake_on(postgres, tmp_path / "lake", base=settings)
    # Each replica has a data dir of its own (as each container has), the lake is shared.
    replicas = [load_settings(base=shared, data_dir=tmp_path / f"r{i}") for i in (1, 2)]
    # The catalog exists before the replicas start: DuckLake's own first initialisation of
    # an empty PostgreSQL database is not safe to run twice at once (a duplicate-key
    # error in one of them; compose restarts it). Generations are: both start at once.
    connect(shared, read_only=False).close()
    create_topics(settings, namespace.topics(feed.topic for feed in FEEDS))
    orders_topic, levels_topic = namespace.topic(ORDERS).name, namespace.topic(STOCK_LEVELS).name
    producer = make_producer(settings)
    sinks = []
    for i, replica in enumerate(replicas, 1):
        (tmp_path / f"r{i}").mkdir(exist_ok=True)
        sinks.append(AppProcess("sink", namespace, replica, tmp_path / f"r{i}").start())
    statuses = [r.data_dir / "run" / f"{namespace.app('sink')}.json" for r in replicas]
    pool = simulated_order_stream(seed=23)
    rm = ReadModels(shared)
    sent = 0
    a_before_kill, restarted_at = 0, 0.0

    def orders_written() -> int:
        try:
            return int(rm.totals()["orders"] or 0)
        except NoReadModels:
            return 0

    def written(i: int, since: float = 0.0) -> int:
        status = status_of(statuses[i])
        return int(status.get("produced", 0)) if status.get("started_at", 0) > since else 0

    def send_chunk(chunk: int) -> None:
        nonlocal sent
        for key, value, ts in (next(pool) for _ in range(CHUNK)):
            producer.produce(orders_topic, value, key, timestamp=ts)
        sent += CHUNK
        for j, (store, sku) in enumerate(STOCK_KEYS[chunk % 3 :: 3]):
            key, value = stock_level(store, sku, (chunk * 7 + j) % 50, f"lv-{chunk}-{j}")
            producer.produce(levels_topic, value, key)
        producer.flush(30)
        time.sleep(0.3)

    chunks = iter(range(10**6))

    def produce_until(done: Callable[[], bool], at_least: int, within_s: float = 0.0) -> None:
        """Traffic in chunks: ``at_least`` of them, then on until ``done()`` (for at most
        ``within_s`` seconds: a replica joining its group on a loaded machine is slow)."""
        deadline = time.monotonic() + within_s
        for n in itertools.count():
            if n >= at_least and done():
                return
            assert n < at_least or time.monotonic() < deadline, (
                f"not done after {n} chunks in {within_s:.0f}s: "
                f"{[status_of(s) for s in statuses]}\n" + "\n".join(s.log_tail(10) for s in sinks)
            )
            send_chunk(next(chunks))

    try:
        # Both replicas write their partitions, concurrently, then A dies mid-stream (at
        # whatever point its checkpoint is), B takes its partitions over, A comes back.
        produce_until(lambda: min(written(0), written(1)) >= 50, 6, 180)
        a_before_kill = written(0)
        sinks[0].kill()
        produce_until(lambda: True, 6)
        restarted_at = time.time()
        sinks[0].start()
        produce_until(lambda: written(0, since=restarted_at) >= 50, 4, 180)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 90
        while orders_written() < sent and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(4)  # anything beyond the last order (a double) would show by now
    finally:
        codes = [sink.stop() for sink in sinks]
    logs = [sink.log_path.read_text() for sink in sinks]
    assert codes == [0, 0], [sink.log_tail(30) for sink in sinks]
    a_after, b_total = written(0, since=restarted_at), written(1)

    # Independent computation from the topics themselves.
    reader = TopicReader(settings, [orders_topic, levels_topic])
    try:
        # Every order sent, then a little more (a double would show): a quiet spell
        # alone also comes from a slow first fetch on a busy machine.
        reader.wait_for(lambda r: len(r.records[orders_topic]) >= sent, 120, settle=2.0)
    finally:
        reader.close()
    totals: dict[str, Decimal] = {}
    per_channel: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal("0")])
    for record in reader.records[orders_topic]:
        doc = orjson.loads(record.value or b"")
        total = sum(
            (Decimal(str(line["unit_price"])) * line["qty"] for line in doc["payload"]["lines"]),
            Decimal("0"),
        )
        totals[doc["payload"]["order_id"]] = total
        per_channel[doc["channel"]][0] += 1
        per_channel[doc["channel"]][1] += total
    latest: dict[tuple[str, str], tuple[int, int]] = {}
    for record in reader.records[levels_topic]:  # one key, one partition: offsets order it
        doc = orjson.loads(record.value or b"")
        key = (doc["store_id"], doc["sku"])
        if key not in latest or record.offset > latest[key][0]:
            latest[key] = (record.offset, doc["level"])
    ends: dict[tuple[str, int], int] = defaultdict(int)
    for topic in (orders_topic, levels_topic):
        for record in reader.records[topic]:
            key = (topic, record.partition)
            ends[key] = max(ends[key], record.offset + 1)
    assert len(totals) == sent

    # The read models, through the query module, on the PostgreSQL catalog.
    rows = rm.sql(f"SELECT order_id, total FROM {rm.table('orders')}")
    ids = rows["order_id"].to_list()
    assert len(ids) == len(set(ids)) == sent, "an order is missing or doubled"
    assert dict(zip(ids, rows["total"].to_list(), strict=True)) == totals
    assert rm.totals()["orders"] == sent and rm.totals()["revenue"] == sum(totals.values())
    minute = rm.sql(
        f"SELECT channel, sum(orders)::BIGINT AS n, sum(revenue) AS revenue "
        f"FROM {rm.table('sales_minute')} GROUP BY ALL"
    )
    assert {c: [n, r] for c, n, r in minute.iter_rows()} == dict(per_channel)
    assert rm.channel_summary(minutes=10**6)["orders"].sum() == sent
    levels = rm.stock_levels()
    got = {(s, k): v for s, k, v in zip(levels["store_id"], levels["sku"], levels["level"],
                                         strict=True)}  # fmt: skip
    assert len(levels) == len(got) == len(STOCK_KEYS), "a stock level row is doubled or missing"
    assert got == {key: value for key, (_, value) in latest.items()}
    stored = {(t, p): n for t, p, n, _ in rm.sink_offsets().iter_rows()}
    assert stored == dict(ends)

    conflicts = sum(len(re.findall(r"commit conflicted with another writer", log)) for log in logs)
    already = sum(
        int(n) for log in logs for n in re.findall(r"(\d+) records were already written", log)
    )
    report = (
        f"{sent} orders and {len(reader.records[levels_topic])} stock levels; replica A wrote "
        f"{a_before_kill} records before its SIGKILL and {a_after} after its restart, B "
        f"{b_total}; {conflicts} conflicting commits written again, {already} records "
        "dropped as already written by the other"
    )
    print(report)
    assert all("Traceback" not in log for log in logs), report
    assert sum(log.count("read models: new generation") for log in logs) == 1, report
