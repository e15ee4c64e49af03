"""Private Quix Streams behaviour shopstream relies on: these fail if a release moves it.

quixstreams is pinned to the tested minor version (pyproject.toml); before lifting the
pin, these tests say whether the private behaviours still hold (the third, the
time-alignment flag, needs a broker: tests/integration/test_quix_on_broker.py):

* ``Checkpoint.commit`` flushes sinks before it prepares the state transactions, which
  is when :class:`pipelines.checkpointed.CheckpointHook` writes the engines' state.
"""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from quixstreams.checkpointing.checkpoint import Checkpoint


class _Stop(Exception):
    """Raised by the fake producer's flush: the checkpoint got past step 2."""


def test_checkpoint_flushes_sinks_before_preparing_state_transactions() -> None:
    calls: list[str] = []
    sink = MagicMock()
    sink.flush.side_effect = lambda *a, **k: calls.append("sink.flush")
    producer = MagicMock()
    producer.flush.side_effect = _Stop()
    registry = MagicMock()
    registry.get_topics_for_stream_id.return_value = ["t"]
    checkpoint = Checkpoint(
        commit_interval=1.0,
        producer=producer,
        consumer=MagicMock(),
        state_manager=MagicMock(),
        sink_manager=MagicMock(sinks=[sink]),
        dataframe_registry=registry,
        exactly_once=False,
    )
    transaction = MagicMock(failed=False)
    transaction.prepare.side_effect = lambda *a, **k: calls.append("transaction.prepare")
    checkpoint._store_transactions[("stream", 0, "default")] = transaction
    with pytest.raises(_Stop):
        checkpoint.commit()
    assert calls == ["sink.flush", "transaction.prepare"]
