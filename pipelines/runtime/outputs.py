"""Producing an app's records so that no record can stop the app.

Apps return :class:`Emit` records from one processing function;
:func:`apply_and_produce` sends them through the app's own producer (under exactly-once
the transactional producer of the current checkpoint, so outputs, dead letters, state
changelogs and input offsets commit together or not at all) via :class:`Outputs`, which
guarantees:

* **Lineage.** Every record but a dead letter gets two headers: ``app`` (who produced
  it) and ``emitted_at`` (when, wall clock, epoch ms), which the read models' lineage
  turns into the time each hop of a flow took.
* **Size.** A record larger than its topic accepts (:func:`shopstream.kafka.
  record_size_limits`: the client's and the broker's limits) is never sent as is. A
  dead letter is cut to fit (:func:`pipelines.deadletter.fit`: a prefix of the value,
  its full size and SHA-256, ``error.truncated``); any other output becomes a dead
  letter of the input that caused it (``produce_error``).
* **Produce errors.** A record the client refuses at once is handled the same way. A
  record the broker refuses later (unknown topic, authorization, ...) fails the
  checkpoint; :class:`Outputs` remembers it, and when the run loop
  (:mod:`pipelines.runtime.running`) runs the checkpoint again the record is diverted:
  to dead letters with the reason, or, when dead letters are what failed, logged with
  its coordinates and counted as dropped. Either way the app moves on; the same
  record never fails it twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from confluent_kafka import KafkaError, KafkaException

from pipelines.deadletter import Failure, Source, dead_letter_headers, fit, record_size
from pipelines.runtime.quix import current_source
from shopstream.events import APP_HEADER, EMITTED_AT_HEADER
from shopstream.logs import ThrottledLog

if TYPE_CHECKING:
    from quixstreams.dataframe import StreamingDataFrame

log = logging.getLogger("pipelines.outputs")

Headers = list[tuple[str, bytes]]


class Emit(NamedTuple):
    """A record to produce: topic name, key, final value bytes, headers.

    ``timestamp`` ``None`` means the input record's timestamp (a derived event keeps
    its cause's time). A named tuple: apps build one or more per input record.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int | None = None


@dataclass(slots=True)
class AppCounters:
    """What one app process did, across the rebuilds of its Quix app."""

    consumed: int = 0
    produced: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    """Records that could be neither produced nor dead-lettered (logged, counted)."""
    errors: int = 0
    last_error: str | None = None
    note: str | None = None
    """What the app is doing now when it is not just working, e.g. ``paused: disk full``
    (published in its status: the live board and the health page show it)."""

    def error(self, message: str) -> None:
        self.errors += 1
        self.last_error = message[:300]


PERMANENT = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.POLICY_VIOLATION,
    }
)
"""Delivery errors that say "this record will never be accepted". Anything else (a
timeout, a lost connection, an outage) is transient: the run is simply run again."""


