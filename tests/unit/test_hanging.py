"""A hanging offset commit ended by a transaction of the app's own (``shopstream.hanging``),
against a broker stand-in: what Apache Kafka 4.4 did after a restart in
tests/integration/test_outage.py (the real broker paths: test_hanging_offsets.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import shopstream.hanging as hanging
from shopstream.settings import load_settings


class Broker:
    """Holds back ``held`` until a transaction of the app adds them and is aborted."""

    def __init__(
        self,
        held: dict[tuple[str, int], int],
        stuck: set[tuple[str, int]] | None = None,
        open_until_fenced: set[tuple[str, int]] | None = None,
    ) -> None:
        self.held = dict(held)
        self.stuck = set(stuck or ())
        """Partitions whose last stable offset the hanging transaction holds back."""
        self.open_until_fenced = set(open_until_fenced or ())
        """Held back by a crashed predecessor's open transaction: fencing ends it."""
        self.calls: list[str] = []
        self.sent: list[TopicPartition] = []
        self.written: list[tuple[str, int, bytes]] = []

    def unstable(self, _admin: Any, _group: str, _topics: Any) -> dict[tuple[str, int], int]:
        return dict(self.held)

    def stuck_on(self, _admin: Any, topics: Any) -> set[tuple[str, int]]:
        return {tp for tp in self.stuck | self.open_until_fenced if tp[0] in set(topics)}


def stand_ins(broker: Broker) -> dict[str, Any]:
    class Producer:
        def __init__(self, config: dict[str, Any]) -> None:
            broker.calls.append(f"producer {config['transactional.id']}")

        def init_transactions(self, _timeout: float) -> None:
            broker.calls.append("init")  # fences: a hanging commit stays held back
            broker.open_until_fenced.clear()

        def begin_transaction(self) -> None:
            broker.calls.append("begin")

        def send_offsets_to_transaction(self, offsets: list[TopicPartition], *_: Any) -> None:
            broker.calls.append("send_offsets")
            broker.sent = offsets

        def produce(self, topic: str, key: bytes, value: None, partition: int) -> None:
            broker.written.append((topic, partition, key))

        def flush(self, _timeout: float) -> int:
            broker.calls.append("flush")
            return 0

        def abort_transaction(self, _timeout: float) -> None:
            broker.calls.append("abort")  # the marker ends every pending commit of the id
            broker.held.clear()  # ... and the transaction on each partition written to
            broker.stuck -= {(t, p) for t, p, _ in broker.written}

        def purge(self) -> None:
            broker.calls.append("purge")

    class Consumer:
        def __init__(self, config: dict[str, Any]) -> None:
            pass

        def consumer_group_metadata(self) -> object:
            return object()

        def close(self) -> None:
            broker.calls.append("consumer closed")

    return {
        "Producer": Producer,
        "Consumer": Consumer,
        "AdminClient": lambda _c: object(),
        "unstable_partitions": broker.unstable,
        "stuck_partitions": broker.stuck_on,
    }


def test_a_commit_held_back_after_the_fencing_is_ended_by_an_aborted_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As found on the log directory of a run that hung: the transaction also held back
    # the last stable offset of the router's changelogs and outputs.
    changelog = "changelog__shopstream-router--ingress.web--default"
    broker = Broker(
        {("ingress.web", 0): 15, ("ingress.mobile", 1): -1},
        stuck={(changelog, 0), ("restocks", 0), ("orders", 2)},
    )
    for name, stand_in in stand_ins(broker).items():
        monkeypatch.setattr(hanging, name, stand_in)
    monkeypatch.setattr(hanging, "SETTLE_S", 0.3)

    ended = hanging.end_hanging_offset_commits(
        load_settings(), "shopstream-router-0", "shopstream-router", ["ingress.web"],
        own_topics=[changelog, "restocks"],
    )  # fmt: skip

    assert broker.calls == [
        "producer shopstream-router-0", "init", "begin", "flush", "send_offsets", "abort",
        "consumer closed", "purge",
    ]  # fmt: skip
    # One record to each of its own partitions held back, with a key (changelogs are
    # compacted); orders[2] is not the app's own: left alone.
    assert sorted(broker.written) == [
        (changelog, 0, hanging.ABORT_KEY), ("restocks", 0, hanging.ABORT_KEY),
    ]  # fmt: skip
    assert ended.unstuck == [f"{changelog}[0]", "restocks[0]"]
    # Offsets as committed (0 where none is): aborted, they are never seen anyway.
    assert {(tp.topic, tp.partition, tp.offset) for tp in broker.sent} == {
        ("ingress.web", 0, 15), ("ingress.mobile", 1, 0),
    }  # fmt: skip
    assert ended.held == ended.freed == ["ingress.mobile[1]", "ingress.web[0]"]
    assert not ended.fenced and not ended.still_held


