"""Several sink writers on one DuckLake (replicas): records another writer already holds
are dropped, not doubled; housekeeping that fails never stops the writes.

Real DuckLake (SQLite catalog), no broker: two attachments of the same lake in this process
are two independent DuckLake clients, like two sink processes. Commits that conflict need
a catalog that lets two writers overlap (PostgreSQL): tests/integration/test_lake_postgres.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import duckdb
import pytest

from pipelines.runtime.outputs import AppCounters
from pipelines.sink import app as sink_app
from pipelines.sink.app import LakeSink, feeds_for
from pipelines.sink.writer import LakeWriter, Record
from producers.simulator import ShopSimulator, SimConfig
from readmodels.generations import open_for
from readmodels.lake import connect
from readmodels.queries import ReadModels
from shopstream.settings import Settings, load_settings
from shopstream.topics import CATALOG
from support.lake import feed

START_MS = 1_764_590_400_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def orders(n: int, partition: int = 0) -> list[Record]:
    out: list[Record] = []
    for rec in ShopSimulator(SimConfig(start_ms=START_MS, seed=5)).records():
        if rec.event_type == "OrderPlaced":
            out.append(("orders", partition, len(out), rec.timestamp_ms, rec.key, rec.value,
                        rec.headers))  # fmt: skip
            if len(out) == n:
                return out
    raise AssertionError("the simulator ran dry")


def test_records_another_writer_already_wrote_are_dropped_not_doubled(
    settings: Settings,
) -> None:
    # Replica B owned orders[0] and wrote offsets 0-99, then died before committing its
    # Kafka offsets (50): A, which took the partition over, is handed 50-149 again.
    records = orders(150)
    con = connect(settings, read_only=False)
    generation, _ = open_for(con, "b1")
    a = LakeSink(LakeWriter(con, generation, feeds_for(CATALOG)), AppCounters())
    b_con = connect(settings, read_only=False)  # started before B wrote: A's map is stale
    LakeWriter(b_con, generation, feeds_for(CATALOG)).write(records[:100])

    feed(a, records[50:])

    rm = ReadModels(settings)
    ids = rm.sql(f"SELECT order_id FROM {rm.table('orders')}")["order_id"].to_list()
    assert len(ids) == len(set(ids)) == 150
    assert rm.totals()["orders"] == 150
    assert a.counters.produced == 50  # only 100-149 were A's to write
    assert a.writer.next_offsets[("orders", 0)] == 150
    assert rm.sink_offsets()["next_offset"].to_list() == [150]
    feed(a, records[120:130])  # the sink's skip map is the writer's, updated in place
    assert a.skipped == 10 and a.counters.produced == 50


def test_housekeeping_that_fails_does_not_fail_the_write(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    con = connect(settings, read_only=False)
    generation, _ = open_for(con, "b1")
    sink = LakeSink(LakeWriter(con, generation, feeds_for(CATALOG)), AppCounters(),
                    reopen=lambda: connect(settings, read_only=False))  # fmt: skip

    def conflicting(con: duckdb.DuckDBPyConnection) -> None:
        raise duckdb.TransactionException(
            "Failed to commit DuckLake transaction.\nTransaction conflict - attempting to "
            "delete from table with index \"25\" - but another transaction has deleted from it"
        )

    monkeypatch.setattr(sink_app, "housekeeping", conflicting)
    with caplog.at_level(logging.WARNING, "pipelines.sink"):
        feed(sink, orders(20))
        sink.keep_house()  # a round, as its thread runs one every minute
        feed(sink, orders(30)[20:])

    assert ReadModels(settings).totals()["orders"] == 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "housekeeping did not finish" in warnings[0], warnings
    assert "Transaction conflict" in warnings[0]
