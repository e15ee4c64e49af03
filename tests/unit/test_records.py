"""The non-event records the read side consumes follow their published contracts."""

from __future__ import annotations

import json

import orjson
import pytest
from pydantic import ValidationError

from pipelines import deadletter
from pipelines.services import stock
from pipelines.services.apps import level_records
from pipelines.services.state import MemoryState
from shopstream.records import DeadLetterHeaders, StockLevel, record_schemas
from support import service_samples as s


def test_stock_level_records_follow_their_contract() -> None:
    state = MemoryState()
    for event in (s.restock("r1", "SKU-00001", 5), s.restock("r2", "SKU-00002", 1)):
        stock.handle(event, state)
    order = s.order("o1", [("SKU-00001", 2, "1.00"), ("SKU-00002", 1, "1.00")])
    reserved, *_alerts = stock.handle(order, state)  # SKU-00002 runs out: an alert too
    records = list(level_records(reserved))
    assert len(records) == 2
    for _, key, value in records:
        level = StockLevel.model_validate(orjson.loads(value))
        assert key == f"{level.store_id}/{level.sku}".encode()


def test_dead_letter_headers_follow_their_contract_whole_and_cut_to_fit() -> None:
    source = deadletter.Source("ingress.web", 2, 41)
    failure = deadletter.Failure("wrong_type", "not a number", "payload.qty")
    headers = deadletter.dead_letter_headers([("channel", b"web")], failure, source, "router")
    whole = DeadLetterHeaders.of(headers)
    assert (whole.kind, whole.field, whole.offset, whole.truncated) == (
        "wrong_type", "payload.qty", 41, None,
    )  # fmt: skip
    _, cut = deadletter.fit(b"k", b"x" * 5000, headers, limit=2000)
    truncated = DeadLetterHeaders.of(cut)
    assert truncated.truncated == "true" and truncated.original_size == 5000
    with pytest.raises(ValidationError):
        DeadLetterHeaders.of([("channel", b"web")])  # not a dead letter


def test_every_contract_is_published_as_json_schema() -> None:
    schemas = record_schemas()
    assert {"ChannelSales", "StockLevel", "DeadLetterHeaders", "LateEvent"} <= set(schemas)
    for schema in schemas.values():
        json.dumps(schema)  # serialisable as written to docs/schemas/records/
