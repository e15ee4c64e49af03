"""Property-based fuzzing of the router (every lane): hypothesis draws channel payloads,
keys and headers, an independent client (plain librdkafka) sends them all into the ingress
topics, and the router - a real process - must dead-letter every malformed one with its
reason, route every good one once and byte for byte, drop every resend, never crash,
and keep ``in = routed + dead letters + duplicates``.

Hypothesis is the generator here, not the test runner: it draws
:attr:`Profile.fuzz_records` records (one example each, no shrinking, no example
database), the test sends them in one go and checks once - a broker round trip per
example would take minutes. A failure names the records it concerns (coordinates, bytes).

What each drawn record must become is decided when it is drawn (:class:`Fuzzed`):

* a good event of one of the four channel types (random ids, texts, quantities,
  prices, times within their documented ranges), under random headers and a random key:
  routed;
* a resend of a good one (same bytes, same partition): a duplicate;
* a malformed one of a known kind: bytes that are not UTF-8 (``bad_encoding``), text that
  is not JSON (``bad_json``), JSON that is not an object (``not_an_object``), a good event
  over 64 KiB (``oversized``), one with a required field taken out (``missing_field``), a
  field of another type (``wrong_type``), a value out of range (``invalid_value``), an
  extra field (``unexpected_field``), an unknown ``event_type`` (``unknown_type``), a
  valid service event (``unroutable``), or any JSON object (some validation kind).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipelines.router import router_topics
from shopstream.admin import create_topics
from shopstream.brokers import BrokerProcess
from shopstream.settings import Settings, load_settings
from shopstream.status import read_statuses
from shopstream.topics import DEAD_LETTERS, INGRESS_BY_CHANNEL, ROUTES, Namespace
from support.fault_suite import Profile, report
from support.fleet import read_all
from support.processes import AppProcess, ReadRecord

pytestmark = pytest.mark.timeout(900)

VALIDATION_KINDS = {"missing_field", "unexpected_field", "wrong_type", "invalid_value",
                    "unknown_type", "not_an_object"}  # fmt: skip
MAX_EVENT_BYTES = 64 * 1024
CHANNEL_TYPES = {
    "mobile": ("OrderPlaced", "ItemReturned", "StockQuestionAsked"),
    "pos": ("OrderPlaced", "ItemReturned", "StockQuestionAsked"),
    "web": ("OrderPlaced", "ItemReturned", "StockQuestionAsked"),
    "warehouse": ("Restocked",),
}

# --- strategies -------------------------------------------------------------------------

TEXT = st.characters(blacklist_categories=("Cs",))  # JSON has no lone surrogates
ids = st.text(TEXT, min_size=1, max_size=64)
skus = st.integers(0, 99_999).map(lambda n: f"SKU-{n:05d}")
qtys = st.integers(1, 10_000)
money = st.integers(0, 10**8).map(lambda cents: cents / 100)  # a float with 2 decimals
moments = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z")
json_leaves = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(TEXT, max_size=30)
)  # fmt: skip
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(TEXT, max_size=10),
                                                                inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
# Header names without NUL: the protocol allows one, but librdkafka (so confluent-kafka, Quix
# and the router) reads a header name as a C string and loses everything from its first NUL
# on, before the router sees the record (seen: a dead letter of '\x00\x0bÝ' named '').
HEADER_NAME = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
headers = st.lists(
    st.tuples(
        st.sampled_from(["event_type", "correlation_id", "error.kind", "error.topic", "app"])
        | st.text(HEADER_NAME, max_size=20),
        st.none() | st.binary(max_size=100),
    ),
    max_size=4,
)
keys = st.none() | st.binary(max_size=40)


@st.composite
def payloads(draw: st.DrawFn, event_type: str) -> dict[str, Any]:
    if event_type == "OrderPlaced":
        lines = draw(st.lists(st.fixed_dictionaries({"sku": skus, "qty": qtys,
                                                     "unit_price": money}),
                              min_size=1, max_size=5))  # fmt: skip
        return {"order_id": draw(ids), "customer_id": draw(ids), "lines": lines,
                "currency": draw(st.sampled_from(["EUR", "USD", "GBP"])),
                "payment_method": draw(st.sampled_from(["card", "cash", "wallet",
                                                        "gift_card"]))}  # fmt: skip
    if event_type == "ItemReturned":
        return {"return_id": draw(ids), "order_id": draw(ids), "customer_id": draw(ids),
                "sku": draw(skus), "qty": draw(qtys), "amount": draw(money),
                "reason": draw(st.sampled_from(["damaged", "wrong_size", "not_as_described",
                                                "changed_mind", "late_delivery"]))}  # fmt: skip
    if event_type == "StockQuestionAsked":
        return {"question_id": draw(ids), "customer_id": draw(ids), "sku": draw(skus),
                "store_id": draw(ids), "text": draw(st.text(TEXT, max_size=500))}  # fmt: skip
    return {"restock_id": draw(ids), "sku": draw(skus), "qty": draw(qtys),
            "reason": draw(st.sampled_from(["opening", "replenishment"]))}  # fmt: skip


@st.composite
def good_events(draw: st.DrawFn, channel: str) -> dict[str, Any]:
    event_type = draw(st.sampled_from(CHANNEL_TYPES[channel]))
    event: dict[str, Any] = {
        "event_id": "",  # set when drawn (unique: hypothesis repeats values)
        "event_type": event_type,
        "occurred_at": draw(moments),
        "channel": "system" if channel == "warehouse" else channel,
        "store_id": draw(ids),
        "correlation_id": draw(ids),
        "payload": draw(payloads(event_type)),
    }
    if draw(st.booleans()):
        event["causation_id"] = draw(st.text(TEXT, max_size=64))
    if draw(st.booleans()):
        event["schema_version"] = 1
    return event


REQUIRED_ENVELOPE = ("event_id", "event_type", "occurred_at", "channel", "store_id",
                     "correlation_id", "payload")  # fmt: skip
INVALID_VALUES: dict[str, Any] = {
    "qty": st.one_of(st.integers(max_value=0), st.integers(min_value=10_001)),
    "sku": st.text(TEXT, max_size=12).filter(lambda s: not re.fullmatch(r"SKU-[0-9]{5}", s)),
    "unit_price": st.integers(-(10**6), -1).map(lambda c: c / 100),
    "amount": st.integers(-(10**6), -1).map(lambda c: c / 100),
    "currency": st.text(TEXT, max_size=5).filter(lambda s: not re.fullmatch(r"[A-Z]{3}", s)),
    "store_id": st.text(TEXT, min_size=65, max_size=80),
    "order_id": st.just(""),
}


def _paths(event: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Every field path of ``event`` (dicts and lists inside it included)."""
    out: list[tuple[str | int, ...]] = []

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for k, v in items:
            out.append((*path, k))
            if isinstance(v, dict | list):
                walk(v, (*path, k))

    walk(event, ())
    return out


