"""SASL/SCRAM for real (Apache Kafka lane): every client of shopstream logs in with the
settings' credentials - admin (``topics create`` / ``list``), the producer, a Quix app
(the router), the sink, a plain consumer and the read side built from what they wrote -
and a wrong password, or none, is one readable line and exit code 2.

The reference broker gets a SASL_PLAINTEXT listener that knows one user
(``KafkaReferenceBroker(scram_users=...)``); every client here connects to that listener
only. The embedded broker has no SASL: on that lane these tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from readmodels.queries import NoReadModels, ReadModels
from shopstream.admin import create_topics
from shopstream.brokers.kafka_reference import KafkaReferenceBroker, unavailable_reason
from shopstream.settings import Settings, load_settings, settings_env
from shopstream.topics import DEAD_LETTERS, INGRESS_WEB, ORDERS, QUESTIONS, RETURNS, Namespace
from support.processes import AppProcess, TopicReader

USER, PASSWORD = "shop", "shop-secret-1"
RECORDS = 50


@pytest.fixture(scope="module")
def sasl_broker(
    broker_lane: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaReferenceBroker]:
    if broker_lane != "kafka":
        pytest.skip("the embedded broker has no SASL; the reference broker has")
    reason = unavailable_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"kafka lane must run under CI but cannot: {reason}")
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("sasl-kafka") / "broker.log"
    broker = KafkaReferenceBroker(log_path=log, scram_users={USER: PASSWORD}).start()
    try:
        yield broker
    finally:
        broker.stop()


def login(broker: KafkaReferenceBroker, data: Path, **overrides: object) -> Settings:
    base: dict[str, object] = {
        "broker_address": broker.sasl_address, "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER, "sasl_password": PASSWORD, "data_dir": data,
    }  # fmt: skip
    values = {k: v for k, v in (base | overrides).items() if v is not None}
    return load_settings(**values)


def shopstream(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopstream", *args],
        env=settings_env(settings), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_every_client_logs_in_with_the_settings_credentials(
    sasl_broker: KafkaReferenceBroker, namespace: Namespace, tmp_path: Path
) -> None:
    settings = login(sasl_broker, tmp_path / "data")
    created = shopstream(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    again = shopstream(settings, "topics", "create")
    assert again.returncode == 0 and again.stdout.startswith("0 topic(s) created"), again
    listed = shopstream(settings, "topics", "list")
    assert listed.returncode == 0 and sasl_broker.sasl_address in listed.stdout, listed.stderr
    assert " no " not in listed.stdout  # every catalog topic exists, seen through SASL

    typed = [namespace.topic(t).name for t in (ORDERS, RETURNS, QUESTIONS, DEAD_LETTERS)]
    # The admin client in this process, logged in: the router's outputs exist to read.
    create_topics(settings, namespace.topics((ORDERS, RETURNS, QUESTIONS, DEAD_LETTERS)))
    apps = [AppProcess(name, namespace, settings, tmp_path).start() for name in ("router", "sink")]
    try:
        produced = shopstream(
            settings, "produce", "--channel", "web", "--count", str(RECORDS), "--rate", "0",
            "--seed", "7", "--no-opening", "--topic", f"web={namespace.topic(INGRESS_WEB).name}",
        )  # fmt: skip
        assert produced.returncode == 0, produced.stderr
        reader = TopicReader(settings, typed)  # a plain consumer, logged in too
        try:
            routed = reader.wait_for(
                lambda r: sum(len(r.records[t]) for t in typed) >= RECORDS, timeout=120, settle=2
            )
        finally:
            reader.close()
        counts = {t: len(reader.records[t]) for t in typed}
        assert routed and sum(counts.values()) == RECORDS, counts
        orders = counts[typed[0]]
        assert orders > 0, counts

        rm = ReadModels(settings)  # the read side: what the sink wrote through SASL

        def in_read_models() -> int:
            try:
                return int(rm.totals()["orders"] or 0)
            except NoReadModels:
                return 0

        deadline = time.monotonic() + 90
        while in_read_models() < orders and time.monotonic() < deadline:
            time.sleep(0.3)
        assert in_read_models() == orders
    finally:
        codes = {app.name: app.stop() for app in apps}
    assert codes == {"router": 0, "sink": 0}, [app.log_tail(20) for app in apps]
    for app in apps:
        log = app.log_path.read_text()
        assert "Traceback" not in log and "Authentication failed" not in log, app.log_tail(20)


@pytest.mark.parametrize(
    "args",
    [("topics", "list"), ("run", "router"), ("produce", "--count", "5", "--no-opening")],
    ids=["admin", "quix-app", "producer"],
)
def test_a_wrong_password_is_one_line_and_exit_code_2(
    sasl_broker: KafkaReferenceBroker, tmp_path: Path, args: tuple[str, ...]
) -> None:
    settings = login(sasl_broker, tmp_path / "data", sasl_password="not-the-password")
    result = shopstream(settings, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refused the credentials of user 'shop'" in lines[0], lines[0]
    assert "SHOPSTREAM_SASL_PASSWORD" in lines[0]
    assert "not-the-password" not in result.stderr + result.stdout


def test_no_credentials_for_a_sasl_listener_is_one_line_and_exit_code_2(
    sasl_broker: KafkaReferenceBroker, tmp_path: Path
) -> None:
    settings = login(
        sasl_broker, tmp_path / "data", sasl_mechanism=None, sasl_username=None,
        sasl_password=None,
    )  # fmt: skip
    result = shopstream(settings, "topics", "list")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "SHOPSTREAM_SASL_" in lines[0], result.stderr
