"""Each fault flag produces exactly the faults it claims, and nothing else.

The router's tests use :func:`producers.faults.malform` and
:data:`producers.faults.EXPECTED_ERROR`; this file is their guarantee.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from functools import cache
from itertools import islice
from typing import Any

import orjson
import pytest

from producers.faults import (
    EXPECTED_ERROR,
    MALFORMED_KINDS,
    FaultConfig,
    NotApplicable,
    applicable_kinds,
    inject_faults,
    malform,
)
from producers.record import Record
from producers.simulator import ShopSimulator, SimConfig
from shopstream.events import ERROR_KINDS, MAX_EVENT_BYTES, DecodeError, decode

START = 1_741_341_600_000  # 2025-03-07T10:00:00Z
N = 20_000


@cache
def valid_stream(seed: int = 4) -> list[Record]:
    """Built once per seed and shared: records are never mutated, faults make new ones."""
    sim = ShopSimulator(SimConfig(start_ms=START, seed=seed))
    return [*islice(sim.opening(), 50), *islice(sim.records(), N)]


@pytest.fixture(scope="module")
def samples() -> dict[str, dict[str, Any]]:
    """One wire dict per channel event type."""
    out: dict[str, dict[str, Any]] = {}
    for rec in valid_stream():
        out.setdefault(rec.event_type, orjson.loads(rec.value))
    assert set(out) == {"OrderPlaced", "ItemReturned", "StockQuestionAsked", "Restocked"}
    return out


def test_every_kind_maps_to_a_decode_error_kind() -> None:
    assert set(EXPECTED_ERROR) == set(MALFORMED_KINDS)
    assert set(EXPECTED_ERROR.values()) <= set(ERROR_KINDS)
    assert len(set(EXPECTED_ERROR.values())) == len(MALFORMED_KINDS), "one error kind each"


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
def test_malform_decodes_to_exactly_the_claimed_kind(
    kind: str, samples: dict[str, dict[str, Any]]
) -> None:
    """Every variant (100 RNG seeds) of every event type gives the expected error kind."""
    for event_type, event in samples.items():
        if kind not in applicable_kinds(event_type):
            continue
        for seed in range(100):
            raw = malform(event, kind, random.Random(seed))  # type: ignore[arg-type]
            result = decode(raw)
            assert isinstance(result, DecodeError), (event_type, raw[:200])
            assert result.kind == EXPECTED_ERROR[kind], (event_type, seed, result)  # type: ignore[index]


def test_malform_leaves_its_input_alone_and_accepts_models(
    samples: dict[str, dict[str, Any]],
) -> None:
    order = samples["OrderPlaced"]
    before = orjson.dumps(order)
    model = decode(before)
    assert not isinstance(model, DecodeError)
    for kind in MALFORMED_KINDS:
        malform(order, kind, random.Random(1))
        result = decode(malform(model, kind, random.Random(1)))
        assert isinstance(result, DecodeError) and result.kind == EXPECTED_ERROR[kind]
    assert orjson.dumps(order) == before


def test_malformed_details(samples: dict[str, dict[str, Any]]) -> None:
    assert len(malform(samples["OrderPlaced"], "oversized")) > MAX_EVENT_BYTES
    raw = malform(samples["OrderPlaced"], "non_utf8")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    orjson.loads(raw.decode("latin-1"))  # otherwise well-formed JSON
    with pytest.raises(NotApplicable):
        malform(samples["StockQuestionAsked"], "negative_quantity")
    with pytest.raises(ValueError):
        malform(samples["OrderPlaced"], "gibberish")  # type: ignore[arg-type]


def test_zero_ratios_pass_records_through_untouched() -> None:
    records = valid_stream()[:1000]
    assert list(inject_faults(records, FaultConfig(), seed=1)) == records


def test_fault_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        FaultConfig(invalid_ratio=1.5)
    with pytest.raises(ValueError):
        FaultConfig(late_ratio=-0.1)
    with pytest.raises(ValueError):
        FaultConfig(kinds=("nonsense",))  # type: ignore[arg-type]


def _within(count: int, n: int, p: float) -> bool:
    """``count`` within 5 binomial standard deviations of ``n * p``."""
    return abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)) + 1


def test_fault_flags_add_exactly_the_claimed_faults() -> None:
    clean = valid_stream()
    config = FaultConfig(invalid_ratio=0.05, duplicate_ratio=0.04, late_ratio=0.03)
    out = list(inject_faults(clean, config, seed=9))
    tags = Counter(r.fault for r in out)

    # The valid events are the same events, in the same order: faults are added, and
    # "late" changes only the event time.
    firsts = [r for r in out if r.fault in (None, "late")]
    assert len(firsts) == len(clean)
    for got, want in zip(firsts, clean, strict=True):
        if got.fault is None:
            assert got == want
            continue
        g, w = orjson.loads(got.value), orjson.loads(want.value)
        shift = want.timestamp_ms - got.timestamp_ms
        assert 60_000 <= shift <= 600_000, "late by 1-10 minutes"
        assert g.pop("occurred_at") < w.pop("occurred_at") and g == w
        assert (got.key, got.headers, got.event_type) == (want.key, want.headers, want.event_type)
        assert not isinstance(decode(got.value), DecodeError)

    # Each duplicate repeats, byte for byte, a record sent at most 21 records earlier.
    for i, rec in enumerate(out):
        if rec.fault == "duplicate":
            window = [r for r in out[max(0, i - 60) : i] if r.fault in (None, "late")]
            same = [r for r in window if r.value == rec.value]
            assert len(same) == 1
            assert (same[0].key, same[0].headers) == (rec.key, rec.headers)
            assert rec.timestamp_ms == same[0].timestamp_ms

    # Each malformed record decodes to the error kind its tag claims, never to an event.
    malformed = [r for r in out if r.fault in MALFORMED_KINDS]
    for rec in malformed:
        result = decode(rec.value)
        assert isinstance(result, DecodeError)
        assert result.kind == EXPECTED_ERROR[rec.fault]  # type: ignore[index]
    assert set(Counter(r.fault for r in malformed)) == set(MALFORMED_KINDS)

    # And the amounts match the ratios (per valid event).
    n = len(clean)
    assert _within(tags["duplicate"], n, 0.04)
    assert _within(tags["late"], n, 0.03)
    assert _within(len(malformed), n, 0.05)
    assert set(tags) == {None, "late", "duplicate", *MALFORMED_KINDS}


def test_only_the_chosen_kinds_are_produced() -> None:
    config = FaultConfig(invalid_ratio=0.2, kinds=("negative_quantity", "oversized"))
    out = list(inject_faults(valid_stream()[:3000], config, seed=2))
    kinds = Counter(r.fault for r in out if r.fault)
    assert set(kinds) == {"negative_quantity", "oversized"}


def test_malformed_copies_get_a_fresh_event_id() -> None:
    config = FaultConfig(invalid_ratio=1.0, kinds=("wrong_type",))
    out = list(inject_faults(valid_stream()[:500], config, seed=3))
    valid_ids = {orjson.loads(r.value)["event_id"] for r in out if r.fault is None}
    for rec in out:
        if rec.fault == "wrong_type":
            event_id = orjson.loads(rec.value)["event_id"]
            assert event_id not in valid_ids


def test_faults_are_deterministic() -> None:
    config = FaultConfig(invalid_ratio=0.1, duplicate_ratio=0.1, late_ratio=0.1)
    a = list(inject_faults(valid_stream()[:5000], config, seed=5))
    b = list(inject_faults(valid_stream()[:5000], config, seed=5))
    c = list(inject_faults(valid_stream()[:5000], config, seed=6))
    assert a == b
    assert a != c
