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
=================  ================================================================

Quix Streams has no dead-letter queue: the apps produce dead letters through the same
transactional producer as their regular output (see :mod:`pipelines.router`), so under
exactly-once a dead letter is committed together with the input offset, never lost and
never doubled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from shopstream.events import ErrorKind

DeadLetterKind = ErrorKind | Literal["unroutable", "processing_error"]

HEADER_PREFIX = "error."
KIND = "error.kind"
MESSAGE = "error.message"
FIELD = "error.field"
TOPIC = "error.topic"
PARTITION = "error.partition"
OFFSET = "error.offset"
APP = "error.app"
MAX_MESSAGE_CHARS = 1000

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

    @classmethod
    def from_message(cls, msg: _KafkaMessage) -> DeadLetter:
        """Parse a consumed dead-letter record; ``ValueError`` if it lacks error headers."""
        headers = list(msg.headers() or [])
        errors = {name: value.decode() for name, value in headers if name.startswith(HEADER_PREFIX)}
        try:
            failure = Failure(errors[KIND], errors[MESSAGE], errors.get(FIELD))  # type: ignore[arg-type]
            source = Source(errors[TOPIC], int(errors[PARTITION]), int(errors[OFFSET]))
            app = errors[APP]
        except KeyError as exc:
            raise ValueError(f"not a dead letter: header {exc.args[0]} missing") from None
        return cls(
            key=msg.key(),
            value=msg.value(),
            headers=[(n, v) for n, v in headers if not n.startswith(HEADER_PREFIX)],
            timestamp=msg.timestamp()[1],
            failure=failure,
            source=source,
            app=app,
        )
