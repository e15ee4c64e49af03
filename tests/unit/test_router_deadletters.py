"""Dead-letter records: the original record kept whole, error headers added and read back."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pipelines import deadletter as dl


@dataclass
class FakeMessage:
    _key: bytes | None
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None
    _timestamp: int

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp)


def test_headers_round_trip_through_a_dead_letter_record() -> None:
    original = [("event_type", b"OrderPlaced"), ("error.kind", b"stale")]
    failure = dl.Failure("wrong_type", "Input should be a valid integer", "payload.lines.0.qty")
    source = dl.Source("ingress.pos", 1, 7)
    headers = dl.dead_letter_headers(original, failure, source, "router")
    assert headers[0] == ("event_type", b"OrderPlaced")
    assert sum(1 for name, _ in headers if name == dl.KIND) == 1  # stale one replaced
    msg = FakeMessage(b"store-03", b"{...}", headers, 1_700_000_000_000)
    letter = dl.DeadLetter.from_message(msg)
    assert letter.failure == failure
    assert letter.source == source
    assert str(letter.source) == "ingress.pos[1]@7"
    assert letter.app == "router"
    assert letter.headers == [("event_type", b"OrderPlaced")]
    assert (letter.key, letter.value, letter.timestamp) == (
        b"store-03",
        b"{...}",
        1_700_000_000_000,
    )


def test_long_messages_are_cut_and_null_headers_kept_as_empty() -> None:
    headers = dl.dead_letter_headers(
        [("blank", None)], dl.Failure("bad_json", "x" * 5000), dl.Source("t", 0, 0), "a"
    )
    assert ("blank", b"") in headers
    assert len(dict(headers)[dl.MESSAGE]) == dl.MAX_MESSAGE_CHARS


def test_a_record_without_error_headers_is_not_a_dead_letter() -> None:
    with pytest.raises(ValueError, match="not a dead letter"):
        dl.DeadLetter.from_message(FakeMessage(None, b"x", [], 0))
