"""The main job: ``shopstream up`` on its own embedded broker runs the whole shop.

This is the README's run command minus the install: one process starts the
broker, creates the topics, and supervises the simulators, the router, the
services and the analytics. The tests watch the output topics fill from
outside, as a user's consumer would, read what each process publishes about
itself, then stop ``up`` with SIGTERM and check that it leaves nothing behind -
and that a second ``up`` in the same folder starts as cleanly as the first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from readmodels.queries import NoReadModels, ReadModels
from shopstream.brokers import BrokerProcess
from shopstream.brokers.base import free_port, port_in_use
from shopstream.events import decode
from shopstream.kafka import make_consumer
from shopstream.settings import Settings, load_settings
from shopstream.status import ProcessStatus, read_statuses
from shopstream.topics import ALERTS, ALL_TOPICS, NOTIFICATIONS, ORDERS, RESTOCKS, STOCK_EVENTS
from support.processes import TopicReader

WATCHED = (STOCK_EVENTS.name, NOTIFICATIONS.name)
APPS = {"router", "stock", "finance", "customer-relations", "notifications", "analytics", "sink"}


@dataclass
class UpRun:
    """What one ``shopstream up`` printed, left behind and published."""

    output: str
    returncode: int
    seen: dict[str, set[str]]
    statuses: dict[str, ProcessStatus]
    logs: dict[str, str]
    children: list[psutil.Process]
    port: int
    read_models: dict[str, int]
    """Rows a reader in another process found in the read models while ``up`` ran."""


def run_up(
    folder: Path,
    until: Callable[[dict[str, set[str]]], bool],
    timeout: float,
    broker: str | None = None,
) -> UpRun:
    """``shopstream up`` in ``folder`` until ``until(seen)`` (or ``timeout``), then SIGTERM.

    On its own embedded broker, or on ``broker`` (``up --broker``) if given.
    """
    port = int(broker.rsplit(":", 1)[1]) if broker else free_port()
    where = ["--broker", broker] if broker else ["--port", str(port)]
    env = {**os.environ, "SHOPSTREAM_DATA_DIR": str(folder / "data")}
    up = subprocess.Popen(
        [sys.executable, "-m", "shopstream", "up", *where],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder,
    )  # fmt: skip
    children: list[psutil.Process] = []
    seen: dict[str, set[str]] = {name: set() for name in WATCHED}
    statuses: dict[str, ProcessStatus] = {}
    try:
        deadline = time.monotonic() + 60
        while not port_in_use("127.0.0.1", port):
            assert up.poll() is None and time.monotonic() < deadline, "broker never came up"
            time.sleep(0.2)
        settings = load_settings(broker_address=f"127.0.0.1:{port}", data_dir=folder / "data")
        # From the end: what this run does, not what an earlier run left on a durable broker.
        consumer = make_consumer(
            settings, f"up-watch-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "latest"}
        )
        consumer.subscribe([*WATCHED, ALERTS.name])
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and not until(seen):
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                kind = getattr(decode(msg.value()), "event_type", "")
                seen.setdefault(msg.topic(), set()).add(kind)
        finally:
            consumer.close()
        read_models = read_while_running(settings)
        children = psutil.Process(up.pid).children(recursive=True)
        statuses = read_statuses(folder / "data" / "run")
        assert up.poll() is None, "shopstream up exited early"
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=60)
    logs = {p.stem: p.read_text() for p in (folder / "data" / "logs").glob("*.log")}
    return UpRun(output, up.returncode, seen, statuses, logs, children, port, read_models)


def read_while_running(settings: Settings, timeout: float = 30.0) -> dict[str, int]:
    """Rows of a few read models, as a notebook would read them while the sink writes."""
    rm = ReadModels(settings)
    deadline = time.monotonic() + timeout
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            counts = {
                row["read_model"]: row["rows"] for row in rm.freshness().iter_rows(named=True)
            }
        except NoReadModels:
            counts = {}
        if counts.get("orders") and counts.get("stock_movements") and counts.get("events"):
            break
        time.sleep(1.0)
    rm.close()
    return counts


def assert_stopped_cleanly(run: UpRun, own_broker: bool = True) -> None:
    assert run.returncode == 0, run.output
    assert "all processes stopped" in run.output
    assert "Traceback" not in run.output
    assert "restarting in" not in run.output, run.output
    alive = [c for c in run.children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive
    assert port_in_use("127.0.0.1", run.port) != own_broker
    for name, text in run.logs.items():
        assert "Traceback" not in text, f"{name}.log:\n{text[-2000:]}"


def reserved_and_notified(seen: dict[str, set[str]]) -> bool:
    return "StockReserved" in seen[STOCK_EVENTS.name] and bool(seen[NOTIFICATIONS.name])


def test_up_runs_every_role_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    run = run_up(tmp_path, reserved_and_notified, timeout=150)

    assert "StockReserved" in run.seen[STOCK_EVENTS.name], (run.seen, run.output)
    assert "NotificationSent" in run.seen[NOTIFICATIONS.name], (run.seen, run.output)
    expected_lines = (
        "memory only", f"topics: {len(ALL_TOPICS)} created", "started router",
        "started analytics", "started producer",
    )  # fmt: skip
    for line in expected_lines:
        assert line in run.output, run.output
    assert_stopped_cleanly(run)
    assert APPS | {"producer"} <= set(run.logs)
    # Every app published what it did; each consumed and none failed.
    assert APPS | {"producer"} <= set(run.statuses)
    for name in APPS:
        status = run.statuses[name]
        assert status.consumed > 0 and status.errors == 0 and status.broker_up, status
    assert run.statuses["producer"].produced > 0
    # The read models filled live: this test process read them while the sink wrote.
    assert run.read_models["orders"] > 0 and run.read_models["stock_movements"] > 0
    assert "AuthlibDeprecationWarning" not in run.output + "".join(run.logs.values())


def test_a_second_up_in_the_same_folder_starts_as_cleanly_as_the_first(tmp_path: Path) -> None:
    notified = reserved_and_notified
    first = run_up(tmp_path, notified, timeout=120)
    assert_stopped_cleanly(first)
    for log in (tmp_path / "data" / "logs").glob("*.log"):
        log.unlink()  # judge the second run by its own logs

    second = run_up(tmp_path, notified, timeout=120)
    assert notified(second.seen), second.output
    assert_stopped_cleanly(second)
    # The state of the first broker was moved aside, in one line saying where.
    moved = [line for line in second.output.splitlines() if "moved to" in line]
    assert len(moved) == 1 and "previous" in moved[0], second.output
    assert len(list((tmp_path / "data" / "previous").iterdir())) == 1
    for name in APPS:
        status = second.statuses[name]
        assert status.consumed > 0 and status.errors == 0, status
    # The read models of the first broker stay, for analysis; the second writes its own.
    assert "new generation 2" in second.logs["sink"] and "another broker" in second.logs["sink"]
    assert second.read_models["orders"] > 0
    # The new broker got its opening stock: the stock service reserved orders again.
    assert "StockReserved" in second.seen[STOCK_EVENTS.name]


def test_a_second_up_on_a_durable_broker_resumes_and_repeats_nothing(
    durable_kafka: BrokerProcess, tmp_path: Path
) -> None:
    address = durable_kafka.address
    first = run_up(tmp_path, reserved_and_notified, timeout=120, broker=address)
    assert_stopped_cleanly(first, own_broker=False)
    second = run_up(tmp_path, reserved_and_notified, timeout=120, broker=address)
    assert_stopped_cleanly(second, own_broker=False)
    assert "moved to" not in second.output and "is this broker's" in second.logs["router"]
    assert "opening stock already sent" in second.logs["producer"]

    settings = load_settings(broker_address=address, data_dir=tmp_path / "data")
    out = TopicReader(settings, [RESTOCKS.name, ORDERS.name, STOCK_EVENTS.name])
    try:
        out.drain(quiet=3.0, timeout=120)
    finally:
        out.close()
    opening = Counter(
        (e.store_id, e.payload.sku)
        for e in out.events(RESTOCKS.name, "Restocked")
        if e.payload.reason == "opening"
    )
    assert opening and set(opening.values()) == {1}, "the opening stock was sent twice"
    # Orders of both runs: new ids in the second (a fresh seed), each decided exactly once,
    # the first run's orders not again (committed offsets and state were resumed).
    orders = Counter(e.payload.order_id for e in out.events(ORDERS.name))
    assert set(orders.values()) == {1}
    decided = Counter(
        e.payload.order_id
        for e in out.events(STOCK_EVENTS.name)
        if e.event_type in ("StockReserved", "StockRejected")
    )
    assert decided and set(decided.values()) == {1}
    assert set(decided) <= set(orders)