def test_nothing_held_back_makes_no_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    broker = Broker({})
    for name, stand_in in stand_ins(broker).items():
        monkeypatch.setattr(hanging, name, stand_in)

    ended = hanging.end_hanging_offset_commits(load_settings(), "t", "g", ["in"])

    assert ended == hanging.Ended() and broker.calls == []


def test_a_run_asks_again_while_the_coordinator_loads_and_says_what_it_ended(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pipelines.runtime.quix as quix

    answers: list[Any] = [
        KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
        KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
        hanging.Ended(held=["orders[0]"], freed=["orders[0]"]),
    ]
    asked: list[tuple[str, str, list[str], list[str]]] = []

    def lookup(
        _settings: Any, tid: str, group: str, topics: list[str], own: list[str], _state: Any
    ) -> hanging.Ended:
        asked.append((tid, group, topics, own))
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]

    monkeypatch.setattr(quix, "end_hanging_offset_commits", lookup)
    monkeypatch.setattr(quix.time, "sleep", lambda _s: None)
    app = SimpleNamespace(
        config=SimpleNamespace(
            processing_guarantee="exactly-once", consumer_group="shopstream-stock",
            producer_extra_config={"transactional.id": "shopstream-stock-0"},
        ),
        _dataframe_registry=SimpleNamespace(consumer_topics=[SimpleNamespace(name="orders")]),
        _topic_manager=SimpleNamespace(
            all_topics={"orders": None, "changelog__stock": None},
            changelog_topics={"orders": {"default": SimpleNamespace(name="changelog__stock")}},
        ),
    )  # fmt: skip

    with caplog.at_level(logging.INFO, logger="pipelines.run"):
        quix.end_hanging_offset_commits_of(app, load_settings(), "stock")  # type: ignore[arg-type]

    own = ["changelog__stock"]  # its input, orders, is not its own
    assert asked == [("shopstream-stock-0", "shopstream-stock", ["orders"], own)] * 3
    assert "orders[0]" in caplog.text and "hanging transaction" in caplog.text


def test_a_state_changelog_held_back_with_no_offsets_held_is_ended_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seen in CI: finance's changelog stayed behind after a restart, its offsets answered."""
    changelog = "changelog__shopstream-finance--orders--returns--stock.events--default"
    broker = Broker({}, stuck={(changelog, 1), ("finance.events", 0)})
    for name, stand_in in stand_ins(broker).items():
        monkeypatch.setattr(hanging, name, stand_in)
    monkeypatch.setattr(hanging, "SETTLE_S", 0.3)

    ended = hanging.end_hanging_offset_commits(
        load_settings(), "shopstream-finance-0", "shopstream-finance", ["orders"],
        own_topics=[changelog, "finance.events"], state_topics=[changelog],
    )  # fmt: skip

    assert broker.calls == [
        "producer shopstream-finance-0", "init", "begin", "flush", "abort",
        "consumer closed", "purge",
    ]  # fmt: skip
    assert ended.unstuck == [f"{changelog}[1]", "finance.events[0]"] and not ended.held


def test_a_predecessors_open_transaction_on_the_state_is_ended_by_the_fencing_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a SIGKILL (on Tansu too): the next run's fencing aborts it; nothing is written."""
    broker = Broker({}, open_until_fenced={("changelog__x", 0)})
    for name, stand_in in stand_ins(broker).items():
        monkeypatch.setattr(hanging, name, stand_in)
    monkeypatch.setattr(hanging, "SETTLE_S", 0.3)

    ended = hanging.end_hanging_offset_commits(
        load_settings(), "t", "g", ["in"], own_topics=["changelog__x"],
        state_topics=["changelog__x"],
    )  # fmt: skip

    assert "begin" not in broker.calls and broker.written == []
    assert ended == hanging.Ended()
