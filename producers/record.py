"""What the simulators hand to the sender: ready-to-produce Kafka records.

Records are built as plain dicts and serialised with orjson, never through the
pydantic models: at 50,000 events/s the budget is 20 us per event for
everything, and constructing a model costs more than that. The contract tests
(``tests/unit/test_producers_contracts.py``) prove that what is built here
validates against :mod:`shopstream.events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

IngressChannel = Literal["mobile", "pos", "web", "warehouse"]
INGRESS_CHANNELS: tuple[IngressChannel, ...] = ("mobile", "pos", "web", "warehouse")

Header = tuple[str, bytes]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


@dataclass(slots=True)
class Record:
    """One Kafka record for a channel's ingress topic.

    ``key`` is the ``store_id`` (the catalog's key for every ingress topic),
    ``timestamp_ms`` the event time (Kafka ``CreateTime``), ``headers`` those of
    :func:`shopstream.events.headers_for`. ``fault`` is ``None`` for a valid,
    first-time event; otherwise ``"duplicate"``, ``"late"`` or a malformed kind
    from :data:`producers.faults.MALFORMED_KINDS`.
    """

    channel: IngressChannel
    key: bytes
    value: bytes
    headers: list[Header]
    timestamp_ms: int
    event_type: str
    fault: str | None = None


def to_ms(value: datetime) -> int:
    """Epoch milliseconds of an aware datetime (naive means UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_MS  # exact integer arithmetic, truncates to the ms


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _ONE_MS


class TimestampFormatter:
    """``occurred_at`` strings (``2025-03-03T10:00:00.123Z``) from epoch ms, fast.

    Same output as :func:`shopstream.events.format_timestamp`; the per-second
    prefix is cached because consecutive events mostly share their second.
    """

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, ms: int) -> str:
        second, millis = divmod(ms, 1000)
        if second != self._second:
            self._second = second
            self._prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{self._prefix}{millis:03d}Z"


def uuid4_from_bits(bits: int) -> str:
    """A version-4 UUID string from 128 random bits (seeded, unlike ``uuid.uuid4``).

    The version nibble becomes 4 and the variant bits 10 (RFC 4122); the other 122
    bits are the input's. String slicing is faster than ``uuid.UUID`` here.
    """
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
