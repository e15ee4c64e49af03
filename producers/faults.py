"""Fault injection: malformed events, duplicates and late events, on demand.

Two layers, both deterministic for a given seed:

* :func:`malform` turns one valid event (a dict as on the wire, or a pydantic
  event) into the bytes of a malformed one of a named kind. Each kind decodes
  with :func:`shopstream.events.decode` to exactly :data:`EXPECTED_ERROR` of
  that kind - the router's dead-letter tests rely on this, and
  ``tests/unit/test_producers_faults.py`` proves it for every kind and event type.
* :func:`inject_faults` wraps a stream of valid records and adds faults at the
  given ratios. Faults are *added*, never substituted: the valid events of a run
  are the same with or without faults (late events differ only in their event
  time), so ``routed + dead-lettered + duplicates`` always adds up to what was
  sent. Ratios are per valid event: ``invalid_ratio=0.1`` means about one
  malformed record per ten valid ones.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Iterator, Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from producers.record import Record, TimestampFormatter, uuid4_from_bits
from shopstream.events import MAX_EVENT_BYTES, Envelope, ErrorKind, to_json_dict

MalformedKind = Literal[
    "truncated_json",
    "wrong_type",
    "missing_field",
    "unknown_type",
    "negative_quantity",
    "oversized",
    "non_utf8",
]
MALFORMED_KINDS: tuple[MalformedKind, ...] = MalformedKind.__args__  # type: ignore[attr-defined]

EXPECTED_ERROR: dict[MalformedKind, ErrorKind] = {
    "truncated_json": "bad_json",
    "wrong_type": "wrong_type",
    "missing_field": "missing_field",
    "unknown_type": "unknown_type",
    "negative_quantity": "invalid_value",
    "oversized": "oversized",
    "non_utf8": "bad_encoding",
}
"""The :class:`shopstream.events.DecodeError` kind each malformed kind decodes to."""

UNKNOWN_EVENT_TYPES = ("OrderCancelled", "PriceChanged", "CartAbandoned", "orderplaced")

# Required fields a "missing field" fault may delete (fields with defaults would
# not be missed: causation_id, schema_version, currency, reason).
_ENVELOPE_REQUIRED = ("event_id", "event_type", "occurred_at", "channel", "store_id",
                      "correlation_id", "payload")  # fmt: skip
_PAYLOAD_REQUIRED: dict[str, tuple[str, ...]] = {
    "OrderPlaced": ("order_id", "customer_id", "lines", "payment_method"),
    "ItemReturned": ("return_id", "order_id", "customer_id", "sku", "qty", "reason", "amount"),
    "StockQuestionAsked": ("question_id", "customer_id", "sku", "store_id", "text"),
    "Restocked": ("restock_id", "sku", "qty"),
}

# Wrong-type variants: (path, value). Each value is one JSON type that pydantic
# does not coerce to the field's type even in lax mode (a numeric string would
# pass as an int, an int would pass as a datetime).
_Path = tuple[str | int, ...]
_ENVELOPE_WRONG: tuple[tuple[_Path, Any], ...] = (
    (("event_id",), 12345),
    (("store_id",), 42),
    (("occurred_at",), "yesterday"),
    (("correlation_id",), ["not", "a", "string"]),
    (("payload",), "not an object"),
)
_PAYLOAD_WRONG: dict[str, tuple[tuple[_Path, Any], ...]] = {
    "OrderPlaced": (
        (("payload", "customer_id"), 1001),
        (("payload", "lines"), {"sku": "SKU-10001", "qty": 1}),
        (("payload", "lines", 0, "qty"), "two"),
        (("payload", "lines", 0, "unit_price"), "cheap"),
    ),
    "ItemReturned": (
        (("payload", "qty"), "one"),
        (("payload", "amount"), [9.99]),
        (("payload", "order_id"), 77),
    ),
    "StockQuestionAsked": (
        (("payload", "text"), 404),
        (("payload", "customer_id"), 1001),
    ),
    "Restocked": (
        (("payload", "qty"), "lots"),
        (("payload", "sku"), 10001),
    ),
}


class NotApplicable(ValueError):
    """The event has nothing this kind could break (a question has no quantity)."""


def applicable_kinds(event_type: str) -> tuple[MalformedKind, ...]:
    """The malformed kinds :func:`malform` can make from an event of ``event_type``."""
    if event_type == "StockQuestionAsked":
        return tuple(k for k in MALFORMED_KINDS if k != "negative_quantity")
    return MALFORMED_KINDS


def malform(
    event: Mapping[str, Any] | Envelope,
    kind: MalformedKind,
    rng: random.Random | None = None,
) -> bytes:
    """The bytes of a malformed version of ``event``, of the given ``kind``.

    ``event`` is a valid channel event, as a wire dict or a pydantic event; it is
    not modified. ``rng`` picks among a kind's variants (which field to break,
    where to cut); the result always decodes to ``EXPECTED_ERROR[kind]``.
    Raises :class:`NotApplicable` for ``negative_quantity`` on a question.
    """
    rng = rng or random.Random(0)
    ev: dict[str, Any] = (
        to_json_dict(event) if isinstance(event, Envelope) else deepcopy(dict(event))
    )
    event_type = str(ev.get("event_type"))
    if kind == "truncated_json":
        raw = orjson.dumps(ev)
        cut = rng.randrange(1, len(raw))  # any strict prefix of an object is invalid JSON
        while cut > 1 and raw[cut] & 0xC0 == 0x80:
            cut -= 1  # never split a UTF-8 sequence: that would be bad_encoding
        return raw[:cut]
    if kind == "wrong_type":
        path, value = rng.choice(_ENVELOPE_WRONG + _PAYLOAD_WRONG.get(event_type, ()))
        _set(ev, path, value)
        return orjson.dumps(ev)
    if kind == "missing_field":
        options = [(f,) for f in _ENVELOPE_REQUIRED] + [
            ("payload", f) for f in _PAYLOAD_REQUIRED.get(event_type, ())
        ]
        path = rng.choice(options)
        _delete(ev, path)
        return orjson.dumps(ev)
    if kind == "unknown_type":
        ev["event_type"] = rng.choice(UNKNOWN_EVENT_TYPES)
        return orjson.dumps(ev)
    if kind == "negative_quantity":
        qty = -rng.randint(1, 5)
        if event_type == "OrderPlaced":
            lines = ev["payload"]["lines"]
            lines[rng.randrange(len(lines))]["qty"] = qty
        elif event_type in ("ItemReturned", "Restocked"):
            ev["payload"]["qty"] = qty
        else:
            raise NotApplicable(f"{event_type} has no quantity to make negative")
        return orjson.dumps(ev)
    if kind == "oversized":
        # A runaway client attaching a blob: valid JSON, just far too big.
        ev["payload"]["attachment"] = "A" * (MAX_EVENT_BYTES + rng.randint(1, 4096))
        return orjson.dumps(ev)
    if kind == "non_utf8":
        # A Latin-1 terminal: "é" as the single byte 0xE9 inside a string value.
        field = rng.choice(("store_id", "correlation_id"))
        ev[field] = f"{ev[field]}\u00e9"
        return orjson.dumps(ev).replace("\u00e9".encode(), b"\xe9")
    raise ValueError(f"unknown malformed kind {kind!r}; choose from {MALFORMED_KINDS}")


def _set(ev: dict[str, Any], path: _Path, value: Any) -> None:
    target: Any = ev
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _delete(ev: dict[str, Any], path: _Path) -> None:
    target: Any = ev
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Fault ratios (per valid event, each in [0, 1]) and their shape."""

    invalid_ratio: float = 0.0
    duplicate_ratio: float = 0.0
    late_ratio: float = 0.0
    kinds: tuple[MalformedKind, ...] = MALFORMED_KINDS
    """Malformed kinds to draw from (uniformly, among those applicable to the event)."""
    late_min_ms: int = 60_000
    late_max_ms: int = 600_000
    """A late event's time moves 1-10 minutes into the past: less than the shortest
    return delay, so a return never becomes older than its order."""
    duplicate_max_gap: int = 20
    """A duplicate follows its original after 0..this many further valid events."""

    def __post_init__(self) -> None:
        for name in ("invalid_ratio", "duplicate_ratio", "late_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        unknown = set(self.kinds) - set(MALFORMED_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"kinds must be a non-empty subset of {MALFORMED_KINDS}")

    @property
    def any(self) -> bool:
        return bool(self.invalid_ratio or self.duplicate_ratio or self.late_ratio)


def inject_faults(records: Iterable[Record], config: FaultConfig, seed: int) -> Iterator[Record]:
    """``records`` with faults added as configured; a pass-through when all ratios are 0.

    * late: the record's event time (value, and Kafka timestamp) moves
      ``late_min_ms..late_max_ms`` into the past; tagged ``"late"``.
    * duplicate: the identical record (same bytes, same ``event_id``) is sent
      again a few records later; the copy is tagged ``"duplicate"``.
    * malformed: a corrupted copy of the record, under a fresh ``event_id``
      (so it never collides with the valid one), right after it; tagged with
      its :data:`MalformedKind`.

    Duplicates still pending when the consumer stops iterating are never sent,
    so count faults from the tags of what was actually sent.
    """
    if not config.any:
        yield from records
        return
    rng = random.Random(f"faults/{seed}")
    rnd = rng.random
    ts = TimestampFormatter()
    pending: list[tuple[int, int, Record]] = []
    for n, original in enumerate(records, start=1):
        rec = original
        if config.late_ratio and rnd() < config.late_ratio:
            rec = _make_late(rec, rng, config, ts)
        yield rec
        if config.duplicate_ratio and rnd() < config.duplicate_ratio:
            gap = rng.randint(0, config.duplicate_max_gap)
            copy = Record(
                rec.channel, rec.key, rec.value, rec.headers, rec.timestamp_ms,
                rec.event_type, "duplicate",
            )  # fmt: skip
            heapq.heappush(pending, (n + gap, n, copy))
        if config.invalid_ratio and rnd() < config.invalid_ratio:
            bad = _make_malformed(rec, rng, config)
            if bad is not None:
                yield bad
        while pending and pending[0][0] <= n:
            yield heapq.heappop(pending)[2]


def _make_late(
    rec: Record, rng: random.Random, config: FaultConfig, ts: TimestampFormatter
) -> Record:
    shift = rng.randint(config.late_min_ms, config.late_max_ms)
    ev = orjson.loads(rec.value)
    when = rec.timestamp_ms - shift
    ev["occurred_at"] = ts(when)
    return Record(rec.channel, rec.key, orjson.dumps(ev), rec.headers, when, rec.event_type, "late")


def _make_malformed(rec: Record, rng: random.Random, config: FaultConfig) -> Record | None:
    applicable = [k for k in config.kinds if k in applicable_kinds(rec.event_type)]
    if not applicable:
        return None  # e.g. only negative_quantity asked for, and this is a question
    ev = orjson.loads(rec.value)
    ev["event_id"] = uuid4_from_bits(rng.getrandbits(128))
    kind = rng.choice(applicable)
    value = malform(ev, kind, rng)
    headers = rec.headers
    if kind == "unknown_type":
        headers = [("event_type", orjson.loads(value)["event_type"].encode()), *headers[1:]]
    return Record(rec.channel, rec.key, value, headers, rec.timestamp_ms, rec.event_type, kind)