def _get(node: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@dataclass
class Fuzzed:
    """One drawn record and what the router must make of it."""

    channel: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]
    expect: str
    """``routed``, ``duplicate`` or a dead-letter kind (``validation``: any of
    :data:`VALIDATION_KINDS`)."""
    family: str
    event: dict[str, Any] | None = None
    resend: bool = False
    where: tuple[str, int, int] | None = field(default=None, compare=False)


@st.composite
def fuzzed(draw: st.DrawFn) -> Fuzzed:
    channel = draw(st.sampled_from(sorted(CHANNEL_TYPES)))
    partition, key, hdrs = draw(st.integers(0, 2)), draw(keys), draw(headers)
    family = draw(st.sampled_from([
        "good", "good", "good", "not_utf8", "not_json", "not_object", "oversized", "missing",
        "wrong_type", "invalid_value", "extra_field", "unknown_type", "unroutable", "object",
    ]))  # fmt: skip

    def record(value: bytes | None, expect: str, event: dict[str, Any] | None = None) -> Fuzzed:
        return Fuzzed(channel, partition, key, value, hdrs, expect, family, event,
                      resend=family == "good" and draw(st.booleans()))  # fmt: skip

    def dumps(doc: Any) -> bytes:
        return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()

    if family == "not_utf8":
        raw = draw(st.binary(min_size=1, max_size=300).filter(_not_utf8))
        return record(raw, "bad_encoding")
    if family == "not_json":
        text = draw(st.text(TEXT, max_size=200).filter(_not_json) | st.just(""))
        return record(text.encode(), "bad_json")
    if family == "not_object":
        doc = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return record(dumps(doc), "not_an_object")
    if family == "object":
        return record(dumps(draw(st.dictionaries(st.text(TEXT, max_size=12), json_values,
                                                 max_size=6))), "validation")  # fmt: skip
    if family == "unroutable":
        event = draw(good_events("web"))
        event |= {"event_type": "InvoiceIssued", "payload": {
            "invoice_id": draw(ids), "order_id": draw(ids), "customer_id": draw(ids),
            "net_amount": 10.0, "tax_amount": 2.0, "total_amount": 12.0}}  # fmt: skip
        return record(dumps(event), "unroutable", event)
    event = draw(good_events(channel))
    if family == "good":
        return record(None, "routed", event)  # bytes once its event id is set
    if family == "oversized":
        event["padding"] = "x" * (MAX_EVENT_BYTES + draw(st.integers(1, 4096)))
        return record(dumps(event), "oversized", event)
    if family == "missing":
        payload_fields = sorted(k for k in event["payload"] if k not in ("currency", "reason"))
        path = draw(st.sampled_from([(f,) for f in REQUIRED_ENVELOPE]
                                    + [("payload", f) for f in payload_fields]))  # fmt: skip
        del _get(event, path[:-1])[path[-1]]
        return record(dumps(event), "missing_field", event)
    if family == "wrong_type":
        path = draw(st.sampled_from([p for p in _paths(event) if p != ("event_type",)]))
        was = _get(event, path)
        wrong = draw(st.sampled_from([[], {}] if not isinstance(was, list | dict) else
                                     ([{}] if isinstance(was, list) else [[]])))  # fmt: skip
        _get(event, path[:-1])[path[-1]] = wrong
        return record(dumps(event), "wrong_type", event)
    if family == "invalid_value":
        options = [p for p in _paths(event) if p[-1] in INVALID_VALUES and p[0] != "causation_id"]
        path = draw(st.sampled_from(options))
        _get(event, path[:-1])[path[-1]] = draw(INVALID_VALUES[str(path[-1])])
        return record(dumps(event), "invalid_value", event)
    if family == "extra_field":
        where = draw(st.sampled_from([(), ("payload",)]))
        name = draw(st.text(TEXT, min_size=1, max_size=12).filter(
            lambda n, w=where: n not in _get(event, w)))  # fmt: skip
        _get(event, where)[name] = draw(json_values)
        return record(dumps(event), "unexpected_field", event)
    known = {"OrderPlaced", "ItemReturned", "StockQuestionAsked", "Restocked", "StockReserved",
             "StockRejected", "StockReleased", "StockReplenished", "InvoiceIssued",
             "RefundIssued", "QuestionAnswered", "NotificationSent", "Alert"}  # fmt: skip
    event["event_type"] = draw(st.text(TEXT, max_size=20).filter(lambda t: t not in known))
    return record(dumps(event), "unknown_type", event)


