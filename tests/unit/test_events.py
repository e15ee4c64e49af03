"""Event contracts: round-trip, every failure kind as data, schema export."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from shopstream.cli.main import cli
from shopstream.events import (
    CHANNEL_EVENT_TYPES,
    ERROR_KINDS,
    EVENT_CLASSES,
    EVENT_TYPES,
    DecodeError,
    InvoiceIssued,
    InvoiceIssuedPayload,
    OrderLine,
    OrderPlaced,
    OrderPlacedPayload,
    decode,
    decode_or_raise,
    derive,
    derived_event_id,
    encode,
    headers_for,
    json_schemas,
)

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 11, 28, 12, 30, 15, 123456, tzinfo=UTC)


def order(**overrides: object) -> OrderPlaced:
    fields: dict[str, object] = {
        "event_id": uuid.UUID(int=1),
        "occurred_at": T0,
        "channel": "web",
        "store_id": "DC-NORTH",
        "correlation_id": "O-1",
        "payload": OrderPlacedPayload(
            order_id="O-1",
            customer_id="C-1",
            lines=[
                OrderLine(sku="SKU-00001", qty=2, unit_price=Decimal("9.99")),
                OrderLine(sku="SKU-00042", qty=1, unit_price=Decimal("120.00")),
            ],
            payment_method="card",
        ),
    }
    return OrderPlaced(**(fields | overrides))  # type: ignore[arg-type]


def raw_order() -> dict[str, object]:
    return orjson.loads(encode(order()))


def test_round_trip_is_lossless() -> None:
    event = order()
    assert decode(encode(event)) == event


def test_every_event_type_has_a_class_and_a_distinct_name() -> None:
    assert set(EVENT_TYPES) == {cls.__name__ for cls in EVENT_CLASSES}
    channel_events = {"OrderPlaced", "ItemReturned", "StockQuestionAsked", "Restocked"}
    assert channel_events == CHANNEL_EVENT_TYPES


def test_event_time_is_utc_truncated_to_milliseconds() -> None:
    paris = timezone(timedelta(hours=1))
    event = order(occurred_at=T0.astimezone(paris))
    assert event.occurred_at == T0.replace(microsecond=123000)
    assert event.occurred_at.tzinfo == UTC
    assert orjson.loads(encode(event))["occurred_at"] == "2026-11-28T12:30:15.123Z"


@pytest.mark.parametrize("stamp", ["2026-11-28T12:30:15.123Z", "2026-11-28T13:30:15.123456+01:00"])
def test_decoded_event_time_is_utc_with_milliseconds(stamp: str) -> None:
    event = decode(orjson.dumps(raw_order() | {"occurred_at": stamp}))
    assert not isinstance(event, DecodeError)
    assert event.occurred_at == datetime(2026, 11, 28, 12, 30, 15, 123000, tzinfo=UTC)
    assert event.occurred_at.tzinfo is UTC


def test_naive_timestamps_are_rejected() -> None:
    raw = raw_order() | {"occurred_at": "2026-11-28T12:30:15"}
    result = decode(orjson.dumps(raw))
    assert isinstance(result, DecodeError)
    assert result.field == "occurred_at"


def test_money_is_exact_decimal_with_two_places() -> None:
    event = order()
    assert event.payload.total == Decimal("139.98")
    raw = raw_order()
    raw["payload"]["lines"][0]["unit_price"] = 9.999  # type: ignore[index]
    result = decode(orjson.dumps(raw))
    assert isinstance(result, DecodeError) and result.kind == "invalid_value"


@pytest.mark.parametrize(
    ("price", "valid"),
    [
        (0, True),
        ("999999999999.99", True),
        ("1.500", True),  # trailing zeros are still whole cents
        (-0.01, False),
        ("1000000000000", False),  # more than 14 digits with the cents
        ("0.001", False),
        ("NaN", False),
    ],
)
def test_money_bounds(price: object, valid: bool) -> None:
    raw = raw_order()
    raw["payload"]["lines"][0]["unit_price"] = price  # type: ignore[index]
    result = decode(orjson.dumps(raw))
    assert (not isinstance(result, DecodeError)) is valid, result
    if not valid:
        assert isinstance(result, DecodeError) and result.kind == "invalid_value"


def _mutate(path: list[object], value: object) -> bytes:
    raw = raw_order()
    target: object = raw
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    if value is _DELETE:
        del target[path[-1]]  # type: ignore[attr-defined]
    else:
        target[path[-1]] = value  # type: ignore[index]
    return orjson.dumps(raw)


_DELETE = object()


@pytest.mark.parametrize(
    ("raw", "kind", "field"),
    [
        pytest.param(b"x" * 70_000, "oversized", None, id="oversized"),
        pytest.param(b'{"event_type": "Order\xff"}', "bad_encoding", None, id="non-utf8"),
        pytest.param(b'{"event_id": "abc", "event_', "bad_json", None, id="truncated"),
        pytest.param(None, "bad_json", None, id="tombstone"),
        pytest.param(b"[1, 2]", "not_an_object", None, id="array"),
        pytest.param(b'{"event_type": "OrderShipped"}', "unknown_type", "event_type", id="unknown"),
        pytest.param(b'{"event_id": "x"}', "missing_field", "event_type", id="no-type"),
        pytest.param(_mutate(["store_id"], _DELETE), "missing_field", "store_id", id="missing"),
        pytest.param(
            _mutate(["payload", "lines", 0, "qty"], "two"), "wrong_type",
            "payload.lines.0.qty", id="wrong-type",
        ),
        pytest.param(
            _mutate(["payload", "lines", 0, "qty"], -3), "invalid_value",
            "payload.lines.0.qty", id="negative-qty",
        ),
        pytest.param(_mutate(["channel"], "fax"), "wrong_type", "channel", id="bad-enum"),
        pytest.param(_mutate(["payload", "coupon"], "X"), "unexpected_field", "payload.coupon",
                     id="extra-field"),
        pytest.param(_mutate(["payload", "lines"], []), "invalid_value", "payload.lines",
                     id="empty-basket"),
    ],
)  # fmt: skip
def test_every_failure_is_returned_as_data(raw: bytes | None, kind: str, field: str | None) -> None:
    result = decode(raw)
    assert isinstance(result, DecodeError)
    assert (result.kind, result.field) == (kind, field)
    assert result.message


def test_the_failure_kinds_are_all_reachable() -> None:
    # Guards the list above: a new kind needs a test case.
    assert set(ERROR_KINDS) == {
        "oversized", "bad_encoding", "bad_json", "not_an_object", "unknown_type",
        "missing_field", "unexpected_field", "wrong_type", "invalid_value",
    }  # fmt: skip


def test_decode_or_raise_raises_for_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown_type"):
        decode_or_raise(b'{"event_type": "Nope"}')


def test_derive_carries_the_flow_and_names_its_cause() -> None:
    cause = order()
    payload = InvoiceIssuedPayload(
        invoice_id="I-1", order_id="O-1", customer_id="C-1",
        net_amount=Decimal("116.65"), tax_amount=Decimal("23.33"), total_amount=Decimal("139.98"),
    )  # fmt: skip
    invoice = derive(cause, InvoiceIssued, payload)
    assert invoice.correlation_id == cause.correlation_id
    assert invoice.causation_id == str(cause.event_id)
    assert (invoice.channel, invoice.store_id) == (cause.channel, cause.store_id)
    assert invoice.occurred_at == cause.occurred_at
    # Deterministic: deriving again from the same cause gives the same id.
    assert derive(cause, InvoiceIssued, payload).event_id == invoice.event_id
    assert invoice.event_id == derived_event_id(cause.event_id, "InvoiceIssued")
    assert derived_event_id(cause.event_id, "InvoiceIssued", "b") != invoice.event_id


def test_headers_name_type_version_channel_and_flow() -> None:
    assert dict(headers_for(order())) == {
        "event_type": b"OrderPlaced",
        "schema_version": b"1",
        "channel": b"web",
        "correlation_id": b"O-1",
    }


def test_checked_in_schemas_match_the_models() -> None:
    result = CliRunner().invoke(
        cli, ["schemas", "export", "--check", "--out", str(REPO / "docs" / "schemas")]
    )
    assert result.exit_code == 0, result.output
    assert len(list((REPO / "docs" / "schemas").glob("*.json"))) == len(json_schemas())


def test_schema_export_writes_one_file_per_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["schemas", "export", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {p.stem: orjson.loads(p.read_bytes()) for p in tmp_path.glob("*.json")}
    assert set(written) == set(EVENT_TYPES)
    assert written["OrderPlaced"]["properties"]["event_type"]["const"] == "OrderPlaced"
