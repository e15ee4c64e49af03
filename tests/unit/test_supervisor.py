"""Supervisor: real child processes started, restarted with a budget, given up, stopped."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shopstream import supervisor as supervisor_module
from shopstream.apps import AppSpec
from shopstream.brokers import make_broker
from shopstream.settings import load_settings, settings_env
from shopstream.supervisor import BROKER_DIED, Supervisor

PYTHON = (sys.executable, "-c")


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached")


def script(name: str, code: str) -> AppSpec:
    """An app whose command is a Python snippet (the launcher is ``python -c``)."""
    return AppSpec(name=name, kind="processor", description="test child", argv=(code,))


def counting(starts: Path, then: str) -> str:
    """A snippet that appends one line to ``starts`` per start, then runs ``then``."""
    return (
        f"import sys, time, signal; open({str(starts)!r}, 'a').write('start\\n'); {then}"
    )


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "backoff", lambda restarts: 0.1)


def test_children_get_exactly_the_settings(tmp_path: Path) -> None:
    s = load_settings(broker_address="10.1.2.3:9092", data_dir=tmp_path, sasl_password="pw")
    inherited = {"SHOPSTREAM_SASL_MECHANISM": "PLAIN", "SHOPSTREAM_KAFKA_CACHE": "/c", "X": "1"}
    env = settings_env(s, base=inherited)
    assert env["SHOPSTREAM_BROKER_ADDRESS"] == "10.1.2.3:9092"
    assert env["SHOPSTREAM_DATA_DIR"] == str(tmp_path)
    assert env["SHOPSTREAM_SASL_PASSWORD"] == "pw"
    # A setting the child's settings leave unset must not leak in from the parent...
    assert "SHOPSTREAM_SASL_MECHANISM" not in env
    # ... while variables that are not settings pass through.
    assert (env["SHOPSTREAM_KAFKA_CACHE"], env["X"]) == ("/c", "1")


def test_a_failing_child_is_restarted_then_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "MAX_RESTARTS", 2)
    starts = tmp_path / "starts"
    app = script("failing", counting(starts, "sys.exit(3)"))
    with Supervisor(load_settings(data_dir=tmp_path), [app], launcher=PYTHON) as sup:
        sup.start_all()
        wait_for(lambda: sup.children["failing"].state == "failed")
        assert sup.children["failing"].total_restarts == 2
    assert starts.read_text().count("start") == 3  # first run + two restarts


def test_an_exit_code_2_is_a_user_error_and_not_restarted(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    app = script("misconfigured", counting(starts, "print('bad setting X'); sys.exit(2)"))
    with Supervisor(load_settings(data_dir=tmp_path), [app], launcher=PYTHON) as sup:
        sup.start_all()
        wait_for(lambda: sup.children["misconfigured"].state == "failed")
        time.sleep(0.5)
        assert sup.children["misconfigured"].last_log_line() == "bad setting X"
    assert starts.read_text().count("start") == 1


def test_a_child_that_was_healthy_gets_a_fresh_restart_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "MAX_RESTARTS", 1)
    monkeypatch.setattr(supervisor_module, "HEALTHY_AFTER_S", 0.3)
    starts = tmp_path / "starts"
    app = script("flaky", counting(starts, "time.sleep(0.6); sys.exit(3)"))
    with Supervisor(load_settings(data_dir=tmp_path), [app], launcher=PYTHON) as sup:
        sup.start_all()
        wait_for(lambda: sup.children["flaky"].total_restarts >= 3, timeout=30)
        assert sup.children["flaky"].state != "failed"


def test_stop_terminates_then_kills_children_that_ignore_sigterm(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    ignore_term = "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    stubborn = script("stubborn", counting(starts, ignore_term))
    sup = Supervisor(load_settings(data_dir=tmp_path), [stubborn], launcher=PYTHON)
    sup.start_all()
    wait_for(lambda: starts.exists())
    pid = sup.running()["stubborn"]
    began = time.monotonic()
    sup.stop(grace=1.0)
    assert time.monotonic() - began < 10
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_death_of_the_broker_ends_the_supervisor(tmp_path: Path) -> None:
    broker = make_broker("embedded", log_path=tmp_path / "broker.log").start()
    app = script("idle", "import time; time.sleep(60)")
    with Supervisor(load_settings(data_dir=tmp_path), [app], broker, launcher=PYTHON) as sup:
        sup.start_all()
        assert sup.wait(1.0) is None
        os.kill(broker.pid or 0, 9)
        assert sup.wait(10.0) == BROKER_DIED
    broker.stop()


def test_a_stopped_app_starts_again_when_asked(tmp_path: Path) -> None:
    from shopstream.status import request_start

    starts = tmp_path / "starts"
    app = script("once", counting(starts, "sys.exit(0)"))
    settings = load_settings(data_dir=tmp_path)
    with Supervisor(settings, [app], launcher=PYTHON) as sup:
        sup.start_all()
        wait_for(lambda: sup.children["once"].state == "finished")
        request_start(settings, "once")
        wait_for(lambda: starts.read_text().count("start") == 2)
        wait_for(lambda: sup.children["once"].state == "finished")
