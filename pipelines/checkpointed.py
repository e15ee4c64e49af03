"""Keep in-memory engines durable in Quix state stores, once per checkpoint.

The engines (the analytics' :class:`~pipelines.analytics.local.PartitionAggregator`
and :class:`~pipelines.analytics.combine.GlobalCombiner`, the router's
:class:`~pipelines.dedupe.DedupeWindow`) are plain Python objects that update dicts
per event. Writing their state through Quix's ``State`` on every
event would cost more than the aggregation (each ``set`` serializes the value);
instead each engine reports the named JSON *chunks* it changed, and they are
written into the partition's store transaction when the checkpoint commits -
the same transaction that carries the changelog, the outputs and the input
offsets (exactly-once), so state and offsets never disagree after a crash.

How the hook is placed (checked against quixstreams 3.28,
``Checkpoint.commit``): the checkpoint flushes every registered sink *first*
(step 1), then prepares the state transactions and produces their changelogs
(step 2), then commits offsets. :class:`CheckpointHook` is a sink that receives
no records; its ``flush`` writes the engines' changed chunks in step 1, in time
for step 2. ``tests/integration/test_analytics_app.py`` restarts the app on a
fresh state directory and checks that it resumes with exact totals, so a
library change that breaks this order fails a test rather than losing counts.

Staleness: a partition can move to another instance and back. Each flush writes
a fresh random token next to the chunks; the first time an engine is used in a
checkpoint its token is compared with the store's, and on a mismatch the engine
is rebuilt from the store (which Quix has recovered from the changelog). An
engine used in a checkpoint that ended without committing (partitions lost, a
failed revoke) is rebuilt too: its memory is ahead of the store.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from quixstreams.sinks import BaseSink

if TYPE_CHECKING:
    from quixstreams.dataframe import StreamingDataFrame

log = logging.getLogger("pipelines.checkpointed")

PREFIX = b"engine"
"""State key prefix: the engine's state is per partition, not per message key."""
TOKEN_KEY = "__token__"
MANIFEST_KEY = "__chunks__"


class ChunkChanges:
    """Chunks touched or removed since the last :meth:`take`.

    A chunk removed and then touched again in the same checkpoint is an upsert,
    not a deletion.
    """

    __slots__ = ("deleted", "dirty")

    def __init__(self) -> None:
        self.dirty: set[str] = set()
        self.deleted: set[str] = set()

    def touch(self, name: str) -> None:
        self.dirty.add(name)

    def remove(self, name: str) -> None:
        self.dirty.discard(name)
        self.deleted.add(name)

    def take(self, render: Callable[[str], Any]) -> tuple[dict[str, Any], set[str]]:
        """``(name -> rendered value for changed chunks, removed names)``; then start over."""
        upserts = {name: render(name) for name in self.dirty}
        deleted = self.deleted - self.dirty
        self.dirty = set()
        self.deleted = set()
        return upserts, deleted


class ChunkedEngine(Protocol):
    """What an engine offers to be persisted as named JSON chunks."""

    def take_changes(self) -> tuple[dict[str, Any], set[str]]: ...

    def chunk_names(self) -> list[str]: ...


E = TypeVar("E", bound=ChunkedEngine)
Builder = Callable[[int, Mapping[str, Any]], E]
"""``(partition, chunks) -> engine``: a fresh engine when ``chunks`` is empty."""


