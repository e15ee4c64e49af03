"""Which broker is this? shopstream names each broker itself, in the broker.

Local data that only means something against one broker - Quix state stores (they
remember changelog offsets), read models keyed by offsets - must not be reused
against another. The cluster id cannot tell: the embedded broker reports
``tansu_cluster`` on every start, yet forgets every topic when it stops. So the
first process that finds no identity on a broker writes a ``broker-id`` record to
:data:`~shopstream.topics.IDENTITY` (one partition, kept forever); the *first* such
record in the log is the broker's id, so processes racing to write one still agree.

* :func:`broker_identity` reads (or creates) it.
* :class:`LocalState` stamps ``<data_dir>/state`` with the id it belongs to, and tells
  whether it belongs to the broker at hand: ``shopstream up`` moves stale state aside,
  ``shopstream run`` refuses to start on it (one line saying how to fix it).
* :func:`facts` / :func:`record_fact` keep other once-per-broker facts, such as
  "the opening stock was sent".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from shopstream.admin import create_topics
from shopstream.errors import UserError
from shopstream.kafka import make_consumer, make_producer
from shopstream.settings import Settings
from shopstream.topics import IDENTITY

log = logging.getLogger("shopstream.identity")

BROKER_ID = "broker-id"
STAMP_FILE = ".broker"


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    """The broker's shopstream id and when it was named."""

    broker_id: str
    named_at: str

    def __str__(self) -> str:
        return f"{self.broker_id} (named {self.named_at})"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def facts(
    settings: Settings, kind: str | None = None, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Every identity record on the broker (of ``kind``, if given), oldest first."""
    create_topics(settings, [IDENTITY])
    consumer = make_consumer(
        settings, f"shopstream-identity-{uuid.uuid4().hex[:8]}", **{"log_level": 0}
    )
    found: list[dict[str, Any]] = []
    try:
        high = _high_watermark(consumer, settings, timeout)
        if high <= 0:
            return []
        consumer.assign([TopicPartition(IDENTITY.name, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        last = -1
        # Read until past the high watermark and then quiet: the embedded broker's high
        # watermark can point at the last batch's first record (docs/testing.md).
        while time.monotonic() < deadline:
            msg = consumer.poll(0.3)
            if msg is None:
                if last + 1 >= high:
                    break
                continue
            if msg.error():
                continue
            last = msg.offset()
            try:
                doc = json.loads(msg.value() or b"")
            except ValueError:
                continue
            if isinstance(doc, dict) and (kind is None or doc.get("kind") == kind):
                found.append(doc)
    finally:
        consumer.close()
    return found


def _high_watermark(consumer: Any, settings: Settings, timeout: float) -> int:
    """The identity partition's high watermark, waiting out a topic still being created
    (a fresh topic's partition has no leader for a moment)."""
    tp = TopicPartition(IDENTITY.name, 0)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=timeout)[1])
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            retriable = isinstance(err, KafkaError) and (
                err.retriable() or err.code() in _NOT_READY_YET
            )
            if not retriable or time.monotonic() >= deadline:
                raise UserError(
                    f"cannot read {IDENTITY.name} on {settings.broker_address}: {exc}"
                ) from None
            time.sleep(0.2)


_NOT_READY_YET = frozenset({
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    # librdkafka's own answer while its metadata does not list the just-created partition
    # yet (seen on a fresh Apache Kafka: the broker has it, the client's cache not).
    KafkaError._UNKNOWN_PARTITION,
    KafkaError._UNKNOWN_TOPIC,
})


def record_fact(settings: Settings, kind: str, **details: Any) -> None:
    """Append a ``kind`` record (with ``details`` and the time) to the identity log."""
    create_topics(settings, [IDENTITY])
    producer = make_producer(settings, **{"log_level": 0})
    doc = {"kind": kind, "at": _now(), **details}
    producer.produce(IDENTITY.name, json.dumps(doc).encode(), kind.encode(), partition=0)
    if producer.flush(10.0):
        raise UserError(f"could not write to {IDENTITY.name} on {settings.broker_address}")


def broker_identity(settings: Settings) -> BrokerIdentity:
    """The broker's identity, naming the broker first if nobody has yet.

    Guarantees: every process that asks the same broker gets the same answer, even
    when several name it at once (the first ``broker-id`` record in the log wins).
    """
    named = facts(settings, BROKER_ID)
    if not named:
        record_fact(settings, BROKER_ID, broker_id=uuid.uuid4().hex[:12])
        named = facts(settings, BROKER_ID)
        if not named:
            raise UserError(
                f"{IDENTITY.name} on {settings.broker_address} does not keep what is written"
            )
    first = named[0]
    return BrokerIdentity(str(first["broker_id"]), str(first.get("at", "?")))


@dataclass(frozen=True, slots=True)
class LocalState:
    """``<data_dir>/state``: the Quix state stores of every app, and whose they are."""

    root: Path

    @classmethod
    def of(cls, settings: Settings) -> LocalState:
        return cls(Path(settings.data_dir) / "state")

    @property
    def stamp(self) -> Path:
        return self.root / STAMP_FILE

    def owner(self) -> str | None:
        """The broker id the state belongs to; ``None`` when there is no state at all,
        ``"unknown"`` for state without a stamp (written before stamps existed)."""
        if not self.root.exists() or not any(p for p in self.root.iterdir()):
            return None
        try:
            return str(json.loads(self.stamp.read_text())["broker_id"])
        except (OSError, ValueError, KeyError):
            return "unknown"

    def belongs_to(self, identity: BrokerIdentity) -> bool:
        """True if the state is this broker's (or there is none, and it now is)."""
        owner = self.owner()
        if owner is None:
            self.claim(identity)
            return True
        return owner == identity.broker_id

    def claim(self, identity: BrokerIdentity) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        doc = {"broker_id": identity.broker_id, "named_at": identity.named_at, "at": _now()}
        # The apps of one data dir start at once and read the stamp while another writes
        # it: write a whole file beside the state and rename it into place, so that a
        # reader finds no stamp or a complete one, never a half-written one ("unknown").
        part = self.root.parent / f".{STAMP_FILE}.{os.getpid()}.{threading.get_ident()}"
        part.write_text(json.dumps(doc) + "\n")
        os.replace(part, self.stamp)

    def move_aside(self) -> Path:
        """Move the state to ``<data_dir>/previous/<time>/state``; return where it went."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.root.parent / "previous" / stamp / self.root.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.root), str(target))
        return target

    def stale_error(self, identity: BrokerIdentity, address: str) -> UserError:
        return UserError(
            f"the state in {self.root} belongs to broker {self.owner()}, not to the broker "
            f"at {address} ({identity.broker_id}; a new or restarted embedded broker?) - "
            f"move it aside (mv {self.root} {self.root}.old) or start with `shopstream up`, "
            f"which does that itself"
        )
