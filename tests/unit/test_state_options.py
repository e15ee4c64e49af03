"""Every app's state stores reach disk in small memtables (``pipelines.runtime.quix``):
state written a checkpoint at a time must not pile up in memory."""

from __future__ import annotations

import os
from pathlib import Path

import rocksdict
from quixstreams.state.rocksdb import RocksDBOptions

from pipelines.runtime.quix import STATE_MEMTABLE_BYTES, quix_app, state_options
from shopstream.settings import load_settings


def _write(path: Path, options: RocksDBOptions, megabytes: int) -> tuple[int, int]:
    """Write ``megabytes`` of 64 kB values as checkpoints would (a key rewritten each
    time, as the router rewrites its filling dedupe segment); return (SST files, WAL
    bytes) afterwards."""
    db = rocksdict.Rdict(str(path), options.to_options())
    try:
        value = os.urandom(64 * 1024)
        for i in range(megabytes * 16):
            db[f"segment-{i % 8}".encode()] = value
        # While open: closing flushes whatever the memtables hold.
        sst = len(list(path.glob("*.sst")))
        wal = sum(p.stat().st_size for p in path.glob("*.log"))
    finally:
        db.close()
    return sst, wal


def test_state_written_checkpoint_by_checkpoint_reaches_disk(tmp_path: Path) -> None:
    sst, wal = _write(tmp_path / "db", state_options(), megabytes=12)
    assert sst >= 1, "the memtables were never flushed: the state lives in memory"
    assert wal <= 3 * STATE_MEMTABLE_BYTES


def test_every_app_gets_the_state_options(tmp_path: Path) -> None:
    app = quix_app(load_settings(data_dir=tmp_path), "probe", "probe-group")
    options = app.config.rocksdb_options
    assert options.write_buffer_size == STATE_MEMTABLE_BYTES
    assert options.block_cache_size < 1024**3