class PartitionEngines(Generic[E]):
    """One engine per partition of a stream, kept in step with the stream's state store.

    Call :meth:`engine` from inside the stream's processing function (it may read
    the store) and :meth:`flush` from the checkpoint hook.
    """

    def __init__(self, name: str, sdf: StreamingDataFrame, build: Builder[E]) -> None:
        sdf.register_store()
        self.name = name
        self._ctx = sdf.processing_context
        self._stream_id = sdf.stream_id
        self._build = build
        self._engines: dict[int, E] = {}
        self._tokens: dict[int, str | None] = {}
        self._manifests: dict[int, frozenset[str]] = {}
        self._checkpoint: object = None
        self._flushed: object = None
        self._verified: set[int] = set()

    def engine(self, partition: int) -> E:
        """The partition's engine, rebuilt from the store if this copy may be stale."""
        checkpoint = self._ctx.checkpoint
        if checkpoint is not self._checkpoint:
            if self._flushed is not self._checkpoint:
                # The last checkpoint processed records but was never committed
                # (partitions lost, a failed revoke): those changes live in memory
                # only, and the token cannot tell. Rebuild from the store on next use.
                for used in self._verified:
                    self._engines.pop(used, None)
            self._checkpoint = checkpoint
            self._verified = set()
        if partition in self._verified:
            return self._engines[partition]
        tx = checkpoint.get_store_transaction(stream_id=self._stream_id, partition=partition)
        token = tx.get(TOKEN_KEY, prefix=PREFIX)
        if partition not in self._engines or self._tokens.get(partition) != token:
            names = tx.get(MANIFEST_KEY, prefix=PREFIX) or []
            chunks = {name: tx.get(name, prefix=PREFIX) for name in names}
            self._engines[partition] = self._build(partition, chunks)
            self._tokens[partition] = token
            self._manifests[partition] = frozenset(names)
            if chunks:
                log.info(
                    "%s: partition %d restored from %d state chunks",
                    self.name,
                    partition,
                    len(chunks),
                )
        self._verified.add(partition)
        return self._engines[partition]

    def engines(self) -> dict[int, E]:
        """The engines in memory now, by partition (for stats; do not mutate)."""
        return dict(self._engines)

    def flush(self) -> None:
        """Write every engine's changes into the committing checkpoint's transactions."""
        checkpoint = self._ctx.checkpoint
        if checkpoint is not self._checkpoint:
            return  # nothing was processed in this checkpoint
        self._flushed = checkpoint
        for partition in sorted(self._verified):
            engine = self._engines[partition]
            upserts, deleted = engine.take_changes()
            if not upserts and not deleted:
                continue
            tx = checkpoint.get_store_transaction(stream_id=self._stream_id, partition=partition)
            for name, value in upserts.items():
                tx.set(name, value, prefix=PREFIX)
            for name in deleted:
                tx.delete(name, prefix=PREFIX)
            names = frozenset(engine.chunk_names())
            if names != self._manifests.get(partition):
                tx.set(MANIFEST_KEY, sorted(names), prefix=PREFIX)
                self._manifests[partition] = names
            token = uuid.uuid4().hex
            tx.set(TOKEN_KEY, token, prefix=PREFIX)
            self._tokens[partition] = token


class CheckpointHook(BaseSink):
    """A record-less sink whose ``flush`` persists engines as a checkpoint commits.

    See the module docstring for why a sink: it is the one user extension point
    Quix Streams runs inside ``Checkpoint.commit`` before the state transactions
    are prepared.
    """

    def __init__(self, *engines: PartitionEngines[Any]) -> None:
        super().__init__()
        self._engines = engines

    def add(
        self,
        value: Any,
        key: Any,
        timestamp: int,
        headers: Any,
        topic: str,
        partition: int,
        offset: int,
    ) -> None:
        raise TypeError("CheckpointHook receives no records")

    def flush(self) -> None:
        for engines in self._engines:
            engines.flush()

    def attach(self, sdf: StreamingDataFrame) -> None:
        """Register with the app's sinks without adding a stream step.

        ``sdf.sink()`` would add a per-record callback this hook has no use for;
        registering with the sink manager (what ``sdf.sink`` does first) is enough
        for the checkpoint to flush it.
        """
        sdf.processing_context.sink_manager.register(self)

    def __repr__(self) -> str:
        return f"<CheckpointHook: {', '.join(e.name for e in self._engines)}>"