class Outputs:
    """Sends an app's emits through its Quix producer (see the module docstring).

    One per app process, kept across rebuilds of the Quix app (it remembers the records
    that failed); :meth:`attach` it to each new app's producer.
    """

    def __init__(
        self,
        app_name: str,
        dead_letters: str,
        limits: Mapping[str, int],
        counters: AppCounters | None = None,
    ) -> None:
        self.app_name = app_name
        self.dead_letters = dead_letters
        self.limits = dict(limits)
        self.counters = counters or AppCounters()
        self._default_limit = min(self.limits.values(), default=1_000_000)
        self._produce: Callable[..., Any] | None = None
        self._failed: dict[tuple[str, bytes | None], str] = {}
        """(topic, value) of records the broker refused -> why; diverted when seen again."""
        self.learned = 0
        """How many refused records were learned since the run loop last looked."""
        self._warn = ThrottledLog(log)
        self._app = (APP_HEADER, app_name.encode())

    def attach(self, sdf: StreamingDataFrame) -> None:
        self._produce = sdf.processing_context.producer.produce

    def limit(self, topic: str) -> int:
        return self.limits.get(topic, self._default_limit)

    def send(
        self,
        emit: Emit,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        timestamp: int,
    ) -> None:
        """Produce ``emit``, caused by the input record ``key``/``value``/``headers``."""
        produce = self._produce
        assert produce is not None, "attach() first"
        topic, out_value = emit.topic, emit.value
        if self._failed and (topic, out_value) in self._failed:
            self._divert(emit, self._failed[(topic, out_value)], key, value, headers, timestamp)
            return
        if topic == self.dead_letters:
            out_headers = emit.headers  # error.app already says who gave up on it
        else:
            out_headers = [*emit.headers, self._app, (EMITTED_AT_HEADER, _now_ms())]
        limit = self.limits.get(topic, self._default_limit)
        # Our own outputs are far below any limit; only look closer at big ones.
        if len(out_value or b"") + len(emit.key or b"") > limit // 2 or topic == self.dead_letters:
            size = record_size(emit.key, out_value, out_headers)
            if size > limit:
                if topic == self.dead_letters:
                    out_value, out_headers = fit(emit.key, out_value, out_headers, limit)
                else:
                    reason = f"{size:,} bytes for {topic}, over its {limit:,}-byte limit"
                    self._divert(emit, reason, key, value, headers, timestamp)
                    return
        try:
            produce(
                topic=topic,
                key=emit.key,
                value=out_value,
                headers=out_headers,
                timestamp=emit.timestamp if emit.timestamp is not None else timestamp,
                on_delivery=self._delivered,
            )
        except KafkaException as exc:  # refused at once by the client
            err = exc.args[0] if exc.args else exc
            text = err.str() if isinstance(err, KafkaError) else str(err)
            self._divert(emit, text, key, value, headers, timestamp)
            return
        self.counters.produced += 1
        if topic == self.dead_letters:
            self.counters.dead_lettered += 1

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        """Delivery report: remember a record the broker refused for good (the checkpoint
        fails; the next run diverts it). Transient errors are not remembered."""
        if err is None or err.code() not in PERMANENT:
            return
        where = f"{msg.topic()}[{msg.partition()}]"
        self._failed[(msg.topic(), msg.value())] = err.str()
        self.learned += 1
        self.counters.error(f"producing to {where} failed: {err.str()}")
        log.error(
            "%s: producing to %s failed (%s); the checkpoint is run again without that record",
            self.app_name, where, err.str(),
        )  # fmt: skip

    def _divert(
        self,
        emit: Emit,
        reason: str,
        key: bytes | None,
        value: bytes | None,
        headers: Any,
        timestamp: int,
    ) -> None:
        """``emit`` cannot be produced: dead-letter its input, or count it as dropped."""
        source = current_source()
        if emit.topic == self.dead_letters:
            self.counters.dropped += 1
            self.counters.error(f"dead letter of {source} dropped: {reason}")
            self._warn.warning(
                "%s: the dead letter of %s cannot be produced either (%s); dropped, counted",
                self.app_name, source, reason,
            )  # fmt: skip
            return
        self._warn.warning(
            "%s: output of %s to %s cannot be produced (%s); dead-lettered",
            self.app_name, source, emit.topic, reason,
        )  # fmt: skip
        failure = Failure("produce_error", f"producing to {emit.topic} failed: {reason}")
        letter = dead_letter(self.dead_letters, key, value, headers, failure, source, self.app_name)
        self.send(letter, key, value, headers, timestamp)


def _now_ms() -> bytes:
    return str(time.time_ns() // 1_000_000).encode()


def dead_letter(
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Any,
    failure: Failure,
    source: Source,
    app: str,
) -> Emit:
    """The dead letter of an input record: the record whole plus ``error.*`` headers."""
    return Emit(topic, key, value, dead_letter_headers(headers, failure, source, app))


def apply_and_produce(
    sdf: StreamingDataFrame,
    processor: Callable[..., Iterable[Emit]],
    outputs: Outputs,
    *,
    stateful: bool,
    count_input: bool = True,
) -> StreamingDataFrame:
    """Run ``processor`` on every record of ``sdf`` and produce what it returns.

    ``processor(value, key, timestamp, headers[, state])`` - ``state`` when ``stateful``.
    Each record counts as consumed unless ``count_input`` is false (a stage after a
    repartition, whose records the app already counted on the way in).

    Why not ``apply(expand=True)`` then ``set_headers`` and ``to_topic``: those are three
    more Quix steps per record, each a Python call chain, for what one ``produce`` does;
    measured on the router, one step is 1.22x faster (benchmarks/router_throughput.py).
    """
    outputs.attach(sdf)
    send = outputs.send
    counters = outputs.counters

    def step(value: Any, key: Any, timestamp: int, headers: Any, *state: Any) -> None:
        counters.consumed += 1
        for emit in processor(value, key, timestamp, headers, *state):
            send(emit, key, value, headers, timestamp)

    def step_uncounted(value: Any, key: Any, timestamp: int, headers: Any, *state: Any) -> None:
        for emit in processor(value, key, timestamp, headers, *state):
            send(emit, key, value, headers, timestamp)

    return sdf.update(step if count_input else step_uncounted, metadata=True, stateful=stateful)