def _not_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _not_json(text: str) -> bool:
    if any(word in text for word in ("NaN", "Infinity")):
        return False  # parsers differ on these; not what this family is about
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def draw_batch(n: int) -> list[Fuzzed]:
    """``n`` records from :func:`fuzzed`, good events numbered, resends appended."""
    drawn: list[Fuzzed] = []

    @hypothesis_settings(
        max_examples=n, deadline=None, database=None, phases=(Phase.generate,),
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(fuzzed())
    def collect(item: Fuzzed) -> None:
        drawn.append(item)

    collect()
    batch: list[Fuzzed] = []
    resends: list[Fuzzed] = []
    for i, item in enumerate(drawn):
        if item.expect == "routed":
            assert item.event is not None
            item.event["event_id"] = str(uuid.UUID(int=i + 1, version=4))
            item.value = json.dumps(item.event).encode()
            if item.resend:
                resends.append(Fuzzed(item.channel, item.partition, item.key, item.value,
                                      item.headers, "duplicate", "resend"))  # fmt: skip
        elif item.event is not None and "event_id" in item.event and item.value is not None:
            # Malformed ones get an id of their own too (a dead letter leaves no trace, but
            # an id also routed would make the test's own bookkeeping ambiguous).
            item.value = item.value.replace(b'"event_id": ""', _id_field(i).encode(), 1)
        batch.append(item)
    return batch + resends


def _id_field(i: int) -> str:
    return f'"event_id": "{uuid.UUID(int=10**9 + i, version=4)}"'


# --- the run ---------------------------------------------------------------------------


@dataclass
class FuzzRun:
    lane: str
    namespace: Namespace
    sent: list[Fuzzed]
    routed: list[ReadRecord]
    letters: list[ReadRecord]
    status: Any
    code: int
    log: str
    seconds: float


@pytest.fixture(scope="module")
def fuzz(
    broker: BrokerProcess, tmp_path_factory: pytest.TempPathFactory, faults_profile: Profile
) -> Iterator[FuzzRun]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    settings = load_settings(broker_address=broker.address, data_dir=tmp / "data")
    namespace = Namespace(uuid.uuid4().hex[:8])
    create_topics(settings, namespace.topics(router_topics()))
    batch = draw_batch(faults_profile.fuzz_records)
    router = AppProcess("router", namespace, settings, tmp).start()
    began = time.monotonic()
    try:
        _send(settings, namespace, batch)
        outputs = [namespace.topic(spec).name for spec in {*ROUTES.values(), DEAD_LETTERS}]
        _wait_for(settings, namespace, len(batch), router)
        assert router.running, router.log_tail(40)
        seconds = time.monotonic() - began
    finally:
        code = router.stop()
    status = read_statuses(Path(settings.data_dir) / "run")[namespace.app("router")]
    records = read_all(settings, outputs, isolation="read_committed")
    letters_topic = namespace.topic(DEAD_LETTERS).name
    yield FuzzRun(
        broker.kind, namespace, batch,
        [r for r in records if r.topic != letters_topic],
        [r for r in records if r.topic == letters_topic],
        status, code, router.log_path.read_text(errors="replace"), seconds,
    )  # fmt: skip


def _send(settings: Settings, namespace: Namespace, batch: list[Fuzzed]) -> None:
    """Send ``batch`` in order with a plain librdkafka producer (not the project's client
    factory; kafka-python refuses null header values, which Kafka allows), noting where
    each record landed."""
    sender = Producer({"bootstrap.servers": settings.broker_address, "acks": "all",
                       "enable.idempotence": True, "message.max.bytes": 2 * 1024 * 1024,
                       "linger.ms": 5})  # fmt: skip
    failed: list[str] = []

    def landed(item: Fuzzed) -> Callable[[Any, Any], None]:
        def note(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(f"{err} for {_show(item)}")
            else:
                item.where = (msg.topic(), msg.partition(), msg.offset())

        return note

    for item in batch:
        sender.produce(
            namespace.topic(INGRESS_BY_CHANNEL[item.channel]).name,
            value=item.value, key=item.key, partition=item.partition,
            headers=list(item.headers), on_delivery=landed(item),
        )  # fmt: skip
        sender.poll(0)
    assert sender.flush(60) == 0, "records still unsent after 60 s"
    assert not failed, failed[:5]


def _wait_for(settings: Settings, namespace: Namespace, n: int, router: AppProcess) -> None:
    """Until the router's status says it consumed ``n`` records (and a second more)."""
    deadline = time.monotonic() + 300
    name = namespace.app("router")
    while time.monotonic() < deadline:
        status = read_statuses(Path(settings.data_dir) / "run").get(name)
        if status is not None and status.consumed >= n:
            time.sleep(2.5)  # the next checkpoint commits, the next status is written
            return
        assert router.running, router.log_tail(40)
        time.sleep(0.5)
    raise AssertionError(f"the router did not consume {n} records in time\n{router.log_tail()}")


def _header(record: ReadRecord, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return None


def _show(item: Fuzzed) -> str:
    return f"{item.family} at {item.where}: {(item.value or b'')[:160]!r}"


# --- the checks ------------------------------------------------------------------------


def test_the_router_never_crashes_and_its_counts_add_up(fuzz: FuzzRun) -> None:
    expect = Counter(
        "routed" if i.expect == "routed" else "duplicate" if i.expect == "duplicate" else "dead"
        for i in fuzz.sent
    )
    families = Counter(i.family for i in fuzz.sent)
    report(
        "fuzz",
        f"{fuzz.lane} lane: {len(fuzz.sent)} records drawn by hypothesis ({dict(families)}), "
        f"expected routed {expect['routed']}, dead-lettered {expect['dead']}, duplicates "
        f"{expect['duplicate']}; router status in={fuzz.status.consumed} "
        f"out={fuzz.status.produced} dead-lettered={fuzz.status.dead_lettered} "
        f"errors={fuzz.status.errors}; all accounted for in {fuzz.seconds:.0f}s",
    )
    assert fuzz.code == 0, fuzz.log[-3000:]
    assert "Traceback" not in fuzz.log, fuzz.log[-3000:]
    line = re.findall(
        r"stopped; in=(\d+) routed=(\d+) dead-lettered=(\d+) duplicates=(\d+)", fuzz.log
    )
    assert line, fuzz.log[-2000:]
    consumed, routed, dead, duplicates = map(int, line[-1])
    assert consumed == routed + dead + duplicates == len(fuzz.sent)
    assert (routed, dead, duplicates) == (expect["routed"], expect["dead"], expect["duplicate"])
    status = fuzz.status
    assert (status.consumed, status.produced) == (len(fuzz.sent), routed + dead), status
    assert (status.dead_lettered, status.errors) == (dead, 0), status


def test_every_good_event_is_routed_once_byte_for_byte(fuzz: FuzzRun) -> None:
    good = {i.value: i for i in fuzz.sent if i.expect == "routed"}
    routed = Counter(r.value for r in fuzz.routed)
    missing = [_show(i) for v, i in good.items() if v not in routed]
    assert missing == [], "\n".join(missing[:10])
    twice = [v for v, n in routed.items() if n > 1]
    strangers = [v for v in routed if v not in good]
    assert twice == [] and strangers == [], (twice[:3], strangers[:3])
    for record in fuzz.routed:
        event = good[record.value].event
        assert event is not None
        route = fuzz.namespace.topic(ROUTES[event["event_type"]]).name
        assert (record.topic, record.key) == (route, event["store_id"].encode())
        assert _header(record, "event_type") == event["event_type"]


def test_every_malformed_record_is_a_dead_letter_with_its_reason(fuzz: FuzzRun) -> None:
    letters: dict[tuple[str, int, int], list[ReadRecord]] = {}
    for letter in fuzz.letters:
        where = (
            _header(letter, "error.topic") or "?",
            int(_header(letter, "error.partition") or -1),
            int(_header(letter, "error.offset") or -1),
        )
        letters.setdefault(where, []).append(letter)
    bad = [i for i in fuzz.sent if i.expect not in ("routed", "duplicate")]
    problems: list[str] = []
    for item in bad:
        found = letters.get(item.where or ("", 0, 0), [])
        if len(found) != 1:
            problems.append(f"{len(found)} dead letters for {_show(item)}")
            continue
        [letter] = found
        kind, message = _header(letter, "error.kind"), _header(letter, "error.message")
        allowed = VALIDATION_KINDS if item.expect == "validation" else {item.expect}
        if kind not in allowed or not message:
            problems.append(f"{kind} ({message}) for {_show(item)}, expected {allowed}")
        # The record whole: key, value, and its own headers except any stale error.*.
        own = [(k, v or b"") for k, v in item.headers if not k.startswith("error.")]
        kept = [(k, v or b"") for k, v in letter.headers if not k.startswith("error.")]
        if (letter.key, letter.value, kept) != (item.key, item.value, own):
            problems.append(f"not kept whole: {_show(item)}")
        if _header(letter, "error.app") != fuzz.namespace.app("router"):
            problems.append(f"error.app {_header(letter, 'error.app')} for {_show(item)}")
    assert len(fuzz.letters) == len(bad), f"{len(fuzz.letters)} dead letters for {len(bad)}"
    assert problems == [], "\n".join(problems[:15]) + f"\n({len(problems)} in all)"
