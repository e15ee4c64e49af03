"""A slow or failing read side (embedded lane): the sink, a real process, writes orders that
stream in while its lake cannot be written - first its catalog locked by another process
(the DuckLake writer blocked), then the disk under its data files full (a small tmpfs).

Each fault runs in three phases of :attr:`Profile.disk_orders` orders: before (written),
during (the sink must pause: it says why in its log and in its status, which the live
board and the health page show, and writes nothing), after the fault is lifted (it
resumes by itself, says so, and clears its status). At the end every order of the three
phases is in the read models exactly once, with its total, and the sink never restarted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from pipelines.sink.feeds import FEEDS
from readmodels.lake import LakeLocation
from readmodels.queries import NoReadModels, ReadModels
from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess
from shopstream.kafka import make_producer
from shopstream.settings import Settings, load_settings
from shopstream.status import read_statuses, run_dir
from shopstream.topics import ORDERS, Namespace
from support.fault_suite import Profile, report
from support.lake import simulated_orders
from support.processes import AppProcess

# The faults are the lake's; the broker only carries the orders: the lane users run is enough.
pytestmark = [pytest.mark.timeout(600), pytest.mark.lane("embedded")]

PAUSED = "cannot write the read models"
RESUMED = "writing the read models again"


@dataclass
class Phases:
    """What one fault did to the sink, measured."""

    paused_after_s: float
    """From the first order sent under the fault until the sink's status said paused."""
    resumed_after_s: float
    """From the fault lifted until every order sent so far was in the read models."""
    pauses_logged: int
    orders: int
    reason: str
    """The sink's status note while it was paused."""


def orders_in(rm: ReadModels) -> int:
    try:
        return int(rm.totals()["orders"] or 0)
    except NoReadModels:
        return 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str, sink: AppProcess) -> float:
    began = time.monotonic()
    while not condition():
        assert sink.running, f"the sink exited while {what}\n{sink.log_tail(40)}"
        assert time.monotonic() - began < timeout, f"{what}: not in {timeout:.0f}s\n" + (
            sink.log_tail(40)
        )
        time.sleep(0.25)
    return time.monotonic() - began


def run_through(
    fault: contextlib.AbstractContextManager[None],
    settings: Settings,
    namespace: Namespace,
    tmp: Path,
    per_phase: int,
) -> Phases:
    """Send three phases of orders around ``fault`` (see the module docstring)."""
    create_topics(settings, namespace.topics(feed.topic for feed in FEEDS))
    topic = namespace.topic(ORDERS).name
    orders = simulated_orders(3 * per_phase)
    producer = make_producer(settings)
    sink = AppProcess("sink", namespace, settings, tmp).start()
    status_name = namespace.app("sink")

    def note() -> str | None:
        status = read_statuses(run_dir(settings)).get(status_name)
        return status.note if status is not None else None

    def send(phase: int) -> None:
        for key, value, ts in orders[phase * per_phase : (phase + 1) * per_phase]:
            producer.produce(topic, value, key, timestamp=ts)
        assert producer.flush(30) == 0

    rm = ReadModels(settings)
    try:
        send(0)
        wait_for(lambda: orders_in(rm) == per_phase, 120, "writing the first orders", sink)
        rm.close()  # the catalog lock below would block a reader too
        with fault:
            send(1)
            paused_after = wait_for(
                lambda: (note() or "").startswith("paused"), 60, "pausing", sink
            )
            reason = note() or ""
            time.sleep(2)  # the sink keeps retrying; nothing may land or crash meanwhile
            assert sink.running, sink.log_tail(40)
        lifted = time.monotonic()
        wait_for(lambda: orders_in(rm) == 2 * per_phase, 120, "resuming", sink)
        resumed_after = time.monotonic() - lifted
        wait_for(lambda: note() is None, 30, "clearing its status", sink)
        send(2)
        wait_for(lambda: orders_in(rm) >= 3 * per_phase, 120, "writing the last orders", sink)
        time.sleep(2)  # a double would show by now
    finally:
        code = sink.stop()
        rm.close()
    assert code == 0, sink.log_tail(40)
    log = sink.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert "run failed" not in log, log[-3000:]  # paused and retried, never restarted
    assert log.count(RESUMED) == log.count(PAUSED) >= 1, log[-3000:]

    truth: dict[str, Decimal] = {}
    for _, value, _ in orders:
        doc = orjson.loads(value)
        truth[doc["payload"]["order_id"]] = sum(
            (Decimal(str(line["unit_price"])) * line["qty"] for line in doc["payload"]["lines"]),
            Decimal("0"),
        )
    rows = rm.sql(f"SELECT order_id, total FROM {rm.table('orders')}")
    ids = rows["order_id"].to_list()
    assert len(ids) == len(set(ids)) == len(truth), "an order is missing or doubled"
    assert dict(zip(ids, rows["total"].to_list(), strict=True)) == truth
    return Phases(paused_after, resumed_after, log.count(PAUSED), len(truth), reason)


@contextlib.contextmanager
def catalog_locked(settings: Settings) -> Iterator[None]:
    """Hold an exclusive lock on the lake's SQLite catalog from this process (another
    writer in a long transaction, a backup tool...): the sink's commits fail meanwhile."""
    path = LakeLocation.of(settings).catalog.removeprefix("sqlite:")
    con = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        con.execute("BEGIN EXCLUSIVE")
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def test_a_blocked_lake_writer_pauses_the_sink_and_loses_nothing(
    broker: BrokerProcess,
    settings: Settings,
    namespace: Namespace,
    tmp_path: Path,
    faults_profile: Profile,
) -> None:
    phases = run_through(
        catalog_locked(settings), settings, namespace, tmp_path, faults_profile.disk_orders
    )
    assert "locked" in phases.reason, phases.reason
    report("read side, catalog locked", _figures(broker.kind, phases))


@contextlib.contextmanager
def disk_full(mount: Path) -> Iterator[None]:
    """Fill the filesystem at ``mount`` up to the last byte, then free it again."""
    ballast = mount / "ballast"
    with open(ballast, "wb") as out:
        chunk = b"\0" * (1 << 16)
        with contextlib.suppress(OSError):
            while True:
                out.write(chunk)
                out.flush()
    try:
        yield
    finally:
        ballast.unlink()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MB tmpfs of this test's own (mounting needs root: skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    command = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)]
    if os.geteuid() != 0 and shutil.which("sudo"):
        command = ["sudo", "-n", *command]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()[:200]}")
    try:
        yield mount
    finally:
        unmount = ["umount", "-l", str(mount)]
        subprocess.run(command[:2] + unmount if command[0] == "sudo" else unmount, check=False)


def test_a_full_disk_pauses_the_sink_and_loses_nothing(
    broker: BrokerProcess,
    settings: Settings,
    namespace: Namespace,
    tmp_path: Path,
    small_disk: Path,
    faults_profile: Profile,
) -> None:
    files = small_disk / "files"
    settings = load_settings(base=settings, lake_data_path=f"{files}/")
    phases = run_through(
        disk_full(small_disk), settings, namespace, tmp_path, faults_profile.disk_orders
    )
    report("read side, disk full", _figures(broker.kind, phases))
    assert "No space left on device" in phases.reason, phases.reason


def _figures(lane: str, phases: Phases) -> str:
    return (
        f"{lane} lane: {phases.orders} orders in 3 phases; paused "
        f"{phases.paused_after_s:.1f}s after the fault began ({phases.pauses_logged} pause "
        f"logged), every order written {phases.resumed_after_s:.1f}s after it was lifted; "
        "lost 0, doubled 0"
    )
