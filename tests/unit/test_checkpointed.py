"""In-memory engines made durable per checkpoint: restore, staleness, unflushed work.

Quix's checkpoint and store transactions are faked here (dicts); the real ones are
exercised by the analytics and router integration tests, which restart apps on a
fresh state directory and check exact results.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.checkpointed import CheckpointHook, ChunkChanges, PartitionEngines


class Counter:
    """A chunked engine: one counter per name."""

    def __init__(self, chunks: Mapping[str, Any]) -> None:
        self.counts: dict[str, int] = dict(chunks)
        self._changes = ChunkChanges()

    def bump(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1
        self._changes.touch(name)

    def take_changes(self) -> tuple[dict[str, Any], set[str]]:
        return self._changes.take(self.counts.__getitem__)

    def chunk_names(self) -> list[str]:
        return list(self.counts)


@dataclass
class FakeTx:
    data: dict[tuple[bytes, str], Any]

    def get(self, key: str, prefix: bytes) -> Any:
        return self.data.get((prefix, key))

    def set(self, key: str, value: Any, prefix: bytes) -> None:
        self.data[(prefix, key)] = value

    def delete(self, key: str, prefix: bytes) -> None:
        self.data.pop((prefix, key), None)


@dataclass
class FakeCheckpoint:
    """Writes land in a staging copy that only :meth:`commit` makes durable."""

    store: dict[int, dict[tuple[bytes, str], Any]]
    staged: dict[int, FakeTx] = field(default_factory=dict)

    def get_store_transaction(self, stream_id: str, partition: int) -> FakeTx:
        if partition not in self.staged:
            self.staged[partition] = FakeTx(dict(self.store.setdefault(partition, {})))
        return self.staged[partition]

    def commit(self) -> None:
        for partition, tx in self.staged.items():
            self.store[partition] = tx.data


@dataclass
class FakeContext:
    checkpoint: FakeCheckpoint


class FakeFrame:
    stream_id = "stream"

    def __init__(self, context: FakeContext) -> None:
        self.processing_context = context

    def register_store(self) -> None:
        pass


def setup() -> tuple[FakeContext, PartitionEngines[Counter], dict[int, Any], list[int]]:
    store: dict[int, Any] = {}
    context = FakeContext(FakeCheckpoint(store))
    builds: list[int] = []

    def build(partition: int, chunks: Mapping[str, Any]) -> Counter:
        builds.append(partition)
        return Counter(chunks)

    engines = PartitionEngines("test", FakeFrame(context), build)  # type: ignore[arg-type]
    return context, engines, store, builds


def commit(context: FakeContext, engines: PartitionEngines[Counter]) -> None:
    """What Quix does: flush the sinks (our hook), commit, start a new checkpoint."""
    CheckpointHook(engines).flush()
    context.checkpoint.commit()
    context.checkpoint = FakeCheckpoint(context.checkpoint.store)


def test_an_engine_survives_a_commit_and_is_not_rebuilt() -> None:
    context, engines, _, builds = setup()
    engines.engine(0).bump("a")
    commit(context, engines)
    engines.engine(0).bump("a")
    assert engines.engine(0).counts == {"a": 2}
    assert builds == [0]


def test_a_fresh_instance_restores_what_was_committed() -> None:
    context, engines, store, _ = setup()
    engines.engine(0).bump("a")
    engines.engine(1).bump("b")
    commit(context, engines)
    _, again, _, _ = setup()
    again._ctx = FakeContext(FakeCheckpoint(store))  # same store, new process
    assert again.engine(0).counts == {"a": 1}
    assert again.engine(1).counts == {"b": 1}


def test_work_of_a_checkpoint_that_never_committed_is_thrown_away() -> None:
    # Partitions lost, or a failed revoke: Quix starts a new checkpoint without
    # flushing the sinks; the store is as of the last commit, and so must the engine be.
    context, engines, _, builds = setup()
    engines.engine(0).bump("a")
    commit(context, engines)
    engines.engine(0).bump("a")  # processed, never committed
    context.checkpoint = FakeCheckpoint(context.checkpoint.store)
    assert engines.engine(0).counts == {"a": 1}
    assert builds == [0, 0]


def test_a_store_changed_elsewhere_is_detected_by_its_token() -> None:
    context, engines, store, builds = setup()
    engines.engine(0).bump("a")
    commit(context, engines)
    # Another instance owned partition 0 for a while and committed more.
    _, other, _, _ = setup()
    other._ctx = FakeContext(FakeCheckpoint(store))
    other.engine(0).bump("a")
    commit(other._ctx, other)  # type: ignore[arg-type]
    context.checkpoint = FakeCheckpoint(store)
    assert engines.engine(0).counts == {"a": 2}
    assert builds == [0, 0]
