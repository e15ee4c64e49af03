"""The SQLite catalog's keeper (readmodels.keeper), on a real lake: while it holds its
connection, the last DuckDB transaction to end does not checkpoint and delete the
write-ahead log (what made readers in other processes wait a whole second); once it lets
go, SQLite tidies up as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from readmodels.keeper import CatalogKeeper
from readmodels.lake import LakeLocation, connect
from shopstream.settings import Settings, load_settings
from support.lake import sink_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def test_the_log_stays_while_the_keeper_holds_the_catalog(settings: Settings) -> None:
    catalog = LakeLocation.of(settings).sqlite_file
    assert catalog is not None
    wal = catalog.with_name(catalog.name + "-wal")
    con = connect(settings, read_only=False)
    try:
        con.execute("CREATE TABLE lake.t AS SELECT 1 AS n")
        # The extension's connection for that transaction was the last: log removed.
        assert not wal.exists()

        keeper = CatalogKeeper(catalog)
        assert keeper.holding
        con.execute("INSERT INTO lake.t VALUES (2)")
        assert wal.exists(), "the write's connection, no longer the last, left the log"

        keeper.close()
        assert not keeper.holding
        assert not wal.exists(), "the keeper, the last to go, removed the log"
        assert con.execute("SELECT sum(n) FROM lake.t").fetchone() == (3,)
    finally:
        con.close()


def test_a_catalog_it_cannot_open_is_a_warning_not_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    keeper = CatalogKeeper(tmp_path / "no such folder" / "catalog.sqlite")
    assert not keeper.holding
    assert "no keeper" in caplog.text
    keeper.close()


def test_closing_the_sink_lets_its_keeper_go(settings: Settings) -> None:
    sink = sink_for(settings)
    catalog = LakeLocation.of(settings).sqlite_file
    assert catalog is not None
    keeper = CatalogKeeper(catalog)
    sink._keeper = keeper
    assert keeper.holding
    sink.close()
    assert not keeper.holding
