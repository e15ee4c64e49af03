"""Outputs, broker-free: no record an app emits can stop it (fake producer, real logic)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from quixstreams.context import set_message_context
from quixstreams.models import MessageContext

from pipelines import deadletter
from pipelines.runtime.outputs import Emit, Outputs

LIMIT = 10_000
DLQ = "deadletters"


class FakeProducer:
    """Records what was produced; refuses what ``refuse`` says at once (like librdkafka)."""

    def __init__(self, refuse: dict[str, KafkaError] | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.refuse = refuse or {}

    def produce(self, **record: Any) -> None:
        if record["topic"] in self.refuse:
            raise KafkaException(self.refuse[record["topic"]])
        self.sent.append(record)


class FakeSdf:
    def __init__(self, producer: FakeProducer) -> None:
        self.processing_context = type("Ctx", (), {"producer": producer})()


@pytest.fixture(autouse=True)
def in_message() -> Iterator[None]:
    set_message_context(MessageContext("ingress.web", 2, 41, 100))
    yield
    set_message_context(None)


def outputs(producer: FakeProducer) -> Outputs:
    out = Outputs("router", DLQ, {"orders": LIMIT, DLQ: LIMIT})
    out.attach(FakeSdf(producer))  # type: ignore[arg-type]
    return out


INPUT = (b"store-01", b'{"event_type":"OrderPlaced"}', [("channel", b"web")], 1234)


def test_outputs_are_produced_with_the_input_timestamp_unless_they_carry_one() -> None:
    producer = FakeProducer()
    out = outputs(producer)
    out.send(Emit("orders", b"k", b"v", []), *INPUT)
    out.send(Emit("orders", b"k", b"v", [], timestamp=99), *INPUT)
    assert [r["timestamp"] for r in producer.sent] == [1234, 99]
    assert out.counters.produced == 2 and out.counters.dead_lettered == 0


def test_a_dead_letter_too_large_is_cut_to_fit_with_its_size_and_digest() -> None:
    producer = FakeProducer()
    out = outputs(producer)
    big = b"x" * (3 * LIMIT)
    headers = deadletter.dead_letter_headers(
        [], deadletter.Failure("oversized", "too big"), deadletter.Source("ingress.web", 2, 41), "r"
    )
    out.send(Emit(DLQ, b"store-01", big, headers), *INPUT)
    [sent] = producer.sent
    assert deadletter.record_size(sent["key"], sent["value"], sent["headers"]) <= LIMIT
    marks = dict(sent["headers"])
    assert marks[deadletter.TRUNCATED] == b"true"
    assert marks[deadletter.ORIGINAL_SIZE] == str(len(big)).encode()
    assert big.startswith(sent["value"]) and len(sent["value"]) > LIMIT // 2
    assert out.counters.dead_lettered == 1


def test_huge_original_headers_are_dropped_before_the_error_headers() -> None:
    producer = FakeProducer()
    out = outputs(producer)
    original = [("junk", b"y" * (2 * LIMIT)), ("channel", b"web")]
    headers = deadletter.dead_letter_headers(
        original, deadletter.Failure("bad_json", "x"), deadletter.Source("t", 0, 1), "r"
    )
    out.send(Emit(DLQ, None, b"{", headers), *INPUT)
    [sent] = producer.sent
    names = dict(sent["headers"])
    assert deadletter.KIND in names and "junk" not in names
    assert names[deadletter.HEADERS_DROPPED] == b"1"


def test_an_output_too_large_becomes_a_dead_letter_of_its_input() -> None:
    producer = FakeProducer()
    out = outputs(producer)
    out.send(Emit("orders", b"k", b"z" * (2 * LIMIT), []), *INPUT)
    [sent] = producer.sent
    headers = dict(sent["headers"])
    assert sent["topic"] == DLQ and sent["value"] == INPUT[1]  # the input, whole
    assert headers[deadletter.KIND] == b"produce_error"
    assert b"orders" in headers[deadletter.MESSAGE]
    assert (headers[deadletter.TOPIC], headers[deadletter.OFFSET]) == (b"ingress.web", b"41")


def test_a_record_the_client_refuses_at_once_is_dead_lettered() -> None:
    refused = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "not allowed")
    producer = FakeProducer(refuse={"orders": refused})
    out = outputs(producer)
    out.send(Emit("orders", b"k", b"v", []), *INPUT)
    [sent] = producer.sent
    assert sent["topic"] == DLQ
    assert b"not allowed" in dict(sent["headers"])[deadletter.MESSAGE]


def test_a_record_the_broker_refused_is_diverted_when_the_checkpoint_runs_again() -> None:
    producer = FakeProducer()
    out = outputs(producer)
    emit = Emit("orders", b"k", b"v", [])
    out.send(emit, *INPUT)
    # The delivery report of that record comes back refused: the run fails and is rebuilt.
    msg = type("Msg", (), {"topic": lambda s: "orders", "partition": lambda s: 0,
                           "value": lambda s: b"v"})()  # fmt: skip
    out._delivered(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "gone"), msg)
    assert out.learned == 1 and out.counters.errors == 1
    producer.sent.clear()
    out.send(emit, *INPUT)  # the same input processed again by the next run
    [sent] = producer.sent
    assert sent["topic"] == DLQ and b"gone" in dict(sent["headers"])[deadletter.MESSAGE]


def test_when_dead_letters_fail_too_the_record_is_counted_as_dropped_not_raised() -> None:
    down = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "no access")
    producer = FakeProducer(refuse={"orders": down, DLQ: down})
    out = outputs(producer)
    out.send(Emit("orders", b"k", b"v", []), *INPUT)
    assert producer.sent == []
    assert out.counters.dropped == 1
    assert "ingress.web[2]@41" in (out.counters.last_error or "")
