"""The CLI's contract with a user who got something wrong: one line, exit code 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from shopstream.admin import partitions
from shopstream.brokers.base import free_port
from shopstream.settings import Settings, load_settings, settings_env
from shopstream.topics import ALL_TOPICS


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopstream", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (("up", "--broker", "127.0.0.1:1"), {}, "no broker at 127.0.0.1:1"),
        (("up", "--bogus"), {}, "No such option"),
        (("broker", "--port", "0"), {}, "--port"),
        (("topics", "list"), {"SHOPSTREAM_BROKER_ADDRESS": "nowhere"}, "SHOPSTREAM_BROKER_ADDRESS"),
        (("topics", "list"), {"SHOPSTREAM_PROCESSING_GUARANTEE": "maybe"}, "PROCESSING_GUARANTEE"),
        (("topics", "create"), {"SHOPSTREAM_BROKER_ADDRESS": "127.0.0.1:1"}, "shopstream broker"),
        (("nosuchcommand",), {}, "No such command"),
        (("run", "router"), {"SHOPSTREAM_BROKER_ADDRESS": "127.0.0.1:1"}, "no broker at"),
        (("run", "nosuchapp"), {}, "'nosuchapp' is not one of"),
        (("produce", "--seed", "many"), {}, "not a seed"),
    ],
)
def test_user_errors_are_one_readable_line(
    args: tuple[str, ...], env: dict[str, str], fragment: str
) -> None:
    result = run(*args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_broker_command_serves_the_catalog_and_stops_on_sigterm() -> None:
    port = free_port()
    env = {**os.environ, "SHOPSTREAM_BROKER_ADDRESS": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopstream", "broker", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            lines.append(line)
            if "listening on" in line:
                break
        assert "memory only" in lines[-1], lines
        assert run("topics", "create", env=env).returncode == 0
        client = KafkaConsumer(bootstrap_servers=f"127.0.0.1:{port}")
        try:
            for spec in ALL_TOPICS:
                expected = partitions(spec, load_settings())
                assert len(client.partitions_for_topic(spec.name) or ()) == expected
        finally:
            client.close()
        # A second broker on the same port is a user error, not a crash.
        clash = run("broker", "--port", str(port))
        assert clash.returncode == 2 and "already in use" in clash.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def test_run_on_state_of_another_broker_says_so_and_how_to_fix_it(
    settings: Settings, tmp_path: Path
) -> None:
    state = tmp_path / "data" / "state"
    (state / "router").mkdir(parents=True)
    (state / ".broker").write_text('{"broker_id": "0ld0ld0ld0ld"}')
    env = settings_env(load_settings(base=settings, data_dir=tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "shopstream", "run", "router"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "belongs to broker 0ld0ld0ld0ld" in lines[0] and "mv " in lines[0]
    assert (state / "router").is_dir()  # nothing moved or deleted behind the user's back
