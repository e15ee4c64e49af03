"""``shopstream replay start``: one readable line when the lake refuses its model; Arrow's
memory pool set for its two threads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest

from pipelines.replay import cli as replay_cli
from pipelines.replay import engine
from shopstream import settings as settings_module
from shopstream.cli.main import main


def test_a_model_the_lake_refuses_is_one_line_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pools: list[str] = []
    monkeypatch.setattr(replay_cli, "use_jemalloc_for_arrow", lambda: pools.append("set") or "")
    monkeypatch.setenv("SHOPSTREAM_DATA_DIR", str(tmp_path / "data"))
    settings_module.get_settings.cache_clear()
    monkeypatch.setattr(engine, "plan", lambda *args, **kwargs: SimpleNamespace(name="late"))

    def refused(con: duckdb.DuckDBPyConnection, plan: object) -> None:
        raise duckdb.TransactionException(
            "TransactionContext Error: Failed to commit: Failed to commit DuckLake "
            "transaction.\nFailed to flush changes into DuckLake: database is locked"
        )

    monkeypatch.setattr(engine, "create_model", refused)
    try:
        code = main(["replay", "start", "late", "--plain"])
    finally:
        settings_module.get_settings.cache_clear()
    err = capsys.readouterr().err
    assert pools == ["set"]  # the process's pool (pipelines.runtime.memory), before any batch
    assert code == 2
    assert err.strip().splitlines() == [
        "shopstream: replay late: could not create its model in the lake (Failed to flush "
        "changes into DuckLake: database is locked); nothing was written - start it again"
    ], err
