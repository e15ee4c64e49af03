"""Writers of one SQLite catalog take turns (readmodels.transactions.WriteLock).

Real DuckLake, real processes, no broker. The failure this prevents was seen in CI: a
replay creating its model (one transaction of seconds) beside the sink, which commits
every few hundred milliseconds, had its commit refused (``database is locked``) eight
times in a row and gave up.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from readmodels.lake import connect
from readmodels.transactions import WriteLock, in_transaction
from shopstream.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]

# A sink's writer in its own process: small batches, back to back, for ``seconds``; it
# prints "ready" after its first commit, then how many commits conflicted, how long one
# write took at most, and when (wall clock) its last write ended.
SINK_LIKE = textwrap.dedent("""
    import sys, time
    from pipelines.sink.app import feeds_for
    from pipelines.sink.writer import LakeWriter
    from readmodels.generations import open_for
    from readmodels.lake import connect
    from shopstream.settings import load_settings
    from shopstream.topics import CATALOG
    from support.lake import order_records

    settings = load_settings(data_dir=sys.argv[1])
    con = connect(settings, read_only=False)
    generation, _ = open_for(con, "b1")
    writer = LakeWriter(con, generation, feeds_for(CATALOG))
    records = order_records(4000)
    conflicts = longest = 0.0
    deadline = time.monotonic() + float(sys.argv[2])
    for start in range(0, len(records), 20):
        result = writer.write(records[start:start + 20])
        conflicts += result.conflicts
        longest = max(longest, result.seconds)
        if start == 0:
            print("ready", flush=True)
        if time.monotonic() > deadline:
            break
    print(f"{int(conflicts)} {longest:.3f} {time.time()}", flush=True)
""")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "data")


def test_a_long_transaction_commits_at_once_beside_a_writer_that_commits_all_the_time(
    settings: Settings,
) -> None:
    con = connect(settings, read_only=False)
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK_LIKE, str(settings.data_dir), "6"],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert sink.stdout is not None
        assert sink.stdout.readline().strip() == "ready"
        attempts = 0

        def long_model(con: duckdb.DuckDBPyConnection) -> None:
            nonlocal attempts
            attempts += 1
            con.execute("CREATE SCHEMA lake.replay_long")
            for n in range(8):
                con.execute(f"CREATE TABLE lake.replay_long.t{n} (a INTEGER, b VARCHAR)")
                con.execute(f"INSERT INTO lake.replay_long.t{n} VALUES (1, 'x')")
            time.sleep(1.5)  # a replay's model creation on a loaded machine

        in_transaction(con, long_model, "a long transaction")
        committed_at = time.time()
        conflicts, longest, last_write = sink.communicate(timeout=120)[0].split()
    finally:
        sink.kill()
    assert attempts == 1
    assert int(conflicts) == 0
    # The sink waited for the long transaction's turn, and then wrote on (a count of
    # writes measures the machine: a CI run made 7 in the 6 s, where 10 were asked).
    assert float(longest) >= 1.0, longest
    assert float(last_write) > committed_at


def test_a_held_lock_times_out_with_its_path_and_a_killed_holder_gives_it_back(
    settings: Settings,
) -> None:
    con = connect(settings, read_only=False)
    lock = WriteLock.of(con)
    assert lock.path == Path(settings.data_dir).resolve() / "lake" / "catalog.sqlite.write.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time\n"
         "f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True)\n"
         "time.sleep(600)", str(lock.path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match=r"catalog\.sqlite\.write\.lock"), lock.held(0.3):
            pass
    finally:
        holder.kill()
        holder.wait()
    with lock.held(timeout=5) as waited:  # the kernel gave it back when the holder died
        assert waited < 1.0


def test_a_connection_without_a_sqlite_lake_takes_no_turns() -> None:
    lock = WriteLock.of(duckdb.connect())
    assert lock.path is None
    with lock.held(timeout=0) as waited:
        assert waited == 0.0
