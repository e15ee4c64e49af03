"""The main job: ``shopstream up`` on its own embedded broker runs the whole shop.

This is the README's run command minus the install: one process starts the
broker, creates the topics, and supervises the simulators, the router, the
services and the analytics. The test watches the output topics fill from
outside, as a user's consumer would, then stops ``up`` with SIGTERM and checks
that it leaves nothing behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

from shopstream.brokers.base import free_port, port_in_use
from shopstream.events import decode
from shopstream.kafka import make_consumer
from shopstream.settings import load_settings
from shopstream.topics import (
    ALERTS,
    ALL_TOPICS,
    NOTIFICATIONS,
    SALES_BY_CHANNEL,
    STOCK_EVENTS,
)

WATCHED = (STOCK_EVENTS.name, NOTIFICATIONS.name, SALES_BY_CHANNEL.name)


def test_up_runs_every_role_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SHOPSTREAM_DATA_DIR": str(tmp_path / "data")}
    up = subprocess.Popen(
        [sys.executable, "-m", "shopstream", "up", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    children: list[psutil.Process] = []
    seen: dict[str, set[str]] = {name: set() for name in WATCHED}
    try:
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not port_in_use("127.0.0.1", port):
            assert up.poll() is None and time.monotonic() < deadline, "broker never came up"
            time.sleep(0.2)
        settings = load_settings(broker_address=address, data_dir=tmp_path / "data")
        consumer = make_consumer(settings, f"up-watch-{uuid.uuid4().hex[:8]}")
        consumer.subscribe([*WATCHED, ALERTS.name])
        deadline = time.monotonic() + 150
        try:
            while time.monotonic() < deadline and not all(seen.values()):
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                # Analytics rows are not events; every other watched topic carries events.
                event = decode(msg.value()) if msg.topic() != SALES_BY_CHANNEL.name else None
                kind = getattr(event, "event_type", "")
                seen.setdefault(msg.topic(), set()).add(kind)
        finally:
            consumer.close()
        children = psutil.Process(up.pid).children(recursive=True)
        assert up.poll() is None, "shopstream up exited early"
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=60)

    assert all(seen[name] for name in WATCHED), (seen, output)
    assert "StockReserved" in seen[STOCK_EVENTS.name]
    assert "NotificationSent" in seen[NOTIFICATIONS.name]
    assert up.returncode == 0, output
    expected_lines = (
        "memory only", f"topics: {len(ALL_TOPICS)} created", "started router",
        "started analytics", "started producer", "all processes stopped",
    )  # fmt: skip
    for line in expected_lines:
        assert line in output, output
    assert "Traceback" not in output
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive
    assert not port_in_use("127.0.0.1", port)
    logs = {p.stem: p.read_text() for p in (tmp_path / "data" / "logs").glob("*.log")}
    assert {"router", "stock", "finance", "analytics", "producer"} <= set(logs)
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name}.log:\n{text[-2000:]}"
