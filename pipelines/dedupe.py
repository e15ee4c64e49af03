"""Which event ids one partition has already seen: the router's dedupe window.

A :class:`DedupeWindow` answers "first time?" from a Python set, in well under a
microsecond, and is made durable once per checkpoint by
:mod:`pipelines.checkpointed` (it is a chunked engine): the ids are kept in
append-only *segments* of at most ``segment_size`` ids; a checkpoint rewrites only
the segment still filling up and writes new ones, as base64 chunks in the
partition's state store - inside the checkpoint's Kafka transaction.

Why not an id per key in Quix state with its TTL: each id then costs a store read, a
serialized write and a changelog record of its own, about 28 us per event, which was
more than validating and routing it (``benchmarks/router_throughput.py``).

Guarantees:

* An id is remembered at least until the partition's stream time (the highest record
  timestamp seen, i.e. event time) reaches the id's own timestamp plus ``ttl``. A
  segment expires as a whole once its newest id has, and the segment still filling up
  is kept whatever its age, so some ids live longer.
* Memory is bounded by ``max_ids``: beyond it the oldest segments are dropped early
  (a warning says so), so a burst can shorten the window but never exhaust memory.
  Each id costs about 100 bytes of memory. The services behind the router are
  idempotent on their causing event, so a duplicate that outlives the window still
  has no second effect.
* Restored from its chunks, a window answers exactly as before for every id it held.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from pipelines.checkpointed import ChunkChanges

log = logging.getLogger("pipelines.dedupe")

ID_BYTES = 16
"""Ids are UUIDs, kept as their 128-bit integer (``UUID.int``, free to read) and
persisted as 16 big-endian bytes."""
EVICTION_LOG_EVERY_S = 60.0
SEGMENT_SIZE = 4096
"""Ids per segment: about 87 kB of base64 per chunk, far below a Kafka record's limit."""


@dataclass(slots=True)
class _Segment:
    ids: list[int] = field(default_factory=list)
    newest_ms: int = -1


class DedupeWindow:
    """Event ids seen in one partition within ``ttl_ms`` of stream time."""

    def __init__(
        self, ttl_ms: int, max_ids: int, segment_size: int = SEGMENT_SIZE, name: str = ""
    ) -> None:
        if ttl_ms <= 0 or max_ids < segment_size or segment_size <= 0:
            raise ValueError("need ttl_ms > 0 and max_ids >= segment_size > 0")
        self.ttl_ms = ttl_ms
        self.max_ids = max_ids
        self.segment_size = segment_size
        self.name = name
        self.stream_time_ms = -1
        self.evicted_early = 0
        """Ids dropped before their time to keep within ``max_ids``."""
        self._next_eviction_log = 0.0
        self._seen: set[int] = set()
        # Segments by sequence number. Only the oldest is ever dropped, so the
        # sequence numbers in use are always the range [_oldest, _open].
        self._segments: dict[int, _Segment] = {}
        self._oldest = 0
        self._open = 0
        self._changes = ChunkChanges()
        # Lowest segment appended to since the last take_changes (None: none). Only
        # the open segment takes appends, so the unsaved ones are [this, _open].
        self._unsaved_from: int | None = None

    def __len__(self) -> int:
        return len(self._seen)

    def first_seen(self, event_id: int, timestamp_ms: int) -> bool:
        """``True`` and remember ``event_id`` the first time; ``False`` for a duplicate.

        Every call moves the stream time, duplicates included, so ids expire on time
        even when only duplicates arrive.
        """
        if timestamp_ms > self.stream_time_ms:
            self.stream_time_ms = timestamp_ms
            self._expire()
        if event_id in self._seen:
            return False
        self._seen.add(event_id)
        segment = self._segments.get(self._open)
        if segment is None:
            segment = self._segments[self._open] = _Segment()
        segment.ids.append(event_id)
        if timestamp_ms > segment.newest_ms:
            segment.newest_ms = timestamp_ms
        if self._unsaved_from is None:
            self._unsaved_from = self._open
        if len(segment.ids) >= self.segment_size:
            self._open += 1
        if len(self._seen) > self.max_ids:
            self._evict_oldest()
        return True

    def _expire(self) -> None:
        horizon = self.stream_time_ms - self.ttl_ms
        while self._oldest < self._open and self._segments[self._oldest].newest_ms <= horizon:
            self._drop_oldest()

    def _evict_oldest(self) -> None:
        if self._oldest == self._open:
            return  # only the filling segment left: cannot happen while max_ids >= segment_size
        self.evicted_early += len(self._segments[self._oldest].ids)
        self._drop_oldest()
        now = time.monotonic()
        if now >= self._next_eviction_log:  # a burst must not flood the log
            self._next_eviction_log = now + EVICTION_LOG_EVERY_S
            log.warning(
                "%s: dedupe window over %d ids; %d ids forgotten before their TTL so far",
                self.name,
                self.max_ids,
                self.evicted_early,
            )

    def _drop_oldest(self) -> None:
        self._seen.difference_update(self._segments.pop(self._oldest).ids)
        self._changes.remove(_chunk_name(self._oldest))
        self._oldest += 1

    # --- persistence as named chunks (see pipelines.checkpointed) ---------------------

    def take_changes(self) -> tuple[dict[str, Any], set[str]]:
        if self._unsaved_from is not None:
            for seq in range(max(self._unsaved_from, self._oldest), self._open + 1):
                if seq in self._segments:
                    self._changes.touch(_chunk_name(seq))
            self._unsaved_from = None
        return self._changes.take(self._render)

    def chunk_names(self) -> list[str]:
        return [_chunk_name(seq) for seq in self._segments]

    def _render(self, name: str) -> dict[str, Any]:
        segment = self._segments[_chunk_seq(name)]
        return {
            "newest_ms": segment.newest_ms,
            "ids": base64.b64encode(
                b"".join(event_id.to_bytes(ID_BYTES) for event_id in segment.ids)
            ).decode("ascii"),
        }

    @classmethod
    def restore(
        cls,
        chunks: Mapping[str, Any],
        ttl_ms: int,
        max_ids: int,
        segment_size: int = SEGMENT_SIZE,
        name: str = "",
    ) -> Self:
        """A window holding exactly the ids of ``chunks`` (empty chunks: a new window).

        New ids go to a fresh segment, so restored segments are never rewritten.
        """
        window = cls(ttl_ms, max_ids, segment_size, name)
        seqs = sorted(_chunk_seq(chunk_name) for chunk_name in chunks)
        if seqs != list(range(seqs[0], seqs[-1] + 1) if seqs else []):
            raise ValueError(f"{name}: dedupe segments not contiguous: {seqs[:5]}...")
        for seq in seqs:
            chunk = chunks[_chunk_name(seq)]
            raw = base64.b64decode(chunk["ids"])
            ids = [int.from_bytes(raw[i : i + ID_BYTES]) for i in range(0, len(raw), ID_BYTES)]
            window._segments[seq] = _Segment(ids, int(chunk["newest_ms"]))
            window._seen.update(ids)
            window.stream_time_ms = max(window.stream_time_ms, int(chunk["newest_ms"]))
        if seqs:
            window._oldest, window._open = seqs[0], seqs[-1] + 1
        return window


def _chunk_name(seq: int) -> str:
    return f"ids-{seq:012d}"


def _chunk_seq(name: str) -> int:
    return int(name.removeprefix("ids-"))
