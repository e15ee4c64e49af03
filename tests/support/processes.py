"""Run the apps as real processes and read what they wrote.

* :class:`AppProcess` - ``python -m shopstream run NAME --namespace S`` as a child
  process with the given settings in its environment: start, SIGTERM, SIGKILL.
* :class:`TopicReader` - reads topics from offset zero by assignment (no group join,
  so no rebalance wait), ``read_committed`` by default, decoding events as they come.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from shopstream.events import DecodeError, Envelope, decode
from shopstream.kafka import make_consumer
from shopstream.settings import Settings, settings_env
from shopstream.topics import Namespace


class AppProcess:
    """One app of the topology in a child process; output goes to ``log_dir/NAME.log``."""

    def __init__(self, name: str, namespace: Namespace, settings: Settings, log_dir: Path) -> None:
        self.name = name
        self.namespace = namespace
        self.settings = settings
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AppProcess:
        args = [sys.executable, "-m", "shopstream", "run", self.name]
        if self.namespace.suffix:
            args += ["--namespace", self.namespace.suffix]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                args, env=settings_env(self.settings), stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye - a crash."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the app commits its checkpoint and exits; returns the exit code."""
        assert self._proc is not None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_path, lines)


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of the log at ``path`` ("" if there is none yet)."""
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One consumed record; ``event`` is ``None`` when the value does not decode."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int
    event: Envelope | None


class TopicReader:
    """Everything on some topics from offset zero, accumulated per topic as it arrives.

    ``decode=False`` leaves ``event`` ``None``: a ground truth is computed from the bytes
    as they are, not with the project's parsers (and 40,000 records read faster).
    """

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        isolation: str = "read_committed",
        decode: bool = True,
    ) -> None:
        self.records: dict[str, list[ReadRecord]] = defaultdict(list)
        self._decode = decode
        self._consumer = make_consumer(
            settings, "shopstream-topic-reader",
            **{"isolation.level": isolation, "enable.partition.eof": True},
        )  # fmt: skip
        names = list(topics)
        metadata = self._consumer.list_topics(timeout=10)
        self._partitions = [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in names
            for p in metadata.topics[t].partitions
        ]
        self._consumer.assign(self._partitions)
        self._at_end: set[tuple[str, int]] = set()
        self._next: dict[tuple[str, int], int] = {}

    def poll(self, timeout: float = 0.2) -> int:
        """Read what is there now; return how many records arrived."""
        got = 0
        for msg in self._consumer.consume(num_messages=5000, timeout=timeout):
            key = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(key)
                continue
            self._at_end.discard(key)
            self._next[key] = msg.offset() + 1
            decoded = decode(msg.value()) if self._decode else None
            self.records[msg.topic()].append(
                ReadRecord(
                    topic=msg.topic(),
                    partition=msg.partition(),
                    offset=msg.offset(),
                    key=msg.key(),
                    value=msg.value(),
                    headers=list(msg.headers() or []),
                    timestamp=msg.timestamp()[1],
                    event=None if decoded is None or isinstance(decoded, DecodeError) else decoded,
                )
            )
            got += 1
        return got

    def wait_for(
        self, done: Callable[[TopicReader], bool], timeout: float, settle: float = 0.0
    ) -> bool:
        """Poll until ``done(self)``, then keep reading for ``settle`` seconds more.

        Why settle: a test that counts must also see records that would arrive *after*
        the expected ones (a duplicate), before it concludes there are none.
        """
        deadline = time.monotonic() + timeout
        while not done(self):
            if time.monotonic() > deadline:
                return False
            self.poll()
        end = time.monotonic() + settle
        while time.monotonic() < end:
            self.poll()
        return True

    def read_for(self, seconds: float) -> None:
        """Keep reading for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.poll()

    def drain(self, quiet: float = 2.0, timeout: float = 60.0) -> None:
        """Read until every partition reached the end it had when the drain began and then
        nothing new arrived for ``quiet`` seconds (or ``timeout`` passed).

        A partition's end is its high watermark, or the end-of-partition event (which
        counts the transaction markers no consumer sees). Quiet alone is no end: on a
        loaded machine a fetch can stall for seconds with records still to come (a CI run
        missed the last records of two ingress topics after a 3 s stall).
        """
        deadline = time.monotonic() + timeout
        ends = self._ends()
        last = time.monotonic()
        while time.monotonic() < deadline:
            if self.poll():
                last = time.monotonic()
            at_ends = all(
                self._next.get(k, 0) >= end or k in self._at_end for k, end in ends.items()
            )
            if at_ends and time.monotonic() - last >= quiet:
                return

    def _ends(self) -> dict[tuple[str, int], int]:
        """Each partition's high watermark now."""
        ends = {}
        for tp in self._partitions:
            _, high = self._consumer.get_watermark_offsets(tp, timeout=10)
            ends[(tp.topic, tp.partition)] = high
        return ends

    def all_records(self) -> list[ReadRecord]:
        """Every record read so far, topic by topic (each partition's in offset order)."""
        return [r for records in self.records.values() for r in records]

    def events(self, topic: str, event_type: str | None = None) -> list[Any]:
        """Decoded events read from ``topic`` (optionally of one type), in arrival order."""
        return [
            r.event
            for r in self.records.get(topic, [])
            if r.event is not None and (event_type is None or r.event.event_type == event_type)
        ]

    def close(self) -> None:
        self._consumer.close()
