"""Supervisor: starts contributed processes, restarts the ones that die, stops all."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shopstream import supervisor as supervisor_module
from shopstream.plugins import UpProcess
from shopstream.settings import load_settings
from shopstream.supervisor import Supervisor, settings_env


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached")


def test_children_get_the_same_settings(tmp_path: Path) -> None:
    s = load_settings(broker_address="10.1.2.3:9092", data_dir=tmp_path, sasl_password="pw")
    env = settings_env(s)
    assert env["SHOPSTREAM_BROKER_ADDRESS"] == "10.1.2.3:9092"
    assert env["SHOPSTREAM_DATA_DIR"] == str(tmp_path)
    assert env["SHOPSTREAM_SASL_PASSWORD"] == "pw"


def test_runs_restarts_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Real child processes (python -m shopstream ...); only the role list is stubbed.
    schemas_out = tmp_path / "schemas"
    processes = [
        UpProcess("skipped", ("broker",), order=1),
        UpProcess("once", ("schemas", "export", "--out", str(schemas_out)), order=2),
    ]
    monkeypatch.setattr(supervisor_module, "load_up_processes", lambda settings: processes)
    monkeypatch.setattr(supervisor_module, "MAX_RESTARTS", 1)
    settings = load_settings(data_dir=tmp_path)
    with Supervisor(settings, skip={"skipped"}) as sup:
        assert sup.start_all() == ["once"]
        wait_for(lambda: not sup.running())
    assert len(list(schemas_out.glob("*.json"))) > 0
    assert (tmp_path / "logs" / "once.log").exists()


def test_a_failing_child_is_restarted_then_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = UpProcess("failing", ("topics", "list"))  # no broker at 127.0.0.1:1 -> exit 2
    monkeypatch.setattr(supervisor_module, "load_up_processes", lambda settings: [failing])
    monkeypatch.setattr(supervisor_module, "MAX_RESTARTS", 1)
    settings = load_settings(data_dir=tmp_path, broker_address="127.0.0.1:1")
    with Supervisor(settings) as sup:
        sup.start_all()
        wait_for(lambda: not sup.running() and not sup._children, timeout=30)
    log = (tmp_path / "logs" / "failing.log").read_text()
    assert log.count("no broker at 127.0.0.1:1") == 2  # first run + one restart
