"""Dead letters: records that could not be processed, kept whole, with why and where.

A dead-letter record is the original record - key, value, headers and timestamp exactly
as they were read - plus ``error.*`` headers (the Kafka Connect convention):

=================  ================================================================
``error.kind``     what went wrong: a :data:`shopstream.events.ErrorKind` from
                   validation, ``unroutable`` (a valid event no route accepts) or
                   ``processing_error`` (a service rule raised)
``error.message``  human-readable detail (at most :data:`MAX_MESSAGE_CHARS` chars)
``error.field``    dotted path of the offending field, when there is one
``error.topic``    source topic, ``error.partition`` / ``error.offset`` its coordinates
``error.app``      the app that gave up on it (``router``, ``finance``, ...)
``error.truncated``  ``true`` when the record was too large to keep whole: the value
                   is then a prefix, ``error.original_size`` its full size in bytes
                   and ``error.original_sha256`` its digest (find the original by
                   its coordinates); original headers that did not fit are dropped
                   and counted in ``error.headers_dropped``
=================  ================================================================

Quix Streams has no dead-letter queue: the apps produce dead letters through the same
transactional producer as their regular output (see :mod:`pipelines.router`), so under
exactly-once a dead letter is committed together with the input offset, never lost and
never doubled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson

from shopstream.events import ErrorKind

DeadLetterKind = ErrorKind | Literal["unroutable", "processing_error", "produce_error"]

HEADER_PREFIX = "error."
KIND = "error.kind"
MESSAGE = "error.message"
FIELD = "error.field"
TOPIC = "error.topic"
PARTITION = "error.partition"
OFFSET = "error.offset"
APP = "error.app"
TRUNCATED = "error.truncated"
ORIGINAL_SIZE = "error.original_size"
ORIGINAL_SHA256 = "error.original_sha256"
HEADERS_DROPPED = "error.headers_dropped"
MAX_MESSAGE_CHARS = 1000
RECORD_OVERHEAD = 512
"""Bytes a record costs beyond its key, value and headers (batch and record framing,
with room to spare): what :func:`fit` leaves free under the size limit."""

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a record is dead-lettered: kind, message, optional field."""

    kind: DeadLetterKind
    message: str
    field: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """Where the record was read: the coordinates every error log and header carries."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


def dead_letter_headers(
    original: Sequence[tuple[str, bytes | None]] | None, failure: Failure, source: Source, app: str
) -> Headers:
    """The original headers (minus any stale ``error.*``) followed by this failure's."""
    kept: Headers = [
        (name, value if value is not None else b"")
        for name, value in (original or ())
        if not name.startswith(HEADER_PREFIX)
    ]
    kept += [
        (KIND, failure.kind.encode()),
        (MESSAGE, failure.message[:MAX_MESSAGE_CHARS].encode("utf-8", "replace")),
        (TOPIC, source.topic.encode()),
        (PARTITION, str(source.partition).encode()),
        (OFFSET, str(source.offset).encode()),
        (APP, app.encode()),
    ]
    if failure.field:
        kept.append((FIELD, failure.field.encode("utf-8", "replace")))
    return kept


class _KafkaMessage(Protocol):
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes]] | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-letter record read back: the original record and what went wrong."""

    key: bytes | None
    value: bytes | None
    headers: Headers
    """The original headers, without the ``error.*`` ones."""
    timestamp: int
    failure: Failure
    source: Source
    app: str

    truncated: bool = False
    """The value is a prefix of the original (see :func:`fit`)."""
    original_size: int | None = None

    @classmethod
    def from_message(cls, msg: _KafkaMessage) -> DeadLetter:
        """Parse a consumed dead-letter record; ``ValueError`` if it lacks error headers."""
        return cls.from_record(msg.key(), msg.value(), msg.headers(), msg.timestamp()[1])

    @classmethod
    def from_record(
        cls,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]] | None,
        timestamp: int,
    ) -> DeadLetter:
        """Parse a dead-letter record's parts; ``ValueError`` if it lacks error headers."""
        headers = list(headers or [])
        errors = {
            name: (raw or b"").decode("utf-8", "replace")
            for name, raw in headers
            if name.startswith(HEADER_PREFIX)
        }
        try:
            failure = Failure(errors[KIND], errors[MESSAGE], errors.get(FIELD))  # type: ignore[arg-type]
            source = Source(errors[TOPIC], int(errors[PARTITION]), int(errors[OFFSET]))
            app = errors[APP]
        except KeyError as exc:
            raise ValueError(f"not a dead letter: header {exc.args[0]} missing") from None
        size = errors.get(ORIGINAL_SIZE)
        return cls(
            key=key,
            value=value,
            headers=[(n, v) for n, v in headers if not n.startswith(HEADER_PREFIX)],
            timestamp=timestamp,
            failure=failure,
            source=source,
            app=app,
            truncated=errors.get(TRUNCATED) == "true",
            original_size=int(size) if size and size.isdigit() else None,
        )


def record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Bytes of a record as the size limit counts them (key, value, header names and values)."""
    size = len(key or b"") + len(value or b"") + RECORD_OVERHEAD
    for name, header in headers:
        size += len(name) + len(header or b"")
    return size


def fit(
    key: bytes | None, value: bytes | None, headers: Headers, limit: int
) -> tuple[bytes | None, Headers]:
    """A dead letter's ``(value, headers)`` cut down to fit in ``limit`` bytes.

    Unchanged when it fits. Otherwise the value becomes its longest prefix that fits,
    with ``error.truncated``, the original size and its SHA-256 added; original headers
    are dropped (largest first) only if the ``error.*`` ones alone leave no room.
    """
    if record_size(key, value, headers) <= limit:
        return value, headers
    original = value or b""
    marks: Headers = [
        (TRUNCATED, b"true"),
        (ORIGINAL_SIZE, str(len(original)).encode()),
        (ORIGINAL_SHA256, hashlib.sha256(original).hexdigest().encode()),
    ]
    kept = list(headers)
    dropped = 0
    while True:
        extra: Headers = [(HEADERS_DROPPED, str(dropped).encode())] if dropped else []
        room = limit - record_size(key, b"", [*kept, *marks, *extra])
        droppable = [i for i, (name, _) in enumerate(kept) if not name.startswith(HEADER_PREFIX)]
        if room >= 0 or not droppable:
            return original[: max(room, 0)], [*kept, *marks, *extra]
        largest = max(droppable, key=lambda i: len(kept[i][0]) + len(kept[i][1] or b""))
        del kept[largest]
        dropped += 1


def header(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str:
    """A header as text, ``-`` when absent."""
    for key, value in headers or ():
        if key == name and value is not None:
            return value.decode("utf-8", "replace")
    return "-"


def ids_for_log(
    value: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None
) -> tuple[str, str]:
    """``(event_id, correlation_id)`` of a record that failed validation, as far as known.

    Best effort for the error log: from the JSON if it parses to an object (a schema
    violation usually still carries its ids), else the ``correlation_id`` header, else ``-``.
    """
    event_id, correlation_id = "-", header(headers, "correlation_id")
    try:
        doc = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        event_id = str(doc.get("event_id") or "-")[:64]
        correlation_id = str(doc.get("correlation_id") or correlation_id)[:64]
    return event_id, correlation_id
