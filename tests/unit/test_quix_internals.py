"""Private Quix Streams behaviour shopstream relies on: these fail if a release moves it.

quixstreams is pinned to the tested minor version (pyproject.toml); before lifting the
pin, these tests say whether the private behaviours still hold (the third, the
time-alignment flag, needs a broker: tests/integration/test_quix_on_broker.py):

* ``Checkpoint.commit`` flushes sinks before it prepares the state transactions, which
  is when :class:`pipelines.checkpointed.CheckpointHook` writes the engines' state.
* An ``Application``'s librdkafka producer is held by one attribute only
  (``app._producer._producer._inner_producer``), which
  :func:`pipelines.runtime.quix.destroy_producer` replaces to destroy it.
"""

from __future__ import annotations

import sys
from unittest.mock import MagicMock

import pytest
from quixstreams import Application
from quixstreams.checkpointing.checkpoint import Checkpoint

from pipelines.runtime.quix import destroy_producer


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


def test_destroying_an_apps_producer_drops_the_last_reference_and_makes_no_new_one() -> None:
    # At-least-once: no transactional.id, so no broker is needed to make the producer.
    app = Application(
        broker_address="127.0.0.1:9", consumer_group="g", processing_guarantee="at-least-once"
    )
    wrapper = app._producer._producer
    inner = wrapper._producer  # made on first use
    assert wrapper._inner_producer is inner
    destroy_producer(app)
    # Nothing but this test holds it now (getrefcount counts its own argument too).
    assert sys.getrefcount(inner) == 2
    with pytest.raises(RuntimeError, match="destroyed"):
        wrapper._producer.produce("t", b"v")
    destroy_producer(app)  # twice: nothing left to do
