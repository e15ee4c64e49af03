"""The guided tour on the running stack (``shopstream up`` on its own embedded broker): each
of the course's five models runs as a user would run it and checks what it claims - every
subscribed group received the event, a late consumer read from offset zero, the rebuilt
stock equals the live value, the read side sees the command's effects, and a stopped
service catches up when started again. The topology map is checked on the same stack."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from dashboard.topology import READ_MODELS, topology
from readmodels.queries import NoReadModels, ReadModels
from shopstream import settings as settings_module
from shopstream.brokers.base import free_port, port_in_use
from shopstream.settings import Settings, load_settings
from tour.scenarios import SCENARIOS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    folder = tmp_path_factory.mktemp("tour")
    port = free_port()
    env = {**os.environ, "SHOPSTREAM_DATA_DIR": str(folder / "data"),
           "SHOPSTREAM_DASHBOARD_PORT": str(free_port())}  # fmt: skip
    up = subprocess.Popen(
        [sys.executable, "-m", "shopstream", "up", "--port", str(port), "--plain"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder,
    )  # fmt: skip
    settings = load_settings(data_dir=folder / "data", broker_address=f"127.0.0.1:{port}")
    rm = ReadModels(settings)
    deadline = time.monotonic() + 120
    while True:  # ready when invoices reach the read models: every app runs
        assert up.poll() is None, up.communicate()[0][-3000:]
        try:
            if rm.sql(f"SELECT count(*) FROM {rm.table('invoices')}").item() > 0:
                break
        except NoReadModels:
            pass
        assert time.monotonic() < deadline, "the stack never invoiced an order"
        time.sleep(1)
    settings_module.get_settings.cache_clear()
    try:
        yield settings
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=90)
        assert up.returncode == 0, output[-3000:]
        assert not port_in_use("127.0.0.1", port)


@pytest.mark.parametrize("model", list(SCENARIOS))
def test_each_model_shows_what_it_claims_on_the_running_stack(stack: Settings, model: str) -> None:
    result = SCENARIOS[model](stack)
    assert result.claims, result
    failed = [claim for claim, holds in result.claims.items() if not holds]
    assert not failed, (failed, [s.text for s in result.steps])
    assert "(" in result.title  # the course's French term beside the English one


def test_the_topology_map_shows_the_running_apps_and_a_stopped_one(stack: Settings) -> None:
    first = topology(stack)
    time.sleep(2)
    topo = topology(stack, first)
    apps = {n.name for n in topo.nodes.values() if n.kind != "topic"}
    assert {"producer", "router", "stock", "finance", "sink", READ_MODELS} <= apps
    running = {n.name for n in topo.nodes.values() if n.state == "running"}
    assert {"router", "stock", "sink"} <= running
    # Events flow left to right: producer, its ingress topics, the router, the typed topics.
    layer = {n.name: n.layer for n in topo.nodes.values()}
    assert layer["producer"] < layer["ingress.web"] < layer["router"] < layer["orders"]
    assert layer["orders"] < layer["stock"] < layer["stock.events"] < layer[READ_MODELS]
    assert any(e.rate for e in topo.edges), "no edge shows a rate"
    lag = [e for e in topo.edges if e.target == "stock" and e.source == "orders"]
    assert lag and lag[0].lag is not None
